"""Content-addressed file store for images and other media.

Files live at ``root/<first two hex digits>/<remaining 62 hex digits><suffix>`` where the hex
digits are the SHA-256 of the content. User-given file names are never used; the only part of a
name that survives is a sanitised suffix (``.jpg``, ``.png``...), so that tools opening the file
can guess its type. Writes go to a temporary file in the same folder and are moved into place with
``os.replace``, so a crash never leaves a half-written file under a content name. A write that
fails (full disk, quota, permissions) raises ``StorageError`` with one plain message.

``recording()`` lists the files a block of work added, so that an import that fails can take back
exactly what it wrote (``remove``).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cftclip_core.errors import MediaMissingError, StorageError

logger = logging.getLogger(__name__)

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_SUFFIX_RE = re.compile(r"^\.[a-z0-9]{1,8}$")
_CHUNK = 1 << 20
_TMP_PREFIX = ".tmp-"  # temp files start with a dot, so they never match a content name
_FULL = {errno.ENOSPC, errno.EDQUOT}


def storage_error(exc: OSError, what: str) -> StorageError:
    """One plain message for a failed write: a full disk says so and how to make room."""
    if exc.errno in _FULL:
        return StorageError(
            f"Cannot save {what}: the disk is full (or over its quota). Free some space on it, or move the "
            "instance folder (CFTCLIP_INSTANCE) to a larger disk, then try again."
        )
    return StorageError(f"Cannot save {what}: {exc.strerror or exc}. Check that the folder is writable, then try again.")


@dataclass(frozen=True)
class StoredMedia:
    """A file in the store: its content hash, where it lies, and its size in bytes."""

    sha256: str
    path: Path
    size: int


def check_sha256(sha256: str) -> str:
    """Return ``sha256`` if it is a lowercase hex SHA-256 digest, else raise ValueError."""
    if not isinstance(sha256, str) or not _SHA256_RE.match(sha256):
        raise ValueError(f"not a lowercase hex SHA-256 digest: {sha256!r}")
    return sha256


def _clean_suffix(suffix: str) -> str:
    """Return ``suffix`` lower-cased if it looks like a plain extension, else ``""``."""
    suffix = (suffix or "").lower()
    return suffix if _SUFFIX_RE.match(suffix) else ""


class MediaStore:
    """Content-addressed store: the same bytes are stored once, whatever name they came with."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._recordings: list[list[StoredMedia]] = []
        self._lock = threading.Lock()  # downloads store files from worker threads

    @contextmanager
    def recording(self) -> Iterator[list[StoredMedia]]:
        """The files this store object adds inside the block (not those it finds already stored)."""
        added: list[StoredMedia] = []
        with self._lock:
            self._recordings.append(added)
        try:
            yield added
        finally:
            with self._lock:
                self._recordings.remove(added)

    def remove(self, sha256: str) -> None:
        """Delete a stored file (nothing happens if it is not there)."""
        path = self._find(check_sha256(sha256))
        if path is not None:
            path.unlink(missing_ok=True)

    def _find(self, sha256: str) -> Path | None:
        folder = self.root / sha256[:2]
        rest = sha256[2:]
        if not folder.is_dir():
            return None
        for candidate in sorted(folder.glob(rest + "*")):
            if candidate.name == rest or candidate.name.startswith(rest + "."):
                return candidate
        return None

    def contains(self, sha256: str) -> bool:
        return self._find(check_sha256(sha256)) is not None

    def path_for(self, sha256: str) -> Path:
        """Path of the stored file with this hash; raises MediaMissingError if it is absent."""
        path = self._find(check_sha256(sha256))
        if path is None:
            raise MediaMissingError(
                f"No file with SHA-256 {sha256} in the media store at {self.root}. The store was "
                "moved, pruned or belongs to another instance folder: re-import the dataset that "
                "references it, or point the app at the instance folder that holds the media."
            )
        return path

    def get(self, sha256: str) -> StoredMedia:
        path = self.path_for(sha256)
        return StoredMedia(sha256=sha256, path=path, size=path.stat().st_size)

    def put_bytes(self, data: bytes, suffix: str = "") -> StoredMedia:
        """Store ``data``; if identical content is already stored, return the existing file."""
        sha256 = hashlib.sha256(data).hexdigest()
        existing = self._find(sha256)
        if existing is not None:
            return StoredMedia(sha256=sha256, path=existing, size=existing.stat().st_size)
        folder = self.root / sha256[:2]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=folder)
        except OSError as exc:
            raise storage_error(exc, f"a file in the media store ({self.root})") from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            return self._commit(Path(tmp_name), sha256, suffix, len(data))
        except OSError as exc:
            Path(tmp_name).unlink(missing_ok=True)
            raise storage_error(exc, f"a file in the media store ({self.root})") from None
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def put_file(self, path: Path, suffix: str | None = None) -> StoredMedia:
        """Copy a file into the store, hashing it while copying (one pass, constant memory).

        ``suffix`` defaults to the file's own extension, lower-cased, dropped if it is not a plain
        short extension. Prefer passing the suffix of the detected format (see ``images``).
        """
        path = Path(path)
        if suffix is None:
            suffix = path.suffix
        # Temp file goes into the root (same file system as the final folder) before the hash is known.
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=self.root)
        except OSError as exc:
            raise storage_error(exc, f"a file in the media store ({self.root})") from None
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            size = 0
            with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
                    size += len(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            sha256 = digest.hexdigest()
            existing = self._find(sha256)
            if existing is not None:
                tmp.unlink()
                return StoredMedia(sha256=sha256, path=existing, size=existing.stat().st_size)
            (self.root / sha256[:2]).mkdir(parents=True, exist_ok=True)
            return self._commit(tmp, sha256, suffix, size)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.filename is not None and Path(exc.filename) == path:  # the source, not the store
                raise
            raise storage_error(exc, f"a file in the media store ({self.root})") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _commit(self, tmp: Path, sha256: str, suffix: str, size: int) -> StoredMedia:
        final = self.root / sha256[:2] / (sha256[2:] + _clean_suffix(suffix))
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; other processes (app, workers) must read it
        os.replace(tmp, final)
        logger.debug("stored %s (%d bytes) at %s", sha256, size, final)
        stored = StoredMedia(sha256=sha256, path=final, size=size)
        with self._lock:
            for added in self._recordings:
                added.append(stored)
        return stored
