"""Dataset tables in the NewsTT layout: read and write CSV, JSONL and Parquet.

A table has one row per thumbnail/text pair with columns ``id``, ``image`` (a path relative to the
table's folder, or an http(s) URL), ``title``, ``summary``, and optionally ``label`` (0/1, 1 = the
thumbnail shows an actor of the event) and ``split``. Extra columns are kept in ``Record.extra``.

Every row is validated and all problems are reported together, with row numbers, so a user can fix
a file in one pass. A file with problems loads nothing unless the caller asks to skip bad rows; then
the bad rows are listed in ``Table.skipped`` (and, where they still name an image, kept in
``Table.rejected`` so that an importer can check those images too and report everything at once).
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pandas as pd

from cftclip_core.errors import DataError
from cftclip_core.specs.training import TEXT_FIELDS

REQUIRED_COLUMNS = ("id", "image", "title", "summary")
OPTIONAL_COLUMNS = ("label", "split")
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
MAX_PROBLEMS_SHOWN = 50
MAX_ID_LENGTH = 200  # characters; the studio's database holds ids and splits up to these lengths
MAX_SPLIT_LENGTH = 50


@dataclass(frozen=True)
class Record:
    """One thumbnail/text pair."""

    id: str
    image: str
    title: str
    summary: str
    label: int | None = None
    split: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    row: int | None = field(default=None, compare=False)  # 1-based data row of the file it was read from

    def text(self, field_name: str) -> str:
        """The text scored for this item: ``title`` or ``summary``."""
        check_text_field(field_name)
        return getattr(self, field_name)

    @property
    def image_is_url(self) -> bool:
        return is_url(self.image)


@dataclass(frozen=True)
class RowProblem:
    row: int  # 1-based data row number as a user sees it (header excluded)
    column: str
    reason: str

    def __str__(self) -> str:
        return f"row {self.row}, column '{self.column}': {self.reason}"


@dataclass
class Table:
    """A validated table. ``base_dir`` is where relative image paths start."""

    records: list[Record]
    base_dir: Path
    source: Path | None = None
    skipped: list[RowProblem] = field(default_factory=list)  # every problem of the rows left out
    rejected: list[Record] = field(default_factory=list)  # rows left out that still name a usable image path
    name: str = "the table"  # how messages name the file (e.g. as uploaded, not where the server put it)

    def image_path(self, record: Record) -> Path:
        """Absolute path of a record's local image (URLs have none)."""
        if record.image_is_url:
            raise DataError(f"Item '{record.id}' has an image URL, not a file; fetch it first.")
        return self.base_dir / record.image

    @property
    def has_labels(self) -> bool:
        return any(r.label is not None for r in self.records)

    def __len__(self) -> int:
        return len(self.records)


def is_url(value: str) -> bool:
    return value.lower().startswith(("http://", "https://"))


def check_text_field(name: str) -> None:
    if name not in TEXT_FIELDS:
        raise DataError(f"Unknown text field '{name}': choose one of {', '.join(TEXT_FIELDS)}.")


