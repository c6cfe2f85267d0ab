"""Importing dataset tables into the database, score sets, read helpers, export and the CLI."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image
from sqlalchemy import func, select

from annotations import cli
from annotations.db import head_revision
from annotations.importer import (
    dataset_items_frame,
    ensure_demo_dataset,
    export_dataset,
    import_dataset,
    list_datasets,
    preview_import,
)
from annotations.models import Dataset, Item, Media, Score, ScoreSet
from annotations.score_sets import score_sets_for, scores_frame, store_score_set
from cftclip_core.demo import demo_table_path
from cftclip_core.errors import DataError
from cftclip_core.formats import read_table

COLORS = {"red.png": (255, 0, 0), "blue.png": (0, 0, 255), "green.jpg": (0, 160, 0)}


def _write_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, color in COLORS.items():
        Image.new("RGB", (8, 6), color).save(folder / name)
    (folder / "red_copy.png").write_bytes((folder / "red.png").read_bytes())  # same content, other name


def _write_csv(folder: Path, rows: list[dict], name: str = "table.csv") -> Path:
    path = folder / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _row(item_id: str, image: str, **extra) -> dict:
    return {"id": item_id, "image": image, "title": f"title {item_id}", "summary": f"summary {item_id}", **extra}


@pytest.fixture
def good_csv(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    _write_images(data / "img")
    rows = [
        _row("a", "img/red.png", label=1, split="val", source="x"),
        _row("b", "img/blue.png", label=0, split="test", source="y"),
        _row("c", "img/red_copy.png", label="", split="test", source="z"),
        _row("d", "img/green.jpg", label=1, split="", source=""),
    ]
    return _write_csv(data, rows)


def _counts(factory) -> dict[str, int]:
    with factory() as session:
        return {m.__name__: session.scalar(select(func.count()).select_from(m)) for m in (Dataset, Item, Media, ScoreSet, Score)}


def _store_files(instance) -> list[Path]:
    return [p for p in instance.media_dir.rglob("*") if p.is_file() and not p.name.endswith(".json")]


def test_import_stores_items_in_order_and_each_image_once(factory, instance, good_csv: Path) -> None:
    dataset = import_dataset(factory, instance, read_table(good_csv), "set1", description="four items")
    assert (dataset.name, dataset.item_count, dataset.description) == ("set1", 4, "four items")
    assert _counts(factory)["Media"] == 3  # red.png and red_copy.png are the same picture
    assert len(_store_files(instance)) == 3
    with factory() as session:
        frame = dataset_items_frame(session, dataset.id, instance)
        items = session.scalars(select(Item).order_by(Item.position)).all()
        media = session.get(Media, items[0].media_sha256)
    assert frame["external_id"].tolist() == ["a", "b", "c", "d"]
    assert frame["source_label"].tolist()[:2] == [1, 0] and pd.isna(frame["source_label"][2])
    assert frame["split"].tolist()[:3] == ["val", "test", "test"] and pd.isna(frame["split"][3])
    assert frame["media_path"][0] == frame["media_path"][2]
    assert all(Path(p).is_file() for p in frame["media_path"])
    assert Path(frame["media_path"][3]).suffix == ".jpg"
    assert (media.width, media.height, media.suffix) == (8, 6, ".png")
    assert items[0].extra == {"source": "x"} and items[0].image_url is None


def test_preview_shows_first_rows_and_skipped_rows(good_csv: Path) -> None:
    frame = pd.read_csv(good_csv, dtype=str, keep_default_na=False)
    frame.loc[1, "title"] = ""
    frame.to_csv(good_csv, index=False)
    preview = preview_import(read_table(good_csv, skip_bad_rows=True))
    assert preview.frame["id"].tolist() == ["a", "c", "d"]
    assert preview.n_items == 3 and preview.n_local_images == 3 and preview.n_url_images == 0
    assert [(p.row, p.column) for p in preview.problems] == [(2, "title")] and preview.n_bad_rows == 1


def test_bad_images_are_all_reported_and_nothing_is_written(factory, instance, good_csv: Path) -> None:
    folder = good_csv.parent
    (folder / "img" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (folder / "img" / "notes.png").write_text("just text")
    frame = pd.read_csv(good_csv, dtype=str, keep_default_na=False)
    frame.loc[len(frame)] = _row("e", "img/broken.jpg") | {"label": "", "split": "", "source": ""}
    frame.loc[len(frame)] = _row("f", "img/notes.png") | {"label": "", "split": "", "source": ""}
    frame.to_csv(good_csv, index=False)
    table = read_table(good_csv)
    before = _counts(factory)
    with pytest.raises(DataError) as info:
        import_dataset(factory, instance, table, "broken")
    message = str(info.value)
    assert "row 5, column 'image'" in message and "row 6, column 'image'" in message
    assert "nothing was imported" in message
    assert _counts(factory) == before
    assert _store_files(instance) == []  # checked before anything was copied


def test_image_that_disappeared_after_reading_is_reported(factory, instance, good_csv: Path) -> None:
    table = read_table(good_csv)
    (good_csv.parent / "img" / "blue.png").unlink()
    with pytest.raises(DataError, match="row 2, column 'image'.*does not exist"):
        import_dataset(factory, instance, table, "gone")
    assert _counts(factory)["Dataset"] == 0


def test_skip_bad_rows_imports_the_usable_items(factory, instance, good_csv: Path) -> None:
    table = read_table(good_csv)
    (good_csv.parent / "img" / "blue.png").write_text("no longer an image")
    dataset = import_dataset(factory, instance, table, "partial", skip_bad_rows=True)
    with factory() as session:
        assert dataset_items_frame(session, dataset.id, instance)["external_id"].tolist() == ["a", "c", "d"]


def test_duplicate_name_is_refused_and_nothing_is_written(factory, instance, good_csv: Path) -> None:
    import_dataset(factory, instance, read_table(good_csv), "same")
    before = _counts(factory)
    with pytest.raises(DataError, match="already exists; choose another name"):
        import_dataset(factory, instance, read_table(good_csv), " same ")
    assert _counts(factory) == before


@pytest.fixture
def image_server(tmp_path: Path) -> Iterator[str]:
    folder = tmp_path / "served"
    _write_images(folder)
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


def test_url_images_are_downloaded_into_the_store(factory, instance, tmp_path: Path, image_server: str) -> None:
    rows = [_row("u1", f"{image_server}/red.png"), _row("u2", f"{image_server}/blue.png"), _row("u3", f"{image_server}/red.png")]
    table = read_table(_write_csv(tmp_path, rows))
    with pytest.raises(DataError, match="allow"):  # local network refused by default
        import_dataset(factory, instance, table, "web")
    dataset = import_dataset(factory, instance, table, "web", allow_private_urls=True)
    with factory() as session:
        frame = dataset_items_frame(session, dataset.id, instance)
    assert frame["image_url"].tolist() == [f"{image_server}/red.png", f"{image_server}/blue.png", f"{image_server}/red.png"]
    assert frame["media_sha256"][0] == frame["media_sha256"][2]
    assert _counts(factory)["Media"] == 2
    assert Image.open(frame["media_path"][1]).getpixel((0, 0)) == (0, 0, 255)


def test_broken_url_is_reported_with_its_item(factory, instance, tmp_path: Path, image_server: str) -> None:
    rows = [_row("ok", f"{image_server}/red.png"), _row("missing", f"{image_server}/nope.png")]
    table = read_table(_write_csv(tmp_path, rows))
    with pytest.raises(DataError, match="row 2, column 'image'.*404"):
        import_dataset(factory, instance, table, "web", allow_private_urls=True)
    assert _counts(factory)["Dataset"] == 0


def test_score_set_round_trip(factory, instance, good_csv: Path) -> None:
    dataset = import_dataset(factory, instance, read_table(good_csv), "scored")
    with factory() as session:
        ids = dataset_items_frame(session, dataset.id, instance)["item_id"].tolist()
    scores = {ids[0]: (0.31, False), ids[1]: (0.12, True), ids[3]: (-0.05, False)}
    first = store_score_set(factory, dataset.id, "tiny-clip", "fp1", "title", scores, note="smoke")
    second = store_score_set(factory, dataset.id, "tiny-clip", "fp2", "summary", {ids[2]: (0.5, False)})
    assert (first.n_items, first.n_truncated) == (3, 1)
    with factory() as session:
        assert [s.id for s in score_sets_for(session, dataset.id)] == [second.id, first.id]
        frame = scores_frame(session, first.id)
    assert frame["external_id"].tolist() == ["a", "b", "d"]
    assert frame["similarity"].tolist() == pytest.approx([0.31, 0.12, -0.05])
    assert frame["truncated"].tolist() == [False, True, False]
    assert frame["source_label"].tolist() == [1, 0, 1]


def test_score_set_rejects_foreign_items_and_nan(factory, instance, good_csv: Path) -> None:
    dataset = import_dataset(factory, instance, read_table(good_csv), "scored")
    with pytest.raises(DataError, match="not items of dataset"):
        store_score_set(factory, dataset.id, "m", "fp", "title", {123456: (0.1, False)})
    with factory() as session:
        item_id = dataset_items_frame(session, dataset.id, instance)["item_id"][0]
    with pytest.raises(DataError, match="not finite"):
        store_score_set(factory, dataset.id, "m", "fp", "title", {item_id: (float("nan"), False)})
    with pytest.raises(DataError, match="Unknown text field"):
        store_score_set(factory, dataset.id, "m", "fp", "body", {item_id: (0.1, False)})
    assert _counts(factory)["ScoreSet"] == 0


def test_export_then_reimport_gives_the_same_dataset(factory, instance, good_csv: Path, tmp_path: Path) -> None:
    dataset = import_dataset(factory, instance, read_table(good_csv), "orig")
    with factory() as session:
        out = export_dataset(session, dataset.id, tmp_path / "export" / "orig.jsonl", instance)
    copy = import_dataset(factory, instance, read_table(out), "copy")
    with factory() as session:
        a = dataset_items_frame(session, dataset.id, instance)
        b = dataset_items_frame(session, copy.id, instance)
        extra = session.scalars(select(Item.extra).where(Item.dataset_id == copy.id).order_by(Item.position)).first()
    columns = ["external_id", "title", "summary", "split", "source_label", "media_sha256"]
    pd.testing.assert_frame_equal(a[columns], b[columns])
    assert extra == {"source": "x"}


def test_demo_dataset_is_imported_once(factory, instance) -> None:
    first = ensure_demo_dataset(instance, factory)
    assert first is not None and first.name == "demo"
    assert first.item_count == len(read_table(demo_table_path()))
    assert ensure_demo_dataset(instance, factory) is None
    with factory() as session:
        assert [d.name for d in list_datasets(session)] == ["demo"]


def test_demo_dataset_started_twice_at_once_gives_one_dataset(factory, instance) -> None:
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(ensure_demo_dataset(instance))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2
    assert _counts(factory)["Dataset"] == 1


@pytest.fixture
def cli_env(instance, monkeypatch):
    monkeypatch.setenv("CFTCLIP_INSTANCE", str(instance.instance_dir))
    monkeypatch.setenv("CFTCLIP_DATABASE_URL", instance.database_url)
    return instance


def test_cli_import_and_list(cli_env, good_csv: Path, capsys) -> None:
    assert cli.main(["import", str(good_csv), "--name", "from-cli", "--description", "d"]) == 0
    assert "Imported dataset 'from-cli'" in capsys.readouterr().out
    assert cli.main(["datasets"]) == 0
    listing = capsys.readouterr().out
    assert "from-cli" in listing and "4" in listing


def test_cli_bad_file_exits_2_with_message_and_imports_nothing(cli_env, good_csv: Path, capsys) -> None:
    frame = pd.read_csv(good_csv, dtype=str, keep_default_na=False)
    frame.loc[2, "label"] = "yes"
    frame.to_csv(good_csv, index=False)
    assert cli.main(["import", str(good_csv), "--name", "bad"]) == 2
    err = capsys.readouterr().err
    assert "\nerror: " in err and "row 3" in err and "Traceback" not in err  # after the image check's progress bar
    assert cli.main(["import", str(good_csv), "--name", "bad", "--skip-bad-rows"]) == 0
    out = capsys.readouterr().out
    assert "Skipped 1 bad row(s)" in out and "row 3, column 'label': 'yes' is not 0 or 1" in out
    assert cli.main(["import", str(good_csv.parent / "missing.csv"), "--name", "x"]) == 2
    assert "No table file" in capsys.readouterr().err


def test_cli_upgrade_reports_revision(cli_env, capsys) -> None:
    assert cli.main(["upgrade"]) == 0
    assert f"schema revision {head_revision()}" in capsys.readouterr().out


# --- one pass over every problem; all-or-nothing even when the disk fills ---------------------------


def _file_with_every_kind_of_problem(folder: Path) -> Path:
    from tests.test_images import png_header_only

    _write_images(folder / "img")
    whole = (folder / "img" / "green.jpg").read_bytes()
    (folder / "img" / "cut.jpg").write_bytes(whole[: len(whole) // 2])  # a truncated JPEG
    (folder / "img" / "notes.jpg").write_text("text saved under a picture's name")
    (folder / "img" / "bomb.png").write_bytes(png_header_only(30_000, 30_000))  # a decompression bomb's header
    rows = [
        _row("ok", "img/red.png", label=1, split="test"),
        _row("cut", "img/cut.jpg", label=0, split="test"),
        _row("notes", "img/notes.jpg", label=0, split="test"),
        _row("bomb", "img/bomb.png", label=0, split="test"),
        _row("x" * 201, "img/blue.png", label=0, split="test"),  # id longer than the database holds
        _row("long-split", "img/blue.png", label=0, split="s" * 51),
        _row("two-problems", "img/cut.jpg", label=2, split="test"),  # a bad label AND a bad image
        _row("also-ok", "img/green.jpg", label=0, split="val"),
    ]
    return _write_csv(folder, rows)


def test_every_problem_of_a_file_is_listed_in_one_pass_by_row(factory, instance, tmp_path: Path) -> None:
    table = read_table(_file_with_every_kind_of_problem(tmp_path / "data"), skip_bad_rows=True)
    before = _counts(factory)
    with pytest.raises(DataError) as refused:
        import_dataset(factory, instance, table, "everything")
    message = str(refused.value)
    for expected in ("row 2, column 'image': Cannot load image 'img/cut.jpg'",
                     "row 3, column 'image': Cannot load image 'img/notes.jpg': the content is not an image",
                     "row 4, column 'image': Cannot load image 'img/bomb.png'",
                     "row 5, column 'id': is 201 characters long; use at most 200",
                     "row 6, column 'split': is 51 characters long; use at most 50",
                     "row 7, column 'label': '2' is not 0 or 1",
                     "row 7, column 'image': Cannot load image 'img/cut.jpg'"):  # rejected rows' images too
        assert expected in message
    assert "7 problem(s) in 6 row(s); nothing was imported" in message and "row 1," not in message
    assert _counts(factory) == before and _store_files(instance) == []

    preview = preview_import(table, instance)  # the page's preview finds the same, before any import
    assert [(p.row, p.column) for p in preview.problems] == [
        (2, "image"), (3, "image"), (4, "image"), (5, "id"), (6, "split"), (7, "label"), (7, "image")]
    assert preview.n_items == 2 and preview.n_bad_rows == 6


def test_cli_skip_bad_rows_lists_every_skipped_row_with_why(cli_env, tmp_path: Path, capsys) -> None:
    path = _file_with_every_kind_of_problem(tmp_path / "data")
    assert cli.main(["import", str(path), "--name", "some"]) == 2
    err = capsys.readouterr().err
    assert "7 problem(s) in 6 row(s)" in err and "Traceback" not in err
    assert cli.main(["import", str(path), "--name", "some", "--skip-bad-rows"]) == 0
    out = capsys.readouterr().out
    assert "Imported dataset 'some'" in out and ": 2 item(s)." in out and "Skipped 6 bad row(s):" in out
    for row, column in ((2, "image"), (3, "image"), (4, "image"), (5, "id"), (6, "split"), (7, "label")):
        assert f"  - row {row}, column '{column}': " in out
    with cli.make_engine(cli_env.database_url).connect() as conn:
        ids = conn.execute(select(Item.external_id).order_by(Item.position)).scalars().all()
    assert ids == ["ok", "also-ok"]


def test_non_utf8_file_names_line_and_column(cli_env, tmp_path: Path, capsys) -> None:
    _write_images(tmp_path / "img")
    path = tmp_path / "latin.csv"
    path.write_bytes("id,image,title,summary\na,img/red.png,Fine,Fine\nb,img/red.png,Caf\xe9 owner,x\n".encode("latin-1"))
    assert cli.main(["import", str(path), "--name", "latin"]) == 2
    err = capsys.readouterr().err
    assert "line 3, column 18 holds the byte 0xe9" in err and "iconv" in err


def _fail_nth_copy(monkeypatch: pytest.MonkeyPatch, nth: int) -> None:
    """The media store's ``nth`` file copy finds the disk full (ENOSPC), as a real full disk would."""
    import errno

    from cftclip_core import media_store as store_module

    real = store_module.os.fsync
    calls = {"n": 0}

    def fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] >= nth:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(store_module.os, "fsync", fsync)


