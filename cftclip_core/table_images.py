"""Check every image of a table before anything is done with it.

Local files are decoded in full with the safe loader (format allowlist, size and pixel limits,
truncated or corrupt data); URLs are downloaded once into the media store with the safe fetcher
and the stored file is decoded too. All problems are collected, one per item, so that the command
line and the importer can report them together and refuse (or skip) before scoring or importing
anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cftclip_core.errors import FetchError, ImageError
from cftclip_core.fetch import fetch_many
from cftclip_core.formats import Table
from cftclip_core.images import decode_image, sha256_file
from cftclip_core.media_store import MediaStore

# progress(stage, done, total); stages: "checking images", "downloading images"
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class CheckedImage:
    """An image that decoded cleanly. ``path`` is the local file, or the download in the media store."""

    path: Path
    sha256: str
    suffix: str  # of the format found in the content (".jpg", ".png", ...), whatever the file is called
    width: int
    height: int


@dataclass
class ImageCheck:
    ok: dict[str, CheckedImage] = field(default_factory=dict)  # record id -> its image
    problems: list[tuple[str, str]] = field(default_factory=list)  # (record id, message), in table order

    @property
    def bad_ids(self) -> set[str]:
        return {item_id for item_id, _ in self.problems}

    def problem_lines(self) -> list[str]:
        return [f"item '{item_id}': {message}" for item_id, message in self.problems]


def check_table_images(
    table: Table, store: MediaStore, *, allow_private: bool = False, progress: Progress | None = None
) -> ImageCheck:
    """Decode every local image and download and decode every URL of ``table`` (each once)."""
    checked: dict[str, CheckedImage] = {}  # image key (relative path or URL) -> image
    failures: dict[str, str] = {}

    local = list(dict.fromkeys(r.image for r in table.records if not r.image_is_url))
    for done, image in enumerate(local, start=1):
        path = table.base_dir / image
        try:
            checked[image] = _decode(path, f"'{image}'")
        except ImageError as exc:
            failures[image] = str(exc)
        if progress is not None:
            progress("checking images", done, len(local))

    urls = list(dict.fromkeys(r.image for r in table.records if r.image_is_url))
    if urls:
        report = fetch_many(
            urls,
            store,
            allow_private=allow_private,
            progress=(lambda d, t: progress("downloading images", d, t)) if progress is not None else None,
        )
        for url, error in report.errors.items():
            failures[url] = str(error)
        for url, stored in report.stored.items():
            try:  # also re-checks files the URL cache returned without downloading
                checked[url] = _decode(stored.path, url, sha256=stored.sha256)
            except ImageError as exc:
                failures[url] = str(exc)
        for url in urls:
            if url not in checked and url not in failures:  # fetch_many reports every URL; be safe
                failures[url] = str(FetchError(f"Cannot download {url}: no result. Try again."))

    result = ImageCheck()
    for record in table.records:
        if record.image in failures:
            result.problems.append((record.id, failures[record.image]))
        else:
            result.ok[record.id] = checked[record.image]
    return result


def _decode(path: Path, label: str, sha256: str | None = None) -> CheckedImage:
    decoded = decode_image(path, name=label)
    with decoded.image as image:
        width, height = image.size
    try:
        digest = sha256 or sha256_file(path)
    except OSError as exc:
        raise ImageError(f"Cannot read image {label}: {exc}. Check the file and its permissions.") from None
    return CheckedImage(path=path, sha256=digest, suffix=decoded.suffix, width=width, height=height)