def read_table(
    path: str | Path,
    *,
    skip_bad_rows: bool = False,
    check_images: bool = True,
    allow_pickle: bool = False,
    name: str | None = None,
    layout: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> Table:
    """Read and validate a table file.

    ``layout`` turns the file's frame into the table's columns first (``cftclip_core.layouts``: NewsTT as
    distributed, the original code's pickles, a pre-training corpus).

    ``check_images`` also checks that each local image file exists inside the table's folder.
    Pickled DataFrames (the original code's format) are read only with ``allow_pickle=True``:
    unpickling runs code from the file, so only ever pass it for files you made yourself.
    ``name`` is how messages call the file (default: its path).
    """
    path = Path(path)
    shown = name or str(path)
    if not path.is_file():
        raise DataError(f"No table file at '{shown}': check the path.")
    frame = _read_frame(path, shown, allow_pickle=allow_pickle)
    if layout is not None:
        frame = layout(frame)
    return table_from_frame(
        frame, base_dir=path.parent, source=path, skip_bad_rows=skip_bad_rows, check_images=check_images, name=shown
    )


def table_from_frame(
    frame: pd.DataFrame,
    *,
    base_dir: Path,
    source: Path | None = None,
    skip_bad_rows: bool = False,
    check_images: bool = True,
    name: str | None = None,
) -> Table:
    """Validate an in-memory frame (e.g. an upload) the same way as a file."""
    name = name or (str(source) if source else "the table")
    frame = frame.rename(columns=lambda c: str(c).strip().lower())
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{name} lacks the column(s) {', '.join(missing)}; found {', '.join(map(str, frame.columns)) or 'none'}. "
            f"A table needs {', '.join(REQUIRED_COLUMNS)} (and optionally label, split)."
        )
    if frame.columns.duplicated().any():
        dupes = sorted(set(frame.columns[frame.columns.duplicated()]))
        raise DataError(f"{name} has the column(s) {', '.join(dupes)} more than once; keep one of each.")
    if frame.empty:
        raise DataError(f"{name} has no rows; add at least one item.")

    base_dir = base_dir.resolve()
    records: list[Record] = []
    rejected: list[Record] = []
    problems: list[RowProblem] = []
    seen_ids: dict[str, int] = {}
    extra_columns = [c for c in frame.columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    for number, row in enumerate(frame.to_dict("records"), start=1):
        row_problems: list[RowProblem] = []
        record = _parse_row(number, row, extra_columns, base_dir, check_images, row_problems)
        if record is not None:
            first = seen_ids.get(record.id)
            if first is not None:
                row_problems.append(RowProblem(number, "id", f"duplicate id '{record.id}' (first in row {first})"))
            else:
                seen_ids[record.id] = number
        if row_problems:
            problems.extend(row_problems)
            if record is not None and record.image and not any(p.column == "image" for p in row_problems):
                rejected.append(record)
        elif record is not None:
            records.append(record)

    if problems and not skip_bad_rows:
        raise DataError(_problem_message(name, problems))
    if not records:
        raise DataError(problems_message(f"{name} has no valid rows; fix the problems below and load it again.",
                                         problems))
    return Table(records=records, base_dir=base_dir, source=source, skipped=problems, rejected=rejected, name=name)


def write_table(records: Iterable[Record], path: str | Path) -> Path:
    """Write records in the format named by the file's suffix."""
    path = Path(path)
    kind = _kind_for(path)
    rows = []
    for r in records:
        row = {"id": r.id, "image": r.image, "title": r.title, "summary": r.summary, "label": r.label, "split": r.split}
        row.update(r.extra)
        rows.append(row)
    frame = pd.DataFrame(rows)
    if "label" in frame:
        frame["label"] = frame["label"].astype("Int64")
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "csv":
        frame.to_csv(path, index=False)
    elif kind == "jsonl":
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def problems_table(problems: list[RowProblem]) -> pd.DataFrame:
    """Problems as a frame, for display."""
    return pd.DataFrame([{"row": p.row, "column": p.column, "problem": p.reason} for p in problems])


def _kind_for(path: Path) -> str:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"Cannot tell the format of '{path.name}': use a .csv, .jsonl or .parquet file."
        )
    return kind


def _read_frame(path: Path, shown: str, *, allow_pickle: bool) -> pd.DataFrame:
    if path.suffix.lower() in (".pkl", ".pickle"):
        if not allow_pickle:
            raise DataError(
                f"'{shown}' is a pickle file; loading one runs code from it. Convert it to CSV, JSONL "
                "or Parquet, or, only for a file you made yourself, pass --trust-pickle on the command line."
            )
        with path.open("rb") as handle:
            frame = pickle.load(handle)  # noqa: S301 - explicit trust flag, command line only
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"'{shown}' holds a {type(frame).__name__}, not a pandas DataFrame.")
        return frame
    kind = _kind_for(path)
    try:
        if kind == "csv":  # utf-8-sig: a byte-order mark (as some spreadsheets write) is not part of the first column
            return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        if kind == "jsonl":
            return _read_jsonl(path, shown)
        return pd.read_parquet(path)
    except UnicodeDecodeError:
        raise DataError(
            f"'{shown}' is not UTF-8 text: {_first_undecodable(path)}. Save it as UTF-8 (e.g. in a "
            "spreadsheet: 'CSV UTF-8'; or `iconv -f latin1 -t utf-8`) and load it again."
        ) from None
    except DataError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types for malformed files
        detail = str(exc).replace(str(path), shown)
        raise DataError(f"Cannot read '{shown}' as {kind.upper()}: {detail}. Check the file's format.") from None


