"""The command line a researcher uses without the app: score, eval, models, synthetic."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from cftclip_core.cli import main
from cftclip_core.demo import demo_table_path
from tests.conftest import make_image
from tests.test_images import png_header_only


@pytest.fixture(autouse=True)
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CFTCLIP_INSTANCE", str(tmp_path / "instance"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "instance"


def test_score_and_evaluate_the_demo_set(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "scores.csv"
    assert main(["score", "--data", str(demo_table_path()), "--model", str(tiny_model_dir), "--out", str(out)]) == 0
    scores = pd.read_csv(out)
    demo = pd.read_csv(demo_table_path())
    assert scores["id"].tolist() == demo["id"].tolist()
    assert scores["similarity"].between(-1, 1).all()
    assert set(scores["text_field"]) == {"summary"} and scores["model_fingerprint"].str.startswith("sha256:").all()
    assert "random weights" in capsys.readouterr().err

    for threshold in ("val-median", "f1-optimal", "0.05"):
        assert main(["eval", "--scores", str(out), "--threshold", threshold, "--bootstrap", "50",
                     "--out", str(tmp_path / "report.json")]) == 0
        report = json.loads((tmp_path / "report.json").read_text())
        n_test = int((demo["split"] != "val").sum())
        assert report["n"] == n_test and report["n_validation"] == len(demo) - n_test
        assert report["threshold"]["strategy"] == ("fixed" if threshold == "0.05" else threshold)
        assert 0 <= report["metrics"]["f1"]["value"] <= 1


def test_score_synthetic_set_by_title(tmp_path: Path, tiny_model_dir: Path) -> None:
    assert main(["synthetic", str(tmp_path / "syn"), "--items", "24", "--seed", "3"]) == 0
    out = tmp_path / "syn_scores.csv"
    assert main(["score", "--data", str(tmp_path / "syn" / "data.csv"), "--model", str(tiny_model_dir),
                 "--text", "title", "--out", str(out), "--precision", "fp32"]) == 0
    scores = pd.read_csv(out)
    assert len(scores) == 24 and set(scores["split"]) <= {"train", "val", "test"}
    assert (scores["text_field"] == "title").all()


def test_synthetic_takes_options_in_any_order_and_shows_its_help(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    with pytest.raises(SystemExit) as help_exit:
        main(["synthetic", "--help"])
    assert help_exit.value.code == 0 and "--items" in capsys.readouterr().out
    assert main(["synthetic", "--items", "12", "--seed", "1", str(tmp_path / "syn")]) == 0
    assert len(pd.read_csv(tmp_path / "syn" / "data.csv")) == 12
    assert main(["synthetic", "--items", "12", str(tmp_path / "syn")]) == 2  # not over an existing set
    assert "--overwrite" in capsys.readouterr().err


def test_tiny_demo_name_works_from_the_command_line(tmp_path: Path, instance: Path) -> None:
    out = tmp_path / "s.csv"
    assert main(["score", "--data", str(demo_table_path()), "--model", "tiny-demo", "--out", str(out)]) == 0
    assert (instance / "models" / "tiny-demo-v1").is_dir() and (instance / "cache" / "embeddings.sqlite").is_file()


def test_user_mistakes_exit_2_with_a_message_and_no_output(tmp_path: Path, tiny_model_dir: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "s.csv"
    assert main(["score", "--data", str(demo_table_path()), "--model", "nobody/unknown-clip", "--out", str(out)]) == 2
    assert "Cannot load model 'nobody/unknown-clip'" in capsys.readouterr().err and not out.exists()

    bad = tmp_path / "bad.csv"
    bad.write_text("id,image,title,summary,label\n1,x.jpg,t,s,7\n")
    assert main(["score", "--data", str(bad), "--model", str(tiny_model_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'7' is not 0 or 1" in err and "x.jpg" in err and not out.exists()

    assert main(["eval", "--scores", str(tmp_path / "missing.csv")]) == 2
    assert "No scores file" in capsys.readouterr().err


def test_eval_refuses_unlabelled_rows(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    scores = tmp_path / "s.csv"
    pd.DataFrame({"id": ["a", "b", "c"], "split": ["val", "test", "test"], "label": [1, None, 0],
                  "similarity": [0.3, 0.2, 0.1]}).to_csv(scores, index=False)
    assert main(["eval", "--scores", str(scores)]) == 2
    assert "1 evaluated row(s) have no label" in capsys.readouterr().err


@pytest.fixture
def image_server(tmp_path: Path) -> Iterator[str]:
    """Serves tmp_path/web on 127.0.0.1 (a loopback address, so scoring needs --allow-private-urls)."""
    (tmp_path / "web").mkdir()
    make_image(tmp_path / "web" / "web.jpg", colour=(0, 90, 0))
    handler = functools.partial(_QuietHandler, directory=str(tmp_path / "web"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


def _table_with_bad_images(folder: Path, server: str) -> Path:
    make_image(folder / "img" / "good.jpg")
    whole = make_image(folder / "img" / "whole.jpg", size=(200, 150)).read_bytes()
    (folder / "img" / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    (folder / "img" / "notes.jpg").write_text("these are my notes, not a picture")
    (folder / "img" / "huge.png").write_bytes(png_header_only(20_000, 20_000))
    images = {"good": "img/good.jpg", "cut": "img/cut.jpg", "notes": "img/notes.jpg", "huge": "img/huge.png",
              "web": f"{server}/web.jpg", "gone": f"{server}/gone.jpg"}
    rows = [{"id": key, "image": image, "title": f"title {key}", "summary": f"summary {key}", "label": i % 2,
             "split": "test"} for i, (key, image) in enumerate(images.items())]
    path = folder / "table.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_score_reports_every_bad_image_before_loading_anything(
    tmp_path: Path, instance: Path, image_server: str, capsys  # noqa: ANN001
) -> None:
    table = _table_with_bad_images(tmp_path / "data", image_server)
    out = tmp_path / "s.csv"
    code = main(["score", "--data", str(table), "--model", "tiny-demo", "--out", str(out), "--allow-private-urls"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    for row in (2, 3, 4, 6):  # cut, notes, huge, gone: named by their row, as every other problem of a table
        assert f"row {row}, column 'image'" in err
    assert "row 1," not in err and "row 5," not in err
    assert "--skip-bad-rows" in err and not out.exists()
    assert not (instance / "models").exists()  # the model was not even built


def test_skip_bad_rows_scores_the_good_images_and_lists_the_rest(
    tmp_path: Path, tiny_model_dir: Path, image_server: str, capsys  # noqa: ANN001
) -> None:
    table = _table_with_bad_images(tmp_path / "data", image_server)
    out = tmp_path / "s.csv"
    assert main(["score", "--data", str(table), "--model", str(tiny_model_dir), "--out", str(out),
                 "--allow-private-urls", "--skip-bad-rows"]) == 0
    scores = pd.read_csv(out)
    assert scores["id"].tolist() == ["good", "web"] and scores["label"].tolist() == [0, 0]
    skipped = [line for line in capsys.readouterr().err.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 4 and all(any(f"row {row}, column 'image'" in line for line in skipped) for row in (2, 3, 4, 6))


@pytest.mark.parametrize(
    ("column", "values", "bad_rows"),
    [("label", ["1", "2", "yes", "", "0.0"], [2, 3]), ("similarity", ["0.1", "high", "", "inf", "0.5"], [2, 3, 4])],
)
def test_eval_lists_bad_values_in_the_scores_file(
    tmp_path: Path, capsys, column: str, values: list[str], bad_rows: list[int]  # noqa: ANN001
) -> None:
    frame = pd.DataFrame({"id": list("abcde"), "split": ["val", "val", "test", "test", "test"],
                          "label": ["1", "0", "1", "0", "1"], "similarity": ["0.4", "0.3", "0.2", "0.1", "0.5"]})
    frame[column] = values
    path = tmp_path / "s.csv"
    frame.to_csv(path, index=False)
    assert main(["eval", "--scores", str(path), "--threshold", "0.2"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"column '{column}'" in err
    for row in range(1, 6):
        assert (f"row {row}," in err) == (row in bad_rows)


def test_eval_without_validation_rows_says_what_to_give(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    path = tmp_path / "s.csv"
    pd.DataFrame({"id": ["a", "b"], "split": ["test", "test"], "label": [1, 0],
                  "similarity": [0.3, 0.1]}).to_csv(path, index=False)
    assert main(["eval", "--scores", str(path), "--threshold", "val-median"]) == 2
    assert f"no rows with split 'val' in {path}; give validation scores (--val FILE or --val-split NAME), or a number" in (
        capsys.readouterr().err
    )
    assert main(["eval", "--scores", str(path), "--threshold", "0.2", "--bootstrap", "0"]) == 0


@pytest.mark.parametrize(("value", "expected"), [("", "work/instance"), ("   ", "work/instance"), ("~/x", "home/x")])
def test_cli_and_app_share_one_instance_folder_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    from annotations.settings import Settings

    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CFTCLIP_INSTANCE", value)
    assert main(["models", "info", "tiny-demo"]) == 0
    assert (tmp_path / expected / "models" / "tiny-demo-v1").is_dir()
    assert Settings.from_env().instance_dir == tmp_path / expected
