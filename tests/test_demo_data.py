"""Checks on the bundled demo dataset (cftclip_core/demo_data)."""

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

DEMO_DIR = Path(__file__).resolve().parents[1] / "cftclip_core" / "demo_data"
CSV_PATH = DEMO_DIR / "demo.csv"
IMAGE_DIR = DEMO_DIR / "images"
COLUMNS = ["id", "image", "title", "summary", "label", "split"]


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return pd.read_csv(CSV_PATH, dtype=str, keep_default_na=False, encoding="utf-8")


def test_columns_are_the_table_format(table: pd.DataFrame) -> None:
    assert list(table.columns) == COLUMNS


def test_row_count_in_range(table: pd.DataFrame) -> None:
    assert 24 <= len(table) <= 40


def test_ids_unique_and_non_empty(table: pd.DataFrame) -> None:
    assert (table["id"].str.strip() != "").all()
    assert table["id"].is_unique


def test_texts_non_empty_and_titles_single_line(table: pd.DataFrame) -> None:
    for column in ("title", "summary"):
        assert (table[column].str.strip() != "").all(), column
    assert not table["title"].str.contains("\n").any()


def test_every_listed_image_exists_and_decodes(table: pd.DataFrame) -> None:
    for rel in table["image"].unique():
        path = DEMO_DIR / rel
        assert path.is_file(), f"{rel} listed in demo.csv but missing"
        with Image.open(path) as im:
            im.load()
            assert max(im.size) <= 640, f"{rel} is larger than 640 px"


def test_distinct_photo_count(table: pd.DataFrame) -> None:
    assert 12 <= table["image"].nunique() <= 30


def test_every_image_file_is_used_and_licensed(table: pd.DataFrame) -> None:
    licenses = (DEMO_DIR / "LICENSES.md").read_text(encoding="utf-8")
    files = sorted(p for p in IMAGE_DIR.iterdir() if p.is_file())
    assert files
    used = {DEMO_DIR / rel for rel in table["image"]}
    for path in files:
        rel = path.relative_to(DEMO_DIR).as_posix()
        assert f"`{rel}`" in licenses, f"{rel} has no entry in LICENSES.md"
        assert path in used, f"{rel} is not used by demo.csv"


def test_labels_are_binary(table: pd.DataFrame) -> None:
    assert set(table["label"]) <= {"0", "1"}


def test_both_labels_in_each_split(table: pd.DataFrame) -> None:
    assert set(table["split"]) == {"val", "test"}
    for split, rows in table.groupby("split"):
        assert set(rows["label"]) == {"0", "1"}, f"split {split} lacks a label"
    assert 0.2 <= (table["split"] == "val").mean() <= 0.45


def test_has_a_row_with_markup_characters(table: pd.DataFrame) -> None:
    markup = table["summary"].str.contains("<b>", regex=False) & table["summary"].str.contains(
        "*", regex=False
    )
    assert markup.any()


def test_folder_stays_small() -> None:
    total = sum(p.stat().st_size for p in DEMO_DIR.rglob("*") if p.is_file())
    assert total < 3 * 1024 * 1024
