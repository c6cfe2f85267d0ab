"""Check every image of a table before anything is done with it.

Local files are decoded in full with the safe loader (format allowlist, size and pixel limits,
truncated or corrupt data); URLs are downloaded once into the media store with the safe fetcher
and the stored file is decoded too. All problems are collected, one per row and named by its row
number, so that the command line and the importer can report them together (with the table's other
problems) and refuse (or skip) before scoring or importing anything. The images of rows that were
rejected for other reasons (``Table.rejected``) are checked too: a user then fixes a file in one pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cftclip_core.errors import FetchError, ImageError
from cftclip_core.fetch import fetch_many
from cftclip_core.formats import Record, RowProblem, Table
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
    ok: dict[str, CheckedImage] = field(default_factory=dict)  # record id -> its image (valid rows only)
    problems: list[RowProblem] = field(default_factory=list)  # column 'image', in table order
    bad_ids: set[str] = field(default_factory=set)  # ids of the table's (valid) records whose image failed

    def problem_lines(self) -> list[str]:
        return [str(problem) for problem in self.problems]


def check_table_images(
    table: Table, store: MediaStore, *, allow_private: bool = False, progress: Progress | None = None
) -> ImageCheck:
    """Decode every local image and download and decode every URL of ``table`` (each once), those of
    its rejected rows included."""
    checked: dict[str, CheckedImage] = {}  # image key (relative path or URL) -> image
    failures: dict[str, str] = {}
    everything = sorted([*table.records, *table.rejected], key=_row_of(table))

    local = list(dict.fromkeys(r.image for r in everything if not r.image_is_url))
    for done, image in enumerate(local, start=1):
        path = table.base_dir / image
        try:
            checked[image] = _decode(path, f"'{image}'")
        except ImageError as exc:
            failures[image] = str(exc)
        if progress is not None:
            progress("checking images", done, len(local))

    urls = list(dict.fromkeys(r.image for r in everything if r.image_is_url))
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
    valid = {id(record) for record in table.records}
    row_of = _row_of(table)
    for record in everything:
        if record.image in failures:
            result.problems.append(RowProblem(row_of(record), "image", failures[record.image]))
            if id(record) in valid:
                result.bad_ids.add(record.id)
        elif id(record) in valid:
            result.ok[record.id] = checked[record.image]
    return result


def _row_of(table: Table) -> Callable[[Record], int]:
    """A record's row in its file; records made in code (no row) count by their place in the table."""
    position = {id(record): number for number, record in enumerate(table.records, start=1)}
    return lambda record: record.row if record.row is not None else position.get(id(record), 0)


def _decode(path: Path, label: str, sha256: str | None = None) -> CheckedImage:
    decoded = decode_image(path, name=label)
    with decoded.image as image:
        width, height = image.size
    try:
        digest = sha256 or sha256_file(path)
    except OSError as exc:
        raise ImageError(f"Cannot read image {label}: {exc}. Check the file and its permissions.") from None
    return CheckedImage(path=path, sha256=digest, suffix=decoded.suffix, width=width, height=height)
