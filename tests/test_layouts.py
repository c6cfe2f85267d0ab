"""Datasets as distributed: NewsTT's pickle and CSV, the original code's training pickles, a BBC / M3LS-style
corpus (a table or a folder of JSON articles), read through a layout instead of a hand conversion."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cftclip_core.cli import main as cftclip_main
from cftclip_core.errors import DataError
from cftclip_core.formats import read_table
from cftclip_core.layouts import load_table, parse_mapping
from tests.conftest import make_image

NEWSTT_ROWS = [  # the README's two examples and a third, as the authors' DataFrame holds them
    {"image_id": "a1.jpg", "summary": "In their first call, Biden presses Putin on Navalny arrest.", "label": 1,
     "NTT": [("Biden", "PERSON", (21, 26))]},
    {"image_id": "b2.png", "summary": "Pastor of a church in California works in an entertainment industry.",
     "label": 0, "NTT": []},
    {"image_id": "c3.jpg", "summary": "Mara Velk opened the new library on Friday.", "label": 1, "NTT": []},
]


def images(folder: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        make_image(folder / name, colour=(40 * i, 90, 200 - 40 * i))


@pytest.fixture
def newstt_pickle(tmp_path: Path) -> Path:
    """NewsTT as the authors hand it out: annotation.pkl with images/ beside it."""
    images(tmp_path / "newstt" / "images", [r["image_id"] for r in NEWSTT_ROWS])
    path = tmp_path / "newstt" / "annotation.pkl"
    pd.DataFrame(NEWSTT_ROWS).to_pickle(path)
    return path


def test_newstt_pickle_reads_as_distributed_only_when_trusted(newstt_pickle: Path) -> None:
    with pytest.raises(DataError, match="pickle.*--trust-pickle"):
        load_table(newstt_pickle, "newstt")
    table = load_table(newstt_pickle, "newstt", allow_pickle=True)
    assert [r.id for r in table.records] == ["a1", "b2", "c3"]
    assert [r.image for r in table.records] == ["images/a1.jpg", "images/b2.png", "images/c3.jpg"]
    assert [r.label for r in table.records] == [1, 0, 1]
    first = table.records[0]
    assert first.title == first.summary == NEWSTT_ROWS[0]["summary"]  # NewsTT's pickle has no title column
    assert table.image_path(first).is_file() and "ntt" in first.extra


def test_newstt_csv_with_the_readme_field_names_and_an_images_folder_of_its_own(tmp_path: Path) -> None:
    images(tmp_path / "thumbs", ["x.jpg", "y.jpg"])
    frame = pd.DataFrame({"Image": ["x.jpg", "y.jpg"], "Title": ["Biden meets Putin", "A church"],
                          "Summary": ["Biden met Putin.", "A church opened."], "Label": [1, 0]})
    frame.to_csv(tmp_path / "newstt.csv", index=False)
    table = load_table(tmp_path / "newstt.csv", "newstt", image_dir="thumbs")
    assert [(r.id, r.image, r.title, r.label) for r in table.records] == [
        ("x", "thumbs/x.jpg", "Biden meets Putin", 1), ("y", "thumbs/y.jpg", "A church", 0)]


def test_mapping_names_other_columns_and_mistakes_say_what_to_type(tmp_path: Path) -> None:
    images(tmp_path / "images", ["p.jpg"])
    pd.DataFrame({"img": ["p.jpg"], "text": ["Ann Lee spoke."], "gold": [1]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match=r"no column for image, summary.*--map image=YOUR_COLUMN"):
        load_table(tmp_path / "t.csv", "newstt")
    table = load_table(tmp_path / "t.csv", "newstt", mapping=parse_mapping("image=img, summary=text, label=gold"))
    assert [(r.id, r.image, r.summary, r.label) for r in table.records] == [("p", "images/p.jpg", "Ann Lee spoke.", 1)]
    with pytest.raises(DataError, match="has no column 'picture'"):
        load_table(tmp_path / "t.csv", "newstt", mapping={"image": "picture"})
    for bad, message in (("image", "not TABLE_COLUMN=SOURCE_COLUMN"), ("photo=img", "not a table column")):
        with pytest.raises(DataError, match=message):
            parse_mapping(bad)
    with pytest.raises(DataError, match="go with --layout"):
        load_table(tmp_path / "t.csv", mapping={"image": "img"})


def test_original_training_pickle_brings_its_counterfactuals(tmp_path: Path) -> None:
    images(tmp_path / "imagefolder", ["1.jpg", "2.jpg"])
    pd.DataFrame({"image_id": ["1.jpg", "2.jpg"], "summary": ["Ann Lee spoke.", "Tom Bell left."],
                  "predict_t2_0": ["kim spoke.", "##x left."], "predict_t2_0_cossim": [0.1, 0.2]}).to_pickle(
        tmp_path / "train_ntt_cossim_CFT.pkl")
    table = load_table(tmp_path / "train_ntt_cossim_CFT.pkl", "cft-original", allow_pickle=True)
    assert [r.extra["counterfactual"] for r in table.records] == ["kim spoke.", "##x left."]
    assert table.records[0].image == "imagefolder/1.jpg" and "predict_t2_0_cossim" in table.records[0].extra


def test_m3ls_style_corpus_folder_of_json_articles(tmp_path: Path) -> None:
    corpus = tmp_path / "english"
    images(corpus / "imagefolder", ["h1##0##t.jpg", "h2##0##t.jpg"])
    (corpus / "processed").mkdir()
    articles = [
        {"title": "Mara Velk wins", "summary": "Mara Velk won the race.", "images": [["h1##0##t.jpg", "caption"]]},
        {"title": "Dora Nim speaks", "summary": "Dora Nim gave a speech.", "images": [["h2##0##t.jpg", "c"]]},
        {"title": "No picture", "summary": "An article without images.", "images": []},
    ]
    for i, article in enumerate(articles):
        (corpus / "processed" / f"{i}.json").write_text(json.dumps(article))
    with pytest.raises(DataError, match="row 3, column 'image'"):
        load_table(corpus, "m3ls")
    table = load_table(corpus, "m3ls", skip_bad_rows=True)
    assert [(r.id, r.image, r.title) for r in table.records] == [
        ("h1##0##t", "imagefolder/h1##0##t.jpg", "Mara Velk wins"), ("h2##0##t", "imagefolder/h2##0##t.jpg",
                                                                     "Dora Nim speaks")]
    assert table.records[0].extra["source_file"] == "0.json"


def test_m3ls_style_table_and_convert_to_the_products_layout(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    monkeypatch.setenv("CFTCLIP_INSTANCE", str(tmp_path / "instance"))
    images(tmp_path / "bbc" / "imagefolder", ["a.jpg", "b.jpg"])
    pd.DataFrame({"image": ["a.jpg", "b.jpg"], "title": ["Ann Lee wins", "Tom Bell loses"],
                  "summary": ["Ann Lee won.", "Tom Bell lost."]}).to_parquet(tmp_path / "bbc" / "bbc.parquet")
    out = tmp_path / "bbc.csv"  # a folder above the data: image paths are rewritten from there
    assert cftclip_main(["convert", "--data", str(tmp_path / "bbc" / "bbc.parquet"), "--layout", "m3ls",
                         "--out", str(out)]) == 0
    table = read_table(out)
    assert [r.image for r in table.records] == ["bbc/imagefolder/a.jpg", "bbc/imagefolder/b.jpg"]
    assert "wrote 2 items" in capsys.readouterr().out
    assert cftclip_main(["convert", "--data", str(tmp_path / "bbc" / "bbc.parquet"), "--layout", "m3ls",
                         "--out", str(tmp_path / "elsewhere" / "bbc.csv")]) == 2
    assert "or a folder above it" in capsys.readouterr().err


def test_score_and_counterfactual_read_newstt_as_distributed(newstt_pickle: Path, tiny_model_dir: Path,
                                                             tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("CFTCLIP_INSTANCE", str(tmp_path / "instance"))
    scores = tmp_path / "scores.csv"
    assert cftclip_main(["score", "--data", str(newstt_pickle), "--layout", "newstt", "--trust-pickle", "--model",
                         str(tiny_model_dir), "--out", str(scores)]) == 0
    assert pd.read_csv(scores)["id"].tolist() == ["a1", "b2", "c3"]
    cf = newstt_pickle.with_name("cf.csv")
    assert cftclip_main(["counterfactual", "--data", str(newstt_pickle), "--layout", "newstt", "--trust-pickle",
                         "--recipe", "offline", "--out", str(cf)]) == 0
    assert read_table(cf).records[2].extra["cf_status"] == "ok"


@pytest.fixture
def cli_env(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFTCLIP_INSTANCE", str(tmp_path / "instance"))
    monkeypatch.setenv("CFTCLIP_DATABASE_URL", db_url)


def test_studio_import_takes_newstt_as_distributed(cli_env, newstt_pickle: Path, capsys) -> None:  # noqa: ANN001
    from annotations import cli
    from annotations.db import make_engine, session_factory
    from annotations.importer import dataset_items_frame, get_dataset_by_name
    from annotations.settings import Settings

    assert cli.main(["import", str(newstt_pickle), "--name", "newstt", "--layout", "newstt"]) == 2
    assert "--trust-pickle" in capsys.readouterr().err
    assert cli.main(["import", str(newstt_pickle), "--name", "newstt", "--layout", "newstt", "--trust-pickle"]) == 0
    settings = Settings.from_env()
    with session_factory(make_engine(settings.database_url))() as session:
        items = dataset_items_frame(session, get_dataset_by_name(session, "newstt").id, settings)
    assert items["external_id"].tolist() == ["a1", "b2", "c3"]
    assert items["source_label"].tolist() == [1, 0, 1]
