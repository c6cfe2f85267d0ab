"""Reading dataset tables: every bad input gets one clear error and loads nothing."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pandas as pd
import pytest

from cftclip_core.errors import DataError
from cftclip_core.formats import Record, read_table, write_table
from tests.conftest import make_image

GOOD = {"id": "a1", "image": "img/a.jpg", "title": "Mayor opens bridge", "summary": "The mayor opened it.",
        "label": "1", "split": "test"}


def table_dir(tmp_path: Path, rows: list[dict], name: str = "data.csv") -> Path:
    make_image(tmp_path / "img" / "a.jpg")
    make_image(tmp_path / "img" / "b.jpg", colour=(0, 0, 200))
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_reads_valid_csv_with_labels_splits_and_extra_columns(tmp_path: Path) -> None:
    rows = [GOOD, {**GOOD, "id": "a2", "image": "img/b.jpg", "label": "", "split": "", "person": "Ann"}]
    table = read_table(table_dir(tmp_path, rows))
    assert [r.id for r in table.records] == ["a1", "a2"]
    assert table.records[0].label == 1 and table.records[1].label is None
    assert table.records[1].split is None
    assert table.records[1].extra["person"] == "Ann"
    assert table.image_path(table.records[1]) == (tmp_path / "img" / "b.jpg").resolve()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_write_then_read_round_trips_every_format(tmp_path: Path, suffix: str) -> None:
    make_image(tmp_path / "img" / "a.jpg")
    records = [Record("x1", "img/a.jpg", "T <b>1</b>", "S *one*", 1, "val"),
               Record("x2", "https://example.org/p.jpg", "T2", "S2", None, None)]
    path = write_table(records, tmp_path / f"t{suffix}")
    table = read_table(path)
    assert [(r.id, r.image, r.title, r.summary, r.label, r.split) for r in table.records] == [
        (r.id, r.image, r.title, r.summary, r.label, r.split) for r in records
    ]


def test_missing_columns_are_named(tmp_path: Path) -> None:
    path = table_dir(tmp_path, [{"id": "a", "image": "img/a.jpg", "title": "t"}])
    with pytest.raises(DataError, match="lacks the column.*summary"):
        read_table(path)


def test_all_bad_rows_reported_at_once_with_row_numbers(tmp_path: Path) -> None:
    rows = [
        GOOD,
        {**GOOD, "id": "a1"},  # duplicate id
        {**GOOD, "id": "c", "title": "  "},  # empty text
        {**GOOD, "id": "d", "label": "2"},  # label not 0/1
        {**GOOD, "id": "e", "image": "../secret.jpg"},  # escapes the folder
        {**GOOD, "id": "f", "image": "img/missing.jpg"},  # missing image
        {**GOOD, "id": "g", "image": "/etc/passwd"},  # absolute path
    ]
    with pytest.raises(DataError) as caught:
        read_table(table_dir(tmp_path, rows))
    message = str(caught.value)
    for expected in ("row 2, column 'id': duplicate id 'a1' (first in row 1)", "row 3, column 'title': is empty",
                     "row 4, column 'label': '2' is not 0 or 1", "row 5, column 'image'", "outside the table's folder",
                     "row 6, column 'image': file 'img/missing.jpg' not found", "row 7, column 'image'"):
        assert expected in message
    assert "nothing was loaded" in message


def test_skip_bad_rows_keeps_the_good_ones_and_lists_the_rest(tmp_path: Path) -> None:
    rows = [GOOD, {**GOOD, "id": "b", "label": "yes"}]
    table = read_table(table_dir(tmp_path, rows), skip_bad_rows=True)
    assert [r.id for r in table.records] == ["a1"]
    assert [p.row for p in table.skipped] == [2]


def test_image_link_escaping_the_folder_is_refused(tmp_path: Path) -> None:
    outside = make_image(tmp_path / "outside" / "x.jpg")
    data = tmp_path / "data"
    data.mkdir()
    (data / "link.jpg").symlink_to(outside)
    path = table_dir(data, [{**GOOD, "image": "link.jpg"}])
    with pytest.raises(DataError, match="leads outside the table's folder"):
        read_table(path)


def test_non_utf8_csv_says_how_to_convert(tmp_path: Path) -> None:
    make_image(tmp_path / "img" / "a.jpg")
    path = tmp_path / "latin.csv"
    path.write_bytes("id,image,title,summary\nx,img/a.jpg,Caf\xe9 owner,Se\xf1or speaks\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8.*iconv"):
        read_table(path)


def test_wrong_types_in_jsonl_are_reported(tmp_path: Path) -> None:
    make_image(tmp_path / "img" / "a.jpg")
    path = tmp_path / "t.jsonl"
    rows = [GOOD, {**GOOD, "id": "b", "title": ["not", "text"]}, {**GOOD, "id": 7, "label": 1}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DataError) as caught:
        read_table(path)
    assert "row 2, column 'title': expected text, got list" in str(caught.value)
    assert "row 3" not in str(caught.value)  # a numeric id is fine, it is read as text


def test_broken_jsonl_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(GOOD) + "\n{not json\n")
    with pytest.raises(DataError, match="line 2, column 2 is not valid JSON"):
        read_table(path)


def test_pickle_needs_the_trust_flag(tmp_path: Path) -> None:
    make_image(tmp_path / "img" / "a.jpg")
    path = tmp_path / "annotation.pkl"
    with path.open("wb") as handle:
        pickle.dump(pd.DataFrame([GOOD]), handle)
    with pytest.raises(DataError, match="--trust-pickle"):
        read_table(path)
    assert read_table(path, allow_pickle=True).records[0].id == "a1"


def test_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(DataError, match=r"\.csv, \.jsonl or \.parquet"):
        read_table(tmp_path / "t.xlsx")
    with pytest.raises(DataError, match="No table file"):
        read_table(tmp_path / "nope.csv")


def test_url_images_are_kept_as_urls(tmp_path: Path) -> None:
    table = read_table(table_dir(tmp_path, [{**GOOD, "image": "https://news.example/a.jpg"}]))
    assert table.records[0].image_is_url
    with pytest.raises(DataError, match="fetch it first"):
        table.image_path(table.records[0])


def test_non_text_split_is_a_row_problem(tmp_path: Path) -> None:
    make_image(tmp_path / "img" / "a.jpg")
    path = tmp_path / "t.jsonl"
    rows = [GOOD, {**GOOD, "id": "b", "split": ["val", "test"]}, {**GOOD, "id": "c", "split": {"name": "val"}}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DataError) as caught:
        read_table(path)
    assert "row 2, column 'split': expected text, got list" in str(caught.value)
    assert "row 3, column 'split': expected text, got dict" in str(caught.value)
    assert [r.id for r in read_table(path, skip_bad_rows=True).records] == ["a1"]


def test_malformed_image_urls_are_row_problems(tmp_path: Path) -> None:
    rows = [{**GOOD, "id": "a", "image": "http://[::1/x.jpg"}, {**GOOD, "id": "b", "image": "https:///x.jpg"},
            {**GOOD, "id": "c", "image": "https://news.example/c.jpg"}]
    with pytest.raises(DataError) as caught:
        read_table(table_dir(tmp_path, rows))
    message = str(caught.value)
    assert "row 1, column 'image'" in message and "row 2, column 'image'" in message and "row 3" not in message


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    make_image(tmp_path / "img" / "a.jpg")
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffid,image,title,summary\nx,img/a.jpg,T,S\n".encode())  # as "CSV UTF-8" spreadsheets save
    assert read_table(path).records[0].id == "x"


def test_a_non_utf8_byte_is_located_by_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + '{"id": "\xe9t\xe9"}'.encode("latin-1") + b"\n")
    with pytest.raises(DataError, match="line 2, column 9 holds the byte 0xe9"):
        read_table(path, name="upload.jsonl")


def test_over_long_ids_and_splits_are_row_problems(tmp_path: Path) -> None:
    rows = [GOOD, {**GOOD, "id": "i" * 201}, {**GOOD, "id": "b", "split": "s" * 51}]
    with pytest.raises(DataError) as caught:
        read_table(table_dir(tmp_path, rows))
    assert "row 2, column 'id': is 201 characters long; use at most 200" in str(caught.value)
    assert "row 3, column 'split': is 51 characters long; use at most 50" in str(caught.value)
    assert [r.id for r in read_table(table_dir(tmp_path, rows), skip_bad_rows=True).records] == ["a1"]
