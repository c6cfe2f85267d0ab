"""Importing a dataset through the browser's uploader: a ZIP with the table and its images."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from annotations.models import Dataset
from annotations.users import create_user
from tests.conftest import make_image

pytestmark = pytest.mark.e2e

PASSWORD = "a long test password"


@pytest.fixture
def e2e_setup(e2e_db: sessionmaker[Session]) -> None:
    create_user(e2e_db, "rita", PASSWORD, "researcher")


def test_a_zip_uploaded_on_a_fresh_instance_is_previewed_and_imported(
    streamlit_server: str, page: Page, tmp_path: Path, e2e_db: sessionmaker[Session],
    sign_in: Callable[[Page, str, str, str], None],
) -> None:
    jpeg = make_image(tmp_path / "a.jpg").read_bytes()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("set/table.csv", "id,image,title,summary,label\n"
                                         "a,images/a.jpg,A title,A summary,1\n"
                                         "b,images/b.jpg,B title,B summary,0\n")
        zipped.writestr("set/images/a.jpg", jpeg)
        zipped.writestr("set/images/b.jpg", jpeg)
    sign_in(page, streamlit_server, "rita", PASSWORD)
    page.get_by_test_id("stSidebar").get_by_role("link", name="Import").click()
    expect(page.get_by_role("heading", name="Import a dataset")).to_be_visible()
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(
        files=[{"name": "uploaded.zip", "mimeType": "application/zip", "buffer": archive.getvalue()}])
    expect(page.get_by_test_id("stMetric").filter(has_text="Local images")).to_contain_text("2")
    page.get_by_label("Dataset name").fill("uploaded")
    page.get_by_label("Dataset name").press("Enter")
    page.get_by_role("button", name="Import", exact=True).click()
    expect(page.get_by_test_id("stAlert").filter(has_text="Imported 2 items as 'uploaded'")).to_be_visible()
    expect(page.get_by_test_id("stException")).to_have_count(0)
    with e2e_db() as session:
        assert session.scalar(select(Dataset.item_count).where(Dataset.name == "uploaded")) == 2
