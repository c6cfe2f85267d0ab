"""Command line for the studio database: ``python -m annotations {upgrade,import,datasets,users}``.

The instance folder and database come from ``CFTCLIP_INSTANCE`` / ``CFTCLIP_DATABASE_URL``.
Errors a user can fix are printed as one message on stderr (exit code 2), never as a traceback.
"""

from __future__ import annotations

import argparse
import errno
import getpass
import logging
import sys
from collections.abc import Sequence

from tqdm import tqdm

from annotations.db import current_revision, make_engine, safe_url, session_factory, upgrade
from annotations.importer import get_dataset_by_name, import_table, list_datasets
from annotations.models import ROLES
from annotations.review import export_labels
from annotations.settings import Settings
from annotations.users import (
    AuthError,
    create_user,
    get_user,
    list_users,
    normalize_username,
    reset_password,
    set_active,
    set_role,
)
from cftclip_core.errors import CftClipError
from cftclip_core.formats import problems_message
from cftclip_core.layouts import LAYOUTS, load_table, parse_mapping
from cftclip_core.media_store import storage_error

EXIT_USER_ERROR = 2
FULL_DISK = {errno.ENOSPC, errno.EDQUOT}


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
    imp.add_argument("--skip-bad-rows", action="store_true",
                     help="leave out rows with problems (bad values, unusable images) instead of refusing the file; "
                          "each is listed")
    imp.add_argument("--allow-private-urls", action="store_true", help="allow image URLs on local/private networks (trusted servers only)")
    imp.add_argument("--trust-pickle", action="store_true", help="allow a .pkl table; runs code from the file, so only for files you made")
    imp.add_argument("--layout", choices=list(LAYOUTS), default=None,
                     help="import a dataset as distributed (e.g. newstt: image_id, summary, label, images/ beside it)")
    imp.add_argument("--map", default=None, metavar="COLUMN=SOURCE,...",
                     help="with --layout: take a table column from another source column, e.g. image=img_path")
    imp.add_argument("--images", default=None, metavar="DIR",
                     help="with --layout: the images' folder, relative to the file's folder (default: the layout's)")
    sub.add_parser("datasets", help="list the datasets in the database")
    export = sub.add_parser("export", help="write a dataset with its labels (NewsTT layout) and its images")
    export.add_argument("dataset", help="dataset name")
    export.add_argument("out", help="table to write (.csv or .jsonl); images go to images/ beside it")
    _add_users_parser(sub)
    return parser


def _add_users_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    users = sub.add_parser("users", help="add users, reset passwords, change roles, (de)activate and list users")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    stdin_help = ("read the password from the first line of standard input instead of asking twice "
                  "(needed when there is no terminal, e.g. in scripts)")
    add = users_sub.add_parser("add", help="add a user (asks for the password twice)")
    add.add_argument("username", help="2-80 characters: a-z, 0-9, '.', '_', '-' (stored lower-case)")
    add.add_argument("--role", required=True, choices=ROLES, help="what the user may do")
    add.add_argument("--name", default="", help="display name shown in the app")
    add.add_argument("--password-stdin", action="store_true", help=stdin_help)
    reset = users_sub.add_parser("reset-password", help="set a new password; signs the user out everywhere")
    reset.add_argument("username")
    reset.add_argument("--password-stdin", action="store_true", help=stdin_help)
    role = users_sub.add_parser("set-role", help="change a user's role")
    role.add_argument("username")
    role.add_argument("role", choices=ROLES)
    users_sub.add_parser("deactivate", help="block a user from signing in and sign them out").add_argument("username")
    users_sub.add_parser("activate", help="allow a deactivated user to sign in again").add_argument("username")
    users_sub.add_parser("list", help="list users with their role and whether they are active")


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
            if args.command == "users":
                return _users(args, factory)
            if args.command == "export":
                return _export(args, settings, factory)
            return _list(factory)
        finally:
            engine.dispose()
    except CftClipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:  # e.g. a full disk while making the instance folder; other OS errors are bugs
        if exc.errno not in FULL_DISK:
            raise
        print(f"error: {storage_error(exc, f'in the instance folder ({settings.instance_dir})')}", file=sys.stderr)
        return EXIT_USER_ERROR