def test_full_media_disk_one_message_and_the_files_already_copied_are_removed(
    cli_env, good_csv: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    _fail_nth_copy(monkeypatch, nth=3)  # two images are copied, the third finds the disk full
    assert cli.main(["import", str(good_csv), "--name", "full"]) == 2
    err = capsys.readouterr().err
    assert "error: Cannot save a file in the media store" in err and "the disk is full" in err
    assert "Traceback" not in err and err.count("error:") == 1
    assert _store_files(cli_env) == []  # the two copies made before the failure are gone
    assert not [p for p in cli_env.media_dir.rglob(".tmp-*")]


def _database_full_on_items(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inserting items fails as SQLite does on a full disk (the error carries the SQL and its values)."""
    import sqlite3

    from sqlalchemy.engine import default

    for name in ("do_execute", "do_executemany"):
        real = getattr(default.DefaultDialect, name)

        def failing(self, cursor, statement, parameters, context=None, _real=real):  # noqa: ANN001, ANN202
            if statement.startswith("INSERT INTO items"):
                raise sqlite3.OperationalError("database or disk is full")
            return _real(self, cursor, statement, parameters, context)

        monkeypatch.setattr(default.DefaultDialect, name, failing)


def test_full_database_disk_one_message_without_sql_and_media_taken_back(
    cli_env, good_csv: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    if not cli_env.database_url.startswith("sqlite"):
        pytest.skip("simulates SQLite's own error")
    with monkeypatch.context() as full:  # only the disk comes back; the instance's settings stay
        _database_full_on_items(full)
        assert cli.main(["import", str(good_csv), "--name", "full"]) == 2
    err = capsys.readouterr().err
    assert "error: The database's disk is full." in err and "nothing was saved" in err
    assert "INSERT" not in err and "title a" not in err and "Traceback" not in err  # no SQL, no bound values
    assert _store_files(cli_env) == []
    assert cli.main(["datasets"]) == 0 and "No datasets yet" in capsys.readouterr().out


def test_a_failed_import_keeps_media_that_another_dataset_uses(factory, instance, good_csv: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import_dataset(factory, instance, read_table(good_csv), "first")
    kept = _store_files(instance)
    folder = good_csv.parent
    Image.new("RGB", (8, 6), (9, 9, 9)).save(folder / "img" / "new.png")
    frame = pd.read_csv(good_csv, dtype=str, keep_default_na=False)
    frame.loc[len(frame)] = _row("e", "img/new.png") | {"label": "", "split": "", "source": ""}
    frame.to_csv(good_csv, index=False)
    if instance.database_url.startswith("sqlite"):
        _database_full_on_items(monkeypatch)
    else:  # the same path through the importer: the insert fails after the copies
        monkeypatch.setattr("annotations.importer._insert_dataset", lambda *a, **k: (_ for _ in ()).throw(
            DataError("simulated")))
    with pytest.raises(Exception):  # noqa: B017 - the kind depends on the database; the files are the point
        import_dataset(factory, instance, read_table(good_csv), "second")
    assert sorted(_store_files(instance)) == sorted(kept)  # only new.png's copy was taken back