def _first_undecodable(path: Path) -> str:
    """Where the first byte that is not UTF-8 lies, as an editor counts: line and column (1-based)."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):  # b"\n" never occurs inside a UTF-8 sequence
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                column = len(line[: exc.start].decode("utf-8")) + 1
                return f"line {number}, column {column} holds the byte 0x{line[exc.start]:02x}, which UTF-8 cannot decode"
    return "a byte cannot be decoded"


def _read_jsonl(path: Path, shown: str) -> pd.DataFrame:
    rows = []
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"'{shown}' line {number}, column {exc.colno} is not valid JSON ({exc.msg}); fix that line."
                ) from None
            if not isinstance(value, dict):
                raise DataError(f"'{shown}' line {number} is not a JSON object; each line must be one item.")
            rows.append(value)
    return pd.DataFrame(rows)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        return bool(pd.isna(value)) if not isinstance(value, (list, dict, str)) else False
    except (TypeError, ValueError):
        return False


def _text(value: Any) -> str | None:
    if _is_missing(value):
        return None
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else str(value)
    return None


def _parse_row(
    number: int,
    row: dict[str, Any],
    extra_columns: list[str],
    base_dir: Path,
    check_images: bool,
    problems: list[RowProblem],
) -> Record | None:
    def need_text(column: str) -> str:
        value = _text(row.get(column))
        if value is None and not _is_missing(row.get(column)):
            problems.append(RowProblem(number, column, f"expected text, got {type(row[column]).__name__}"))
            return ""
        if not value:
            problems.append(RowProblem(number, column, "is empty"))
            return ""
        return value

    def optional_text(column: str) -> str | None:
        value = _text(row.get(column))
        if value is None and not _is_missing(row.get(column)):
            problems.append(RowProblem(number, column, f"expected text, got {type(row[column]).__name__}"))
        return value

    def at_most(column: str, value: str | None, limit: int) -> None:
        if value is not None and len(value) > limit:
            problems.append(RowProblem(number, column, f"is {len(value)} characters long; use at most {limit}"))

    item_id = need_text("id")
    at_most("id", item_id, MAX_ID_LENGTH)
    title = need_text("title")
    summary = need_text("summary")
    image = need_text("image")
    if image:
        image = _check_image(number, image, base_dir, check_images, problems)
    label = _parse_label(number, row.get("label"), problems)
    split = optional_text("split") or None
    at_most("split", split, MAX_SPLIT_LENGTH)
    extra = {c: (None if _is_missing(row.get(c)) else row.get(c)) for c in extra_columns}
    if not item_id:
        return None
    return Record(id=item_id, image=image, title=title, summary=summary, label=label, split=split, extra=extra,
                  row=number)


def _parse_label(number: int, value: Any, problems: list[RowProblem]) -> int | None:
    if _is_missing(value) or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).strip()
    if isinstance(value, bool):
        text = str(int(value))
    if text in ("0", "1", "0.0", "1.0"):
        return int(float(text))
    problems.append(RowProblem(number, "label", f"'{text}' is not 0 or 1 (leave it empty if unlabelled)"))
    return None


def _check_image(number: int, image: str, base_dir: Path, check_exists: bool, problems: list[RowProblem]) -> str:
    if is_url(image):
        try:
            parts = urlsplit(image)
            host, _ = parts.hostname, parts.port  # .port raises ValueError for a bad port
        except ValueError as exc:
            problems.append(RowProblem(number, "image", f"'{image}' is not a valid URL ({exc}); correct it"))
            return image
        if not host:
            problems.append(RowProblem(number, "image", f"'{image}' has no host name; correct the URL"))
        return image
    if "://" in image:
        problems.append(RowProblem(number, "image", f"'{image}' is neither a relative path nor an http(s) URL"))
        return image
    posix = PurePosixPath(image.replace("\\", "/"))
    if posix.is_absolute() or ".." in posix.parts or (len(image) > 1 and image[1] == ":"):
        problems.append(
            RowProblem(number, "image", f"'{image}' points outside the table's folder; use a path inside it")
        )
        return image
    resolved = (base_dir / posix).resolve()
    if not resolved.is_relative_to(base_dir):
        problems.append(RowProblem(number, "image", f"'{image}' leads outside the table's folder (via a link)"))
    elif check_exists and not resolved.is_file():
        problems.append(RowProblem(number, "image", f"file '{image}' not found next to the table"))
    return str(posix)


def problems_message(summary: str, problems: Sequence[object]) -> str:
    """``summary``, then the problems one a line (the first ``MAX_PROBLEMS_SHOWN`` and a count of the rest).

    The one format for every "here is everything wrong with your input" error of the project."""
    shown = "\n".join(f"  - {p}" for p in problems[:MAX_PROBLEMS_SHOWN])
    more = f"\n  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more" if len(problems) > MAX_PROBLEMS_SHOWN else ""
    return f"{summary}\n{shown}{more}"


def _problem_message(name: str, problems: list[RowProblem]) -> str:
    rows = len({p.row for p in problems})
    return problems_message(
        f"{name} has {len(problems)} problem(s) in {rows} row(s); nothing was loaded. Fix them, or skip the bad "
        "rows explicitly (--skip-bad-rows).",
        problems,
    )
