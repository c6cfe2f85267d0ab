"""The command line a researcher uses without the app: score, eval, models, synthetic."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cftclip_core.cli import main
from cftclip_core.demo import demo_table_path


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