def _import(args: argparse.Namespace, settings: Settings, factory) -> int:  # type: ignore[no-untyped-def]
    # Every row problem travels with the table, so that import_table lists them with the image problems.
    table = load_table(args.file, args.layout, mapping=parse_mapping(args.map), image_dir=args.images,
                       skip_bad_rows=True, allow_pickle=args.trust_pickle)
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
        result = import_table(
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
    dataset = result.dataset
    print(f"Imported dataset '{dataset.name}' (id {dataset.id}): {dataset.item_count} item(s).")
    if result.skipped:
        rows = len({p.row for p in result.skipped})
        print(problems_message(f"Skipped {rows} bad row(s):", result.skipped))
    return 0


def _export(args: argparse.Namespace, settings: Settings, factory) -> int:  # type: ignore[no-untyped-def]
    with factory() as session:
        dataset = get_dataset_by_name(session, args.dataset)
        path = export_labels(session, dataset.id, args.out, settings)
    print(f"Wrote {dataset.item_count} item(s) of '{dataset.name}' with their labels to {path}.")
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


def _users(args: argparse.Namespace, factory) -> int:  # type: ignore[no-untyped-def]
    command = args.users_command
    if command == "list":
        return _list_users(factory)
    if command == "add":
        normalize_username(args.username)  # refuse a bad name before asking for a password
        user = create_user(factory, args.username, _read_password(args.password_stdin), args.role, args.name)
        print(f"Created {user.role} '{user.username}'.")
        with factory() as session:
            if not any(u.role == "admin" and u.active for u in list_users(session)):
                print("Note: there is no active admin yet; add one with: python -m annotations users add NAME --role admin",
                      file=sys.stderr)
        return 0
    if command == "reset-password":
        with factory() as session:
            get_user(session, args.username)  # refuse an unknown name before asking for a password
        reset_password(factory, args.username, _read_password(args.password_stdin))
        print(f"Password of '{normalize_username(args.username)}' changed; they were signed out everywhere.")
        return 0
    if command == "set-role":
        user = set_role(factory, args.username, args.role)
        print(f"'{user.username}' is now {user.role}.")
        return 0
    user = set_active(factory, args.username, command == "activate")
    print(f"'{user.username}' is now {'active' if user.active else 'deactivated and signed out'}.")
    return 0


def _read_password(from_stdin: bool) -> str:
    """The new password, from stdin's first line or typed twice without echo. Never printed.

    Without a terminal, getpass would read standard input anyway, echoing and warning: refused, so
    that a password is read from a pipe only when asked (--password-stdin)."""
    if not from_stdin and not sys.stdin.isatty():
        raise AuthError("There is no terminal to type the password in, so nothing was changed. Pass it on standard "
                        "input with --password-stdin, e.g. printf '%s\\n' \"$PASSWORD\" | python -m annotations users "
                        "add NAME --role ROLE --password-stdin")
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise AuthError("No password on standard input: pass one line holding the password, "
                            "e.g. printf '%s\\n' \"$PASSWORD\" | python -m annotations users ... --password-stdin")
        return password
    try:
        first = getpass.getpass("New password: ")
        second = getpass.getpass("Repeat the new password: ")
    except (EOFError, KeyboardInterrupt):
        raise AuthError("No password was given, so nothing was changed. Run the command again, "
                        "or use --password-stdin.") from None
    if first != second:
        raise AuthError("The two passwords differ, so nothing was changed. Run the command again and "
                        "type the same password twice.")
    return first


def _list_users(factory) -> int:  # type: ignore[no-untyped-def]
    with factory() as session:
        users = list_users(session)
    if not users:
        print("No users yet. Add the first admin with: python -m annotations users add NAME --role admin")
        return 0
    width = max(len("username"), *(len(u.username) for u in users))
    print(f"{'username':{width}}  {'role':10}  {'active':6}  name")
    for u in users:
        print(f"{u.username:{width}}  {u.role:10}  {'yes' if u.active else 'no':6}  {u.display_name}")
    return 0
