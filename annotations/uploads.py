"""Tables that arrive through the browser: a table file alone (images by URL) or a ZIP archive
with the table and its images. Archives are unpacked into the instance folder with limits, and
no member may land outside its folder."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from annotations.settings import Settings
from cftclip_core.errors import DataError
from cftclip_core.formats import SUFFIXES, Table, read_table

MAX_ARCHIVE_FILES = 200_000
MAX_UNPACKED_BYTES = 20 * 1024**3


@contextmanager
def uploaded_table(settings: Settings, filename: str, data: bytes, *, skip_bad_rows: bool = False) -> Iterator[Table]:
    """Read an uploaded table (or ZIP) in a scratch folder of the instance, removed afterwards.

    Use the table inside the ``with`` block: its images live in the scratch folder until then.
    """
    scratch_root = settings.ensure().instance_dir / "tmp"
    scratch_root.mkdir(exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="upload-", dir=scratch_root))
    try:
        name = PurePosixPath(filename).name or "upload"
        if name.lower().endswith(".zip"):
            table_path = _unpack(data, scratch, name)
        else:
            if Path(name).suffix.lower() not in SUFFIXES:
                raise DataError(f"'{name}' is not a .csv, .jsonl, .parquet or .zip file; upload one of those.")
            table_path = scratch / name
            table_path.write_bytes(data)
        try:
            table = read_table(table_path, skip_bad_rows=skip_bad_rows)
        except DataError as exc:  # name the file as uploaded, not where the server unpacked it
            unpacked = str(exc).replace(f"{scratch / 'archive'}/", f"{name}: ").replace(f"{scratch}/", "")
            raise DataError(unpacked) from None
        yield table
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _unpack(data: bytes, target: Path, name: str) -> Path:
    archive_path = target / "upload.zip"
    archive_path.write_bytes(data)
    try:
        archive = zipfile.ZipFile(archive_path)
    except zipfile.BadZipFile:
        raise DataError(f"'{name}' is not a readable ZIP archive; zip the table and its images again.") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > MAX_ARCHIVE_FILES or sum(m.file_size for m in members) > MAX_UNPACKED_BYTES:
            raise DataError(f"'{name}' is too large to unpack (at most {MAX_ARCHIVE_FILES:,} files and "
                            f"{MAX_UNPACKED_BYTES // 1024**3} GiB); import it from the command line instead.")
        root = target / "archive"
        for member in members:
            path = PurePosixPath(member.filename)
            if path.is_absolute() or ".." in path.parts:
                raise DataError(f"'{name}' contains '{member.filename}', which points outside the archive; "
                                "zip the folder again with relative paths.")
            destination = root.joinpath(*path.parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, destination.open("wb") as sink:
                shutil.copyfileobj(source, sink)
    tables = sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES and len(p.relative_to(root).parts) <= 2)
    if len(tables) != 1:
        found = ", ".join(str(p.relative_to(root)) for p in tables) or "none"
        raise DataError(f"'{name}' must hold exactly one table (.csv, .jsonl or .parquet) at its top level or one "
                        f"folder down; found {found}.")
    return tables[0]
