"""Import dataset tables into the database, read datasets back, and export them.

Imports are all-or-nothing. Every row and every image is checked first (local files decoded with the
safe loader, URLs downloaded and decoded), the images of rows with other problems too, and every
problem of the file is reported in one ``DataError``, by row number, before the database is touched.
Images then go into the content-addressed media store, and the dataset, its items and media rows
are inserted in ONE transaction. If anything fails on the way (a full disk, the database), the
files this import added to the media store are taken back, so a failed import leaves nothing.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from annotations.db import MAX_INTEGER, make_engine, session_factory, write_session
from annotations.models import Dataset, Item, Media, utcnow
from annotations.settings import Settings
from cftclip_core.demo import demo_table_path
from cftclip_core.errors import DataError, ImageError
from cftclip_core.formats import Record, RowProblem, Table, problems_message, read_table, write_table
from cftclip_core.media_store import MediaStore, StoredMedia
from cftclip_core.table_images import CheckedImage, ImageCheck, check_table_images

log = logging.getLogger(__name__)

DEMO_NAME = "demo"
DEMO_DESCRIPTION = (
    "Bundled demo: invented news-style texts with public-domain/CC0 photos, for trying the workflow only "
    "(see cftclip_core/demo_data/README.md)."
)
PREVIEW_ROWS = 20
MAX_NAME_LENGTH = 200  # Dataset.name

# progress(stage, done, total); stages: "checking images", "downloading images", "copying images"
ImportProgress = Callable[[str, int, int], None]


@dataclass
class ImportPreview:
    """What an import would bring in, for the user to look at before importing."""

    frame: pd.DataFrame  # the first rows, as in the file
    problems: list[RowProblem]  # every problem found, by row: the table's, and the images' once checked
    n_items: int  # items an import would bring in (the rows without problems)
    n_local_images: int
    n_url_images: int
    splits: dict[str, int] = field(default_factory=dict)
    has_labels: bool = False
    images_checked: bool = False

    @property
    def n_bad_rows(self) -> int:
        return len({p.row for p in self.problems})


@dataclass(frozen=True)
class ImportResult:
    dataset: Dataset
    skipped: list[RowProblem]  # the problems of the rows left out (only when asked to skip bad rows)


def media_store(settings_or_store: Settings | MediaStore) -> MediaStore:
    if isinstance(settings_or_store, MediaStore):
        return settings_or_store
    return MediaStore(settings_or_store.media_dir)


def preview_import(
    table: Table,
    images_into: Settings | MediaStore | None = None,
    *,
    allow_private_urls: bool = False,
    progress: ImportProgress | None = None,
) -> ImportPreview:
    """What an import would bring in and every problem it would meet, before anything is written.

    With ``images_into`` every image is checked too (decoded; URLs downloaded into that media store,
    where the import finds them again); the database is not touched.
    """
    head = table.records[:PREVIEW_ROWS]
    frame = pd.DataFrame(
        [{"id": r.id, "image": r.image, "title": r.title, "summary": r.summary, "label": r.label, "split": r.split} for r in head]
    )
    if not frame.empty:
        frame["label"] = frame["label"].astype("Int64")
    check = None
    if images_into is not None:
        check = check_table_images(table, media_store(images_into), allow_private=allow_private_urls, progress=progress)
    records = _usable(table, check)
    splits: dict[str, int] = {}
    for record in records:
        key = record.split or "(none)"
        splits[key] = splits.get(key, 0) + 1
    n_url = sum(r.image_is_url for r in records)
    return ImportPreview(
        frame=frame,
        problems=_all_problems(table, check),
        n_items=len(records),
        n_local_images=len(records) - n_url,
        n_url_images=n_url,
        splits=splits,
        has_labels=any(r.label is not None for r in records),
        images_checked=check is not None,
    )


def import_table(
    factory: sessionmaker[Session],
    settings_or_store: Settings | MediaStore,
    table: Table,
    name: str,
    *,
    description: str = "",
    allow_private_urls: bool = False,
    skip_bad_rows: bool = False,
    progress: ImportProgress | None = None,
) -> ImportResult:
    """Import ``table`` as a new dataset called ``name``; all-or-nothing (see module docstring).

    Read the table with ``read_table(..., skip_bad_rows=True)`` so that its row problems travel with
    it: they are reported here together with the image problems. ``skip_bad_rows`` leaves out every
    row with a problem instead of refusing the file; the result lists them. URL images are
    downloaded with the safe fetcher; ``allow_private_urls`` lets it reach hosts on the local network.
    """
    name = _check_name(name)
    store = media_store(settings_or_store)
    with factory() as session:
        if _dataset_id_by_name(session, name) is not None:
            raise _name_taken(name)
    if len(table.records) + len(table.skipped) > MAX_INTEGER:
        raise DataError(f"{table.name} has more rows than the database can number; split it into smaller files.")

    with store.recording() as written:
        try:
            check = check_table_images(table, store, allow_private=allow_private_urls, progress=progress)
            problems = _all_problems(table, check)
            records = _usable(table, check)
            if problems and (not skip_bad_rows or not records):
                raise DataError(_refusal(table, problems, skippable=not skip_bad_rows))
            stored = _store_images(records, check.ok, store, progress)
            dataset = _insert_dataset(factory, table, records, check.ok, stored, name, description)
        except BaseException:
            _take_back(factory, store, written)
            raise
    if problems:
        log.warning("Skipped %d bad row(s) of %s", len({p.row for p in problems}), table.name)
    log.info("Imported dataset '%s' (id %d) with %d item(s)", name, dataset.id, dataset.item_count)
    return ImportResult(dataset, problems)


def import_dataset(
    factory: sessionmaker[Session],
    settings_or_store: Settings | MediaStore,
    table: Table,
    name: str,
    **options: Any,
) -> Dataset:
    """``import_table`` for callers that need only the new dataset (same keyword options)."""
    return import_table(factory, settings_or_store, table, name, **options).dataset


def ensure_demo_dataset(settings: Settings, factory: sessionmaker[Session] | None = None) -> Dataset | None:
    """On a fresh instance (no dataset at all), import the bundled demo set as ``demo``.

    Returns the dataset imported (or found, if another process imported it at the same moment),
    None when the instance already has datasets. The schema must exist (run ``upgrade`` first).
    """
    engine = None
    if factory is None:
        engine = make_engine(settings.database_url)
        factory = session_factory(engine)
    try:
        with factory() as session:
            if session.scalar(select(func.count()).select_from(Dataset)):
                return None
        table = read_table(demo_table_path())
        try:
            return import_dataset(factory, settings, table, DEMO_NAME, description=DEMO_DESCRIPTION)
        except DataError:
            with factory() as session:  # another process won the race: use its import
                existing = session.scalar(select(Dataset).where(Dataset.name == DEMO_NAME))
            if existing is None:
                raise
            return existing
    finally:
        if engine is not None:
            engine.dispose()


def list_datasets(session: Session) -> list[Dataset]:
    return list(session.scalars(select(Dataset).order_by(Dataset.id)))


def get_dataset(session: Session, dataset_id: int) -> Dataset:
    dataset = session.get(Dataset, dataset_id) if 1 <= dataset_id <= MAX_INTEGER else None
    if dataset is None:
        raise _no_dataset(dataset_id)
    return dataset


def get_dataset_by_name(session: Session, name: str) -> Dataset:
    dataset = session.scalar(select(Dataset).where(Dataset.name == name))
    if dataset is None:
        known = ", ".join(d.name for d in list_datasets(session)) or "none yet"
        raise DataError(f"No dataset called '{name}'; the datasets are: {known}.")
    return dataset


def dataset_items_frame(
    session: Session, dataset_id: int, media: Settings | MediaStore | None = None
) -> pd.DataFrame:
    """The items of a dataset in import order, with the path of each image in the media store.

    ``media`` says where the store is; by default the instance folder from the environment.
    """
    get_dataset(session, dataset_id)
    store = media_store(media if media is not None else Settings.from_env())
    rows = session.execute(
        select(Item.id, Item.external_id, Item.title, Item.summary, Item.split, Item.source_label, Item.media_sha256, Item.image_url)
        .where(Item.dataset_id == dataset_id)
        .order_by(Item.position)
    ).all()
    frame = pd.DataFrame(
        rows,
        columns=["item_id", "external_id", "title", "summary", "split", "source_label", "media_sha256", "image_url"],
    )
    frame["source_label"] = frame["source_label"].astype("Int64")
    frame["media_path"] = [_media_path(store, sha) for sha in frame["media_sha256"]]
    return frame


def export_dataset(
    session: Session,
    dataset_id: int,
    path: str | Path,
    media: Settings | MediaStore | None = None,
    *,
    extra_by_id: Mapping[str, Mapping[str, Any]] | None = None,
    label_by_id: Mapping[str, Any] | None = None,
) -> Path:
    """Write a dataset as a NewsTT table (format from the suffix) with its images in ``images/`` beside it.

    Images are named by content hash. The label column holds the label of the imported file unless
    ``label_by_id`` (keyed by the table id) gives another, e.g. the gold label; ``extra_by_id`` adds
    columns.
    """
    path = Path(path)
    frame = dataset_items_frame(session, dataset_id, media)
    extras = {item_id: extra for item_id, extra in session.execute(select(Item.id, Item.extra).where(Item.dataset_id == dataset_id))}
    image_dir = path.parent / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for row in frame.itertuples(index=False):
        source = Path(row.media_path)
        target = image_dir / f"{row.media_sha256}{source.suffix}"
        if not target.exists():
            shutil.copyfile(source, target)
        label = row.source_label if label_by_id is None else label_by_id.get(row.external_id)
        records.append(
            Record(
                id=row.external_id,
                image=f"images/{target.name}",
                title=row.title,
                summary=row.summary,
                label=None if pd.isna(label) else int(label),
                split=None if pd.isna(row.split) else row.split,
                extra={**(extras.get(row.item_id) or {}), **((extra_by_id or {}).get(row.external_id) or {})},
            )
        )
    return write_table(records, path)


# --- helpers ---------------------------------------------------------------------------------


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise DataError("The dataset needs a name: give it one (e.g. --name newstt-test).")
    if len(name) > MAX_NAME_LENGTH:
        raise DataError(f"The dataset name is {len(name)} characters long; use at most {MAX_NAME_LENGTH}.")
    return name


def _name_taken(name: str) -> DataError:
    return DataError(f"A dataset named '{name}' already exists; choose another name. Nothing was imported.")


def _no_dataset(dataset_id: int) -> DataError:
    return DataError(f"No dataset with id {dataset_id}; pick one from the list of datasets.")


def _dataset_id_by_name(session: Session, name: str) -> int | None:
    return session.scalar(select(Dataset.id).where(Dataset.name == name))


def _all_problems(table: Table, check: ImageCheck | None) -> list[RowProblem]:
    """The table's row problems and its images' problems, by row (a row's own problems first)."""
    return sorted([*table.skipped, *(check.problems if check is not None else [])], key=lambda p: p.row)


def _usable(table: Table, check: ImageCheck | None) -> list[Record]:
    """The records an import would bring in: valid rows whose image (once checked) is usable."""
    bad = check.bad_ids if check is not None else set()
    return [r for r in table.records if r.id not in bad]


def _refusal(table: Table, problems: list[RowProblem], *, skippable: bool) -> str:
    rows = len({p.row for p in problems})
    if skippable:
        fix = "Fix them, or skip the bad rows explicitly (--skip-bad-rows), then import again."
    else:
        fix = "No row is left to import: fix the problems, then import again."
    return problems_message(f"{table.name} has {len(problems)} problem(s) in {rows} row(s); nothing was imported. "
                            f"{fix}", problems)


def _store_images(
    records: list[Record],
    checked: dict[str, CheckedImage],
    store: MediaStore,
    progress: ImportProgress | None,
) -> dict[str, StoredMedia]:
    """Item id -> its image in the media store; local files are copied in, each file once."""
    local = {checked[r.id].path: checked[r.id].suffix for r in records if not r.image_is_url}
    copied: dict[Path, StoredMedia] = {}
    for done, (path, suffix) in enumerate(local.items(), start=1):
        try:
            copied[path] = store.put_file(path, suffix=suffix)
        except OSError as exc:  # the source went away or became unreadable since it was checked
            raise DataError(f"The image {path.name} could not be read any more ({exc.strerror}); nothing was "
                            "imported. Check the file and import again.") from None
        if progress is not None:
            progress("copying images", done, len(local))
    return {
        r.id: store.get(checked[r.id].sha256) if r.image_is_url else copied[checked[r.id].path] for r in records
    }


def _take_back(factory: sessionmaker[Session], store: MediaStore, written: list[StoredMedia]) -> None:
    """Remove the files a failed import added to the store, unless a dataset already refers to one
    (another import that committed the same picture meanwhile). Never hides the import's own error."""
    if not written:
        return
    shas = sorted({media.sha256 for media in written})
    try:
        with factory() as session:
            referenced = set(session.scalars(select(Media.sha256).where(Media.sha256.in_(shas))))
    except Exception:  # noqa: BLE001 - e.g. the database is unreachable: keep the files rather than guess
        log.exception("Could not check which of %d new media files are in use; they are kept", len(shas))
        return
    for sha256 in shas:
        if sha256 not in referenced:
            try:
                store.remove(sha256)
            except OSError as exc:
                log.warning("Could not remove media file %s after a failed import: %s", sha256, exc)
    log.info("Took back %d media file(s) written by a failed import", len(set(shas) - referenced))


def _insert_dataset(
    factory: sessionmaker[Session],
    table: Table,
    records: list[Record],
    checked: dict[str, CheckedImage],
    stored: dict[str, StoredMedia],
    name: str,
    description: str,
) -> Dataset:
    now = utcnow()
    media_rows: dict[str, dict[str, Any]] = {}
    for record in records:
        info, media = checked[record.id], stored[record.id]
        media_rows.setdefault(
            media.sha256,
            {
                "sha256": media.sha256,
                "suffix": info.suffix,
                "size_bytes": media.size,
                "width": info.width,
                "height": info.height,
                "created_at": now,
            },
        )
    try:
        with write_session(factory) as session:
            if _dataset_id_by_name(session, name) is not None:
                raise _name_taken(name)
            _insert_missing_media(session, list(media_rows.values()))
            dataset = Dataset(
                name=name,
                description=description,
                source_file=table.name if table.source else None,
                created_at=now,
                item_count=len(records),
            )
            session.add(dataset)
            session.flush()
            session.execute(
                insert(Item),
                [
                    {
                        "dataset_id": dataset.id,
                        "external_id": r.id,
                        "media_sha256": stored[r.id].sha256,
                        "image_url": r.image if r.image_is_url else None,
                        "title": r.title,
                        "summary": r.summary,
                        "source_label": r.label,
                        "split": r.split,
                        "extra": _jsonable(r.extra),
                        "position": position,
                    }
                    for position, r in enumerate(records)
                ],
            )
    except IntegrityError:
        with factory() as session:
            if _dataset_id_by_name(session, name) is not None:  # a concurrent import took the name
                raise _name_taken(name) from None
        raise
    return dataset


def _insert_missing_media(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert media rows, ignoring hashes already present (also ones a concurrent import adds)."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        session.execute(dialect_insert(Media).on_conflict_do_nothing(index_elements=["sha256"]), rows)
        return
    present: set[str] = set()
    shas = [r["sha256"] for r in rows]
    for start in range(0, len(shas), 500):
        present.update(session.scalars(select(Media.sha256).where(Media.sha256.in_(shas[start : start + 500]))))
    missing = [r for r in rows if r["sha256"] not in present]
    if missing:
        session.execute(insert(Media), missing)


def _jsonable(extra: dict[str, Any]) -> dict[str, Any]:
    """Extra columns as plain JSON values (numpy numbers, timestamps and NaN become JSON-safe)."""
    result: dict[str, Any] = {}
    for key, value in extra.items():
        if isinstance(value, float) and not math.isfinite(value):
            result[str(key)] = None
            continue
        try:
            result[str(key)] = json.loads(json.dumps(value, allow_nan=False, default=_json_default))
        except ValueError:
            result[str(key)] = str(value)
    return result


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    if hasattr(value, "tolist"):  # numpy array
        return value.tolist()
    return str(value)


def _media_path(store: MediaStore, sha256: str) -> str | None:
    """Path of a stored image, or None if the store lost it (pages show a placeholder)."""
    try:
        return str(store.path_for(sha256))
    except ImageError:
        return None
