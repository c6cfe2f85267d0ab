"""Import dataset tables into the database, read datasets back, and export them.

Imports are all-or-nothing. Every image is checked first (local files decoded with the safe loader,
URLs downloaded and decoded); all problems are reported together in one ``DataError`` before the
database is touched. Images then go into the content-addressed media store, and the dataset, its
items and media rows are inserted in ONE transaction. Store files are immutable and named by
their hash, so if that transaction fails the only trace left is unreferenced files in the store
(harmless; a re-import reuses them).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cftclip_core.demo import demo_table_path
from cftclip_core.errors import DataError, ImageError
from cftclip_core.formats import Record, Table, problems_message, read_table, write_table
from cftclip_core.media_store import MediaStore, StoredMedia
from cftclip_core.table_images import CheckedImage, check_table_images

from annotations.db import make_engine, session_factory, write_session
from annotations.models import Dataset, Item, Media, utcnow
from annotations.settings import Settings

log = logging.getLogger(__name__)

DEMO_NAME = "demo"
DEMO_DESCRIPTION = (
    "Bundled demo: invented news-style texts with public-domain/CC0 photos, for trying the workflow only "
    "(see cftclip_core/demo_data/README.md)."
)
PREVIEW_ROWS = 20
MAX_NAME_LENGTH = 200  # Dataset.name
MAX_ID_LENGTH = 200  # Item.external_id
MAX_SPLIT_LENGTH = 50  # Item.split

# progress(stage, done, total); stages: "checking images", "downloading images", "copying images"
ImportProgress = Callable[[str, int, int], None]


@dataclass
class ImportPreview:
    """What an import would bring in, for the user to look at before importing."""

    frame: pd.DataFrame  # the first rows, as in the file
    problems: list[str]  # rows that will be skipped or values the database cannot hold
    n_items: int
    n_local_images: int
    n_url_images: int
    splits: dict[str, int] = field(default_factory=dict)
    has_labels: bool = False
    image_problems: list[str] = field(default_factory=list)  # filled when the preview checks images


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
    problems = [f"{p} (row will be skipped)" for p in table.skipped]
    problems += _length_problems(table.records)
    splits: dict[str, int] = {}
    for record in table.records:
        key = record.split or "(none)"
        splits[key] = splits.get(key, 0) + 1
    n_url = sum(r.image_is_url for r in table.records)
    image_problems = []
    if images_into is not None:
        check = check_table_images(table, media_store(images_into), allow_private=allow_private_urls, progress=progress)
        image_problems = check.problem_lines()
    return ImportPreview(
        image_problems=image_problems,
        frame=frame,
        problems=problems,
        n_items=len(table.records),
        n_local_images=len(table.records) - n_url,
        n_url_images=n_url,
        splits=splits,
        has_labels=table.has_labels,
    )


def import_dataset(
    factory: sessionmaker[Session],
    settings_or_store: Settings | MediaStore,
    table: Table,
    name: str,
    *,
    description: str = "",
    allow_private_urls: bool = False,
    skip_bad_rows: bool = False,
    progress: ImportProgress | None = None,
) -> Dataset:
    """Import ``table`` as a new dataset called ``name``; all-or-nothing (see module docstring).

    ``skip_bad_rows`` leaves out items whose image cannot be used instead of refusing the import
    (rows the table reader rejected are already gone from ``table``). URL images are downloaded
    with the safe fetcher; ``allow_private_urls`` lets it reach hosts on the local network.
    """
    name = _check_name(name)
    store = media_store(settings_or_store)
    with factory() as session:
        if _dataset_id_by_name(session, name) is not None:
            raise _name_taken(name)

    problems = _length_problems(table.records)
    if problems:  # values the database cannot hold: not an image problem, never skipped
        raise DataError(_refusal(table, problems, "value(s) too long", skippable=False))

    check = check_table_images(table, store, allow_private=allow_private_urls, progress=progress)
    records = table.records
    if check.problems:
        bad_ids = check.bad_ids
        if not skip_bad_rows or len(bad_ids) == len(records):
            raise DataError(_refusal(table, check.problem_lines(), "image problem(s)", skippable=not skip_bad_rows))
        log.warning("Skipping %d item(s) whose image cannot be used", len(bad_ids))
        records = [r for r in records if r.id not in bad_ids]

    stored = _store_images(records, check.ok, store, progress)
    dataset = _insert_dataset(factory, table, records, check.ok, stored, name, description)
    log.info("Imported dataset '%s' (id %d) with %d item(s)", name, dataset.id, dataset.item_count)
    return dataset


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
    dataset = session.get(Dataset, dataset_id)
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


def _length_problems(records: Iterable[Record]) -> list[str]:
    problems = []
    for r in records:
        if len(r.id) > MAX_ID_LENGTH:
            problems.append(f"item '{r.id[:40]}...': the id is {len(r.id)} characters long; use at most {MAX_ID_LENGTH}")
        if r.split is not None and len(r.split) > MAX_SPLIT_LENGTH:
            problems.append(f"item '{r.id}': the split name is longer than {MAX_SPLIT_LENGTH} characters; shorten it")
    return problems


def _refusal(table: Table, lines: list[str], what: str, *, skippable: bool) -> str:
    source = f"'{table.source.name}'" if table.source else "The table"
    fix = "Fix them" + (", or skip those rows explicitly (--skip-bad-rows)" if skippable else "") + ", then import again."
    return problems_message(f"{source} has {len(lines)} {what}; nothing was imported. {fix}", lines)


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
        copied[path] = store.put_file(path, suffix=suffix)
        if progress is not None:
            progress("copying images", done, len(local))
    return {
        r.id: store.get(checked[r.id].sha256) if r.image_is_url else copied[checked[r.id].path] for r in records
    }


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
                source_file=str(table.source) if table.source else None,
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
