"""Tables that arrive through the browser: a table file alone (images by URL) or a ZIP archive
with the table and its images.

Archives are unpacked into a scratch folder of the instance, with limits proportionate to the
upload (see ``Settings.zip_max_unpacked_bytes`` and ``zip_max_ratio``), checked from the archive's
directory first and again on the bytes actually unpacked. No member may land outside its folder,
and members the file system cannot hold (a file and a folder of one name, names that are too long)
are refused up front. Messages name the file as uploaded, never the server's scratch folder.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from annotations.settings import Settings
from cftclip_core.errors import DataError
from cftclip_core.formats import SUFFIXES, Table, read_table
from cftclip_core.media_store import storage_error

MAX_ARCHIVE_FILES = 200_000
MAX_NAME_BYTES = 255  # one file or folder name, as Linux and macOS file systems allow
_CHUNK = 1 << 20


@contextmanager
def uploaded_table(settings: Settings, filename: str, data: bytes, *, skip_bad_rows: bool = False) -> Iterator[Table]:
    """Read an uploaded table (or ZIP) in a scratch folder of the instance, removed afterwards.

    Use the table inside the ``with`` block: its images live in the scratch folder until then. The
    table is named after the upload (``newstt.zip: set/table.csv``), in messages and in the database.
    """
    scratch_root = settings.ensure().instance_dir / "tmp"
    name = PurePosixPath(filename.replace("\\", "/")).name or "upload"
    try:
        scratch_root.mkdir(exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="upload-", dir=scratch_root))
    except OSError as exc:
        raise storage_error(exc, f"the upload '{name}'") from None
    try:
        if name.lower().endswith(".zip"):
            table_path, shown = _unpack(settings, data, scratch, name)
        else:
            if Path(name).suffix.lower() not in SUFFIXES:
                raise DataError(f"'{name}' is not a .csv, .jsonl, .parquet or .zip file; upload one of those.")
            table_path, shown = scratch / "table" / f"upload{Path(name).suffix.lower()}", name
            _write(table_path, data, name)
        try:
            table = read_table(table_path, skip_bad_rows=skip_bad_rows, name=shown)
        except DataError as exc:  # a library's own message may still hold the scratch path
            raise DataError(str(exc).replace(str(scratch), name)) from None
        yield table
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write(path: Path, data: bytes, name: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise storage_error(exc, f"the upload '{name}'") from None


def _unpack(settings: Settings, data: bytes, target: Path, name: str) -> tuple[Path, str]:
    """The table's path in the unpacked archive, and how to name it (``upload.zip: folder/table.csv``)."""
    archive_path = target / "upload.zip"
    _write(archive_path, data, name)
    try:
        archive = zipfile.ZipFile(archive_path)
    except zipfile.BadZipFile:
        raise DataError(f"'{name}' is not a readable ZIP archive; zip the table and its images again.") from None
    root = target / "archive"
    with archive:
        members = _checked_members(settings, archive, name, len(data))
        budget = settings.zip_max_unpacked_bytes(len(data))
        for member, parts in members:
            destination = root.joinpath(*parts)
            try:
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, destination.open("wb") as sink:
                    while chunk := source.read(_CHUNK):
                        budget -= len(chunk)
                        if budget < 0:  # the directory understated a size: the bytes themselves decide
                            raise _too_large(settings, name, len(data))
                        sink.write(chunk)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError) as exc:
                raise DataError(f"'{name}': the member '{member.filename}' cannot be unpacked ({exc}); zip the "
                                "folder again with a standard tool.") from None
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise storage_error(exc, f"the unpacked upload '{name}'") from None
                raise DataError(f"'{name}': the member '{member.filename}' cannot be unpacked here "
                                f"({exc.strerror}); rename it and zip the folder again.") from None
    tables = sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES and len(p.relative_to(root).parts) <= 2)
    if len(tables) != 1:
        found = ", ".join(str(p.relative_to(root)) for p in tables) or "none"
        raise DataError(f"'{name}' must hold exactly one table (.csv, .jsonl or .parquet) at its top level or one "
                        f"folder down; found {found}.")
    return tables[0], f"{name}: {tables[0].relative_to(root).as_posix()}"


def _checked_members(
    settings: Settings, archive: zipfile.ZipFile, name: str, upload_bytes: int
) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    """The archive's files with their path parts, once the directory shows nothing unsafe or impossible."""
    members = [m for m in archive.infolist() if not m.is_dir()]
    if len(members) > MAX_ARCHIVE_FILES:
        raise DataError(f"'{name}' holds {len(members):,} files; at most {MAX_ARCHIVE_FILES:,} can be uploaded. "
                        "Import it from the command line instead (python -m annotations import).")
    if sum(m.file_size for m in members) > settings.zip_max_unpacked_bytes(upload_bytes):
        raise _too_large(settings, name, upload_bytes)
    files: dict[tuple[str, ...], str] = {}
    folders: dict[tuple[str, ...], str] = {}
    checked = []
    for member in members:
        path = PurePosixPath(member.filename)
        if path.is_absolute() or ".." in path.parts:
            raise DataError(f"'{name}' contains '{member.filename}', which points outside the archive; "
                            "zip the folder again with relative paths.")
        parts = tuple(part for part in path.parts if part != ".")
        long = next((part for part in parts if len(os.fsencode(part)) > MAX_NAME_BYTES), None)
        if long is not None:
            raise DataError(f"'{name}' contains a name of {len(os.fsencode(long))} bytes ('{long[:40]}...'); a file "
                            f"or folder name may have at most {MAX_NAME_BYTES}. Shorten it and zip the folder again.")
        if member.file_size > settings.zip_max_ratio * max(member.compress_size, 1):
            raise DataError(f"'{name}': the member '{member.filename}' is compressed "
                            f"{member.file_size // max(member.compress_size, 1):,} "
                            f"to 1, more than the {settings.zip_max_ratio:,} to 1 allowed (images and tables never "
                            "compress that much; such archives are made to fill disks). Zip the real files again.")
        if parts in files or parts in folders:
            raise DataError(f"'{name}' holds '{member.filename}' twice, or as a file and as a folder; keep one "
                            "and zip the folder again.")
        for depth in range(1, len(parts)):
            if parts[:depth] in files:
                raise DataError(f"'{name}' holds '{files[parts[:depth]]}' both as a file and as a folder (of "
                                f"'{member.filename}'); rename one and zip the folder again.")
            folders.setdefault(parts[:depth], member.filename)
        files[parts] = member.filename
        checked.append((member, parts))
    return checked


def _too_large(settings: Settings, name: str, upload_bytes: int) -> DataError:
    limit = settings.zip_max_unpacked_bytes(upload_bytes)
    return DataError(f"'{name}' would unpack to more than {limit / 1024**2:,.0f} MiB ({settings.zip_max_expansion} "
                     f"times its own size, at least {settings.zip_min_unpacked_bytes / 1024**2:,.0f} MiB); an archive of images and a table never grows that much. "
                     "Zip the real files again, or import from the command line (python -m annotations import).")
