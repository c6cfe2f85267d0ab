"""Tables that arrive through the browser's uploader: alone, or zipped with their images."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from annotations.settings import Settings
from annotations.uploads import uploaded_table
from cftclip_core.errors import DataError
from tests.conftest import make_image

HEADER = "id,image,title,summary,label\n"


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.for_instance(tmp_path / "fresh-instance")  # nothing created yet, as on a first start


@pytest.fixture
def jpeg(tmp_path: Path) -> bytes:
    return make_image(tmp_path / "a.jpg").read_bytes()


def test_a_zip_with_its_images_is_read_on_a_fresh_instance_and_cleaned_up(settings: Settings, jpeg: bytes) -> None:
    data = zipped({"set/table.csv": (HEADER + "a,images/a.jpg,A title,A summary,1\n"
                                     "b,images/b.jpg,B title,B summary,0\n").encode(),
                   "set/images/a.jpg": jpeg, "set/images/b.jpg": jpeg})
    with uploaded_table(settings, "newstt.zip", data) as table:
        assert [record.id for record in table.records] == ["a", "b"]
        image = table.image_path(table.records[0])
        assert image.is_file() and image.read_bytes() == jpeg
        scratch = image.parents[2]
    assert not scratch.exists()  # the scratch folder goes with the block


def test_problems_name_the_uploaded_file_not_the_servers_scratch_folder(settings: Settings) -> None:
    data = zipped({"set/table.csv": (HEADER + "a,images/missing.jpg,A title,A summary,maybe\n").encode()})
    with pytest.raises(DataError) as refused, uploaded_table(settings, "newstt.zip", data):
        pass
    message = str(refused.value)
    assert "newstt.zip: set/table.csv" in message and str(settings.instance_dir) not in message


def test_a_table_alone_is_read(settings: Settings) -> None:
    data = (HEADER + "a,https://example.org/a.jpg,A title,A summary,1\n").encode()
    with uploaded_table(settings, "table.csv", data) as table:
        assert table.records[0].image == "https://example.org/a.jpg"


@pytest.mark.parametrize(("name", "files", "message"), [
    ("notes.txt", None, "is not a .csv, .jsonl, .parquet or .zip file"),
    ("bad.zip", b"not a zip", "not a readable ZIP archive"),
    ("escape.zip", {"../outside.csv": HEADER.encode()}, "points outside the archive"),
    ("two.zip", {"a.csv": HEADER.encode(), "b.csv": HEADER.encode()}, "must hold exactly one table"),
])
def test_unusable_uploads_are_refused_with_what_to_do(settings: Settings, name: str, files: object,
                                                      message: str) -> None:
    data = zipped(files) if isinstance(files, dict) else (files or b"x")
    with pytest.raises(DataError, match=message), uploaded_table(settings, name, data):
        pass
    assert not any((settings.instance_dir / "tmp").iterdir())
