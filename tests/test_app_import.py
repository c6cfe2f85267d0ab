"""The Import page through AppTest: who may read server files, and a full disk's one message."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select

from annotations.db import make_engine, session_factory
from annotations.models import Dataset, Media
from tests.conftest import app_test, make_image

RESEARCHER = ("rita", "researcher")
ADMIN = ("ada", "admin")


def datasets(settings) -> int:  # noqa: ANN001
    """Datasets imported by the test (the first start imports the demo)."""
    with session_factory(make_engine(settings.database_url))() as session:
        return session.scalar(select(func.count()).select_from(Dataset).where(Dataset.name != "demo"))


def table(folder: Path) -> Path:
    make_image(folder / "a.jpg")
    pd.DataFrame([{"id": "1", "image": "a.jpg", "title": "t", "summary": "s"}]).to_csv(folder / "t.csv", index=False)
    return folder / "t.csv"


def test_researchers_only_upload(app_instance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("CFTCLIP_IMPORT_ROOTS", str(tmp_path))
    at = app_test(app_instance, "pages/import_data.py", user=RESEARCHER).run()
    assert not at.exception and not at.radio
    assert [t.label for t in at.text_input] == ["Dataset name", "Description (optional)"]  # no path field


def test_without_allowed_folders_even_admins_only_upload(app_instance) -> None:  # noqa: ANN001
    at = app_test(app_instance, "pages/import_data.py", user=ADMIN).run()
    assert not at.radio and any("CFTCLIP_IMPORT_ROOTS" in c.value for c in at.caption)


def test_admins_read_only_inside_the_allowed_folders(app_instance, tmp_path: Path,  # noqa: ANN001
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    table(outside.mkdir() or outside)
    (allowed / "link.csv").symlink_to(outside / "t.csv")  # inside by name, outside once resolved
    monkeypatch.setenv("CFTCLIP_IMPORT_ROOTS", str(allowed))
    at = app_test(app_instance, "pages/import_data.py", user=ADMIN).run()
    at.radio[0].set_value("A file on this server").run()
    at.text_input[1].input("sneaky")
    for path in (outside / "t.csv", allowed / "link.csv", allowed / ".." / "outside" / "t.csv", "/etc/passwd"):
        at.text_input[0].input(str(path)).run()
        assert any("is not inside a folder the studio may read tables from" in e.value for e in at.error), path
        assert not at.button or not any(b.label == "Import" for b in at.button)
    at.text_input[0].input(str(table(allowed))).run()
    next(b for b in at.button if b.label == "Import").click().run()
    assert any("Imported 1 items as 'sneaky'" in s.value for s in at.success) and datasets(app_instance) == 1


def test_a_full_disk_shows_one_plain_message_and_imports_nothing(app_instance, tmp_path: Path,  # noqa: ANN001
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_import import _fail_nth_copy

    monkeypatch.setenv("CFTCLIP_IMPORT_ROOTS", str(tmp_path))
    at = app_test(app_instance, "pages/import_data.py", user=ADMIN).run()
    at.radio[0].set_value("A file on this server").run()
    at.text_input[0].input(str(table(tmp_path)))
    at.text_input[1].input("full").run()
    _fail_nth_copy(monkeypatch, nth=1)
    next(b for b in at.button if b.label == "Import").click().run()
    assert not at.exception and not at.code  # no problem list: this is not the file's fault
    assert [e.value for e in at.error] and "the disk is full" in at.error[0].value
    assert "Skip bad rows" not in at.error[0].value
    assert datasets(app_instance) == 0
    with session_factory(make_engine(app_instance.database_url))() as session:
        demo = {sha for (sha,) in session.execute(select(Media.sha256))}
    copied = [p for p in app_instance.media_dir.rglob("*") if p.is_file() and p.name[:62] not in {s[2:] for s in demo}]
    assert copied == []  # the demo's pictures only: the failed import's copy was taken back
