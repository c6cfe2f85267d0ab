"""Tables that arrive through the browser's uploader: alone, or zipped with their images."""

from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path

import pytest

from annotations.settings import Settings
from annotations.uploads import uploaded_table
from cftclip_core.errors import ConfigError, DataError
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


def crafted(members: list[tuple[str, bytes, int]]) -> bytes:
    """A ZIP built member by member: (name, data, compression)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data, compression in members:
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return buffer.getvalue()


TABLE = ("set/table.csv", (HEADER + "a,images/a.jpg,A title,A summary,1\n").encode(), zipfile.ZIP_DEFLATED)


def refusal(settings: Settings, filename: str, data: bytes) -> str:
    with pytest.raises(DataError) as refused, uploaded_table(settings, filename, data):
        pass
    message = str(refused.value)
    assert str(settings.instance_dir) not in message and "upload-" not in message  # no scratch path
    assert not any((settings.instance_dir / "tmp").iterdir())  # and nothing left behind
    return message


def test_a_member_compressed_beyond_the_ratio_is_refused_before_unpacking(settings: Settings, jpeg: bytes) -> None:
    bomb = ("set/images/a.jpg", b"\0" * 20_000_000, zipfile.ZIP_BZIP2)  # 20 MB in a few dozen bytes
    data = crafted([TABLE, bomb])
    assert len(data) < 10_000
    message = refusal(settings, "bomb.zip", data)
    assert "'bomb.zip': the member 'set/images/a.jpg' is compressed" in message and "1,000 to 1" in message


def test_unpacked_size_is_proportionate_to_the_upload(settings: Settings, jpeg: bytes) -> None:
    # Each member compresses about 500:1 (under the ratio), but together they grow far beyond the upload.
    small = dataclasses.replace(settings, zip_min_unpacked_bytes=1024**2, zip_max_expansion=200)
    filler = [(f"set/images/pad{i}.txt", (b"0123456789" * 100 + b"\n") * 1000, zipfile.ZIP_DEFLATED) for i in range(4)]
    data = crafted([TABLE, ("set/images/a.jpg", jpeg, zipfile.ZIP_STORED), *filler])
    assert small.zip_max_unpacked_bytes(len(data)) < 4_000_000
    message = refusal(small, "grows.zip", data)
    assert "'grows.zip' would unpack to more than" in message and "200 times its own size" in message
    roomy = dataclasses.replace(small, zip_max_expansion=10_000)  # the same archive with a looser limit
    with uploaded_table(roomy, "grows.zip", data) as table:
        assert [r.id for r in table.records] == ["a"]


def test_the_limits_come_from_the_environment(tmp_path: Path) -> None:
    env = {"CFTCLIP_INSTANCE": str(tmp_path), "CFTCLIP_ZIP_MAX_RATIO": "50", "CFTCLIP_ZIP_MAX_EXPANSION": "10"}
    configured = Settings.from_env(env)
    assert (configured.zip_max_ratio, configured.zip_max_expansion) == (50, 10)
    assert configured.zip_max_unpacked_bytes(100 * 1024**2) == 1000 * 1024**2
    with pytest.raises(ConfigError, match="CFTCLIP_ZIP_MAX_RATIO is 'lots'; give a whole number"):
        Settings.from_env({**env, "CFTCLIP_ZIP_MAX_RATIO": "lots"})


@pytest.mark.parametrize(("members", "expected"), [
    ([TABLE, ("set/images", b"a file", 0), ("set/images/a.jpg", b"x", 0)],
     "holds 'set/images' both as a file and as a folder (of 'set/images/a.jpg')"),
    ([TABLE, ("set/images/a.jpg", b"x", 0), ("set/images", b"a file", 0)],
     "holds 'set/images' twice, or as a file and as a folder"),
    ([TABLE, ("set/images/" + "n" * 300 + ".jpg", b"x", 0)], "contains a name of 304 bytes"),
])
def test_members_the_file_system_cannot_hold_are_refused_plainly(settings: Settings, members: list,
                                                                 expected: str) -> None:
    assert expected in refusal(settings, "crafted.zip", crafted(members))


def test_the_dataset_keeps_the_uploaded_files_name(settings: Settings, jpeg: bytes) -> None:
    from annotations.db import make_engine, session_factory, upgrade
    from annotations.importer import import_dataset

    upgrade(settings.ensure().database_url)
    factory = session_factory(make_engine(settings.database_url))
    data = zipped({"set/table.csv": (HEADER + "a,images/a.jpg,A title,A summary,1\n").encode(),
                   "set/images/a.jpg": jpeg})
    with uploaded_table(settings, "C:\\Users\\rita\\newstt.zip", data) as table:
        dataset = import_dataset(factory, settings, table, "uploaded")
    assert dataset.source_file == "newstt.zip: set/table.csv"
    with uploaded_table(settings, "plain.csv", (HEADER + "b,https://example.org/b.jpg,T,S,0\n").encode()) as table:
        assert table.name == "plain.csv"
