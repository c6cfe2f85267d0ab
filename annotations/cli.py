"""Command line for the studio database: ``python -m annotations {upgrade,import,datasets}``.

The instance folder and database come from ``CFTCLIP_INSTANCE`` / ``CFTCLIP_DATABASE_URL``.
Errors a user can fix are printed as one message on stderr (exit code 2), never as a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from tqdm import tqdm

from cftclip_core.errors import CftClipError
from cftclip_core.formats import read_table

from annotations.db import current_revision, make_engine, safe_url, session_factory, upgrade
from annotations.importer import import_dataset, list_datasets
from annotations.settings import Settings

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m annotations",
        description="Manage the CFT-CLIP Studio database (instance folder: $CFTCLIP_INSTANCE or ./instance; "
        "database: $CFTCLIP_DATABASE_URL or instance/studio.db).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("upgrade", help="create the database or bring its schema up to date (keeps all data)")
    imp = sub.add_parser("import", help="import a dataset table (CSV, JSONL or Parquet) with its images")
    imp.add_argument("file", help="table file with columns id, image, title, summary[, label, split]")
    imp.add_argument("--name", required=True, help="name of the new dataset (must not exist yet)")
    imp.add_argument("--description", default="", help="free text shown beside the dataset")
    imp.add_argument("--skip-bad-rows", action="store_true", help="leave out bad rows and unusable images instead of refusing the file")
    imp.add_argument("--allow-private-urls", action="store_true", help="allow image URLs on local/private networks (trusted servers only)")
    imp.add_argument("--trust-pickle", action="store_true", help="allow a .pkl table; runs code from the file, so only for files you made")
    sub.add_parser("datasets", help="list the datasets in the database")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    settings = Settings.from_env()
    try:
        settings.ensure()
        upgrade(settings.database_url)
        if args.command == "upgrade":
            print(f"Database {safe_url(settings.database_url)} is at schema revision {current_revision(settings.database_url)}.")
            return 0
        engine = make_engine(settings.database_url)
        try:
            factory = session_factory(engine)
            if args.command == "import":
                return _import(args, settings, factory)
            return _list(factory)
        finally:
            engine.dispose()
    except CftClipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


def _import(args: argparse.Namespace, settings: Settings, factory) -> int:  # type: ignore[no-untyped-def]
    table = read_table(args.file, skip_bad_rows=args.skip_bad_rows, allow_pickle=args.trust_pickle)
    bar: dict[str, tqdm] = {}  # the bar of the current stage, one at a time

    def progress(stage: str, done: int, total: int) -> None:
        current = bar.get(stage)
        if current is None:
            for old in bar.values():
                old.close()
            bar.clear()
            current = bar[stage] = tqdm(total=total, desc=stage, unit="img", file=sys.stderr)
        current.update(done - current.n)

    try:
        dataset = import_dataset(
            factory,
            settings,
            table,
            args.name,
            description=args.description,
            allow_private_urls=args.allow_private_urls,
            skip_bad_rows=args.skip_bad_rows,
            progress=progress,
        )
    finally:
        for current in bar.values():
            current.close()
    skipped_rows = len({p.row for p in table.skipped})
    skipped_images = len(table.records) - dataset.item_count
    print(f"Imported dataset '{dataset.name}' (id {dataset.id}): {dataset.item_count} item(s).")
    if skipped_rows or skipped_images:
        print(f"Skipped {skipped_rows} bad row(s) and {skipped_images} item(s) with unusable images.")
    return 0


def _list(factory) -> int:  # type: ignore[no-untyped-def]
    with factory() as session:
        datasets = list_datasets(session)
    if not datasets:
        print("No datasets yet. Import one with: python -m annotations import FILE --name NAME")
        return 0
    print(f"{'id':>4}  {'items':>6}  {'created (UTC)':16}  name")
    for d in datasets:
        print(f"{d.id:>4}  {d.item_count:>6}  {d.created_at:%Y-%m-%d %H:%M}  {d.name}")
    return 0
