"""The command line for counterfactual generation and training: counterfactual, train (with SIGTERM and --resume)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from cftclip_core.cli import EXIT_TERMINATED, main
from cftclip_core.demo import demo_table_path
from cftclip_core.formats import read_table, write_table
from cftclip_core.models import load_model
from cftclip_core.synthetic import WorldConfig, generate_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CFTCLIP_INSTANCE", str(tmp_path / "instance"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "instance"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 24-item synthetic set (world.json beside it) and its train/val tables in the same folder."""
    csv = generate_dataset(tmp_path_factory.mktemp("syn") / "data", 24, WorldConfig(image_size=64), seed=0)
    table = read_table(csv)
    train_csv = write_table([r for r in table.records if r.split == "train"], csv.parent / "train.csv")
    val_csv = write_table([r for r in table.records if r.split != "train"], csv.parent / "val.csv")
    return {"all": csv, "train": train_csv, "val": val_csv}


def train_args(synthetic: dict[str, Path], model_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--train", str(synthetic["train"]), "--val", str(synthetic["val"]), "--out", str(out),
            "--model", str(model_dir), "--batch-size", "4", "--freeze-text-layers", "1", "--device", "cpu",
            "--precision", "fp32", *extra]


# --- counterfactual ------------------------------------------------------------------------------------
def test_counterfactuals_of_the_synthetic_set_swap_world_names_under_the_clip_filter(
        synthetic, tiny_model_dir: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = synthetic["all"].with_name("cf-filtered.csv")
    assert main(["counterfactual", "--data", str(synthetic["all"]), "--out", str(out),
                 "--model", str(tiny_model_dir)]) == 0
    table = pd.read_csv(out, dtype=str, keep_default_na=False)
    ok = table[table["cf_status"] == "ok"]
    assert len(ok) > 0 and set(table["cf_status"]) <= {"ok", "filter_failed"}
    for _, row in ok.iterrows():
        assert row["counterfactual"] != row["summary"] and row["named_person"] in row["summary"]
        assert row["named_person"] not in row["counterfactual"]
        assert float(row["cf_similarity"]) < float(row["cf_original_similarity"])  # the CLIP filter's rule
    printed = capsys.readouterr().out
    assert f"ok {len(ok)}" in printed and "known-names" in printed and str(out) in printed


def test_names_file_option_and_same_seed_same_counterfactuals(synthetic, tmp_path: Path) -> None:
    world_names = sorted(set(pd.read_csv(synthetic["all"])["person"].dropna()))
    names_file = tmp_path / "names.txt"
    names_file.write_text("\n".join(world_names) + "\n")
    outs = []
    for name in ("a.csv", "b.csv"):
        outs.append(synthetic["all"].parent / name)
        assert main(["counterfactual", "--data", str(synthetic["all"]), "--out", str(outs[-1]),
                     "--tagger", f"names:{names_file}", "--model", "none", "--seed", "3"]) == 0
    first, second = (pd.read_csv(o, dtype=str, keep_default_na=False) for o in outs)
    assert first["counterfactual"].tolist() == second["counterfactual"].tolist()
    # Only the listed names are found; without the filter the first differing swap is kept.
    assert ((first["cf_status"] == "ok") == first["named_person"].isin(world_names)).all()
    assert set(first["cf_status"]) == {"ok", "no_person"}


def test_demo_set_with_the_rule_tagger_counts_texts_without_a_person(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    demo = read_table(demo_table_path())
    records = list(demo.records)
    records[0] = dataclasses.replace(records[0], summary="Heavy rain flooded the lower town overnight, and roads "
                                                         "stayed closed.")
    shutil.copytree(demo.base_dir / "images", tmp_path / "images")
    data = write_table(records, tmp_path / "demo.csv")
    out = tmp_path / "demo_cf.jsonl"
    assert main(["counterfactual", "--data", str(data), "--out", str(out), "--tagger", "rule",
                 "--infiller", "swap"]) == 0
    result = read_table(out)
    statuses = [r.extra["cf_status"] for r in result.records]
    assert statuses[0] == "no_person" and statuses.count("ok") >= len(records) // 2
    assert result.records[1].extra["counterfactual"] not in ("", None, result.records[1].summary)
    captured = capsys.readouterr()
    assert "no_person 1" in captured.out and "1 text(s) name no PERSON" in captured.err


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--tagger", "magic", "--tagger 'magic' is not known"),
    ("--infiller", "oracle", "--infiller 'oracle' is not known"),
    ("--budget", "2", "budget=2.0 is not valid"),
    ("--tagger", "names:/no/such/file.txt", "No names file"),
])
def test_bad_counterfactual_options_exit_2_with_a_message(
        synthetic, tmp_path: Path, capsys, option: str, value: str, message: str) -> None:  # noqa: ANN001
    out = synthetic["all"].with_name("refused.csv")
    assert main(["counterfactual", "--data", str(synthetic["all"]), "--out", str(out), option, value]) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_default_recipe_says_loudly_why_it_is_not_the_papers_and_records_it(
        synthetic, tiny_model_dir: Path, capsys) -> None:  # noqa: ANN001
    out = synthetic["all"].with_name("cf-default.csv")
    assert main(["counterfactual", "--data", str(synthetic["all"]), "--out", str(out),
                 "--model", str(tiny_model_dir)]) == 0
    captured = capsys.readouterr()
    assert "warning: using the offline recipe, not the paper's" in captured.err
    assert "python -m spacy download en_core_web_trf" in captured.err and "bert-base-uncased" in captured.err
    assert "recipe offline: known-names" in captured.out
    sidecar = json.loads(out.with_name(out.name + ".recipe.json").read_text())
    assert sidecar["recipe"]["name"] == "offline" and "en_core_web_trf" in sidecar["recipe"]["fallback"]
    assert sidecar["recipe"]["filter_model"] == str(tiny_model_dir) and sidecar["recipe"]["window"] == 77
    assert sidecar["statuses"]["ok"] == sum(r.extra["cf_status"] == "ok" for r in read_table(out).records)
    recipes = {r.extra["cf_recipe"] for r in read_table(out).records}
    assert len(recipes) == 1 and recipes.pop().startswith("offline: known-names") and "fallback" in sidecar["summary"]


def test_the_papers_recipe_asked_for_without_its_models_is_an_error_that_says_how_to_get_them(
        synthetic, capsys) -> None:  # noqa: ANN001
    out = synthetic["all"].with_name("cf-paper.csv")
    assert main(["counterfactual", "--data", str(synthetic["all"]), "--out", str(out), "--recipe", "paper"]) == 2
    err = capsys.readouterr().err
    assert "python -m spacy download en_core_web_trf" in err  # with spaCy absent it also says to install it
    assert importlib.util.find_spec("spacy") is not None or "pip install -r requirements-paper.txt" in err
    assert "hf download bert-base-uncased" in err and "--recipe offline" in err and not out.exists()


def test_replicate_original_drops_long_texts_as_the_original_pipeline(
        synthetic, tiny_model_dir: Path, capsys) -> None:  # noqa: ANN001
    table = read_table(synthetic["all"])
    long = dataclasses.replace(table.records[0], summary=table.records[0].summary + " and then" * 80)
    data = write_table([long, *table.records[1:]], synthetic["all"].with_name("with-long.csv"))
    out = data.with_name("cf-replicate.csv")
    assert main(["counterfactual", "--data", str(data), "--out", str(out), "--recipe", "offline",
                 "--model", str(tiny_model_dir), "--replicate-original"]) == 0
    rows = read_table(out).records
    assert rows[0].extra["cf_status"] == "too_long" and not rows[0].extra["counterfactual"]
    assert "too_long 1" in capsys.readouterr().out
    assert json.loads(out.with_name(out.name + ".recipe.json").read_text())["recipe"]["long_texts"] == "drop"
    assert main(["counterfactual", "--data", str(data), "--out", str(out), "--recipe", "offline", "--model",
                 str(tiny_model_dir), "--replicate-original", "--long-texts", "truncate"]) == 2
    assert "long_texts='truncate' contradicts replicate_original (--replicate-original)" in capsys.readouterr().err


# --- train ---------------------------------------------------------------------------------------------
def step_records(run: Path) -> list[dict]:
    """The per-step records of a run's log (validation records left out)."""
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in r]


def test_tiny_training_run_end_to_end_with_config_file_and_flag_override(
        synthetic, tiny_model_dir: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"max_steps": 2, "val_every_steps": 2, "lr": 0.001, "loss": "clip"}))
    out = tmp_path / "run"
    assert main(train_args(synthetic, tiny_model_dir, out, "--config", str(config), "--max-steps", "4",
                           "--loss", "cft", "--seed", "1")) == 0
    printed = capsys.readouterr().out
    assert f"best checkpoint: {out / 'best'}" in printed
    summary = json.loads(next(line for line in printed.splitlines() if line.startswith("{")))
    assert summary["steps"] == 4 and not summary["stopped_early"]
    saved = json.loads((out / "config.json").read_text())
    assert (saved["max_steps"], saved["loss"], saved["lr"], saved["seed"]) == (4, "cft", 0.001, 1)
    assert [r["step"] for r in step_records(out)] == [1, 2, 3, 4]
    assert load_model(str(out / "best")).model.config.projection_dim > 0


@pytest.mark.parametrize(("extra", "config", "field"), [
    (["--lr", "fast"], None, "lr="),
    ([], {"loss": "triplet"}, "loss="),  # a flag's bad choice: argparse refuses it (test_cli_help.py)
    (["--patience", "0"], None, "patience="),
    ([], {"batch_sise": 8}, "batch_sise"),
    (["--grad-clip", "-1"], {"max_steps": 3}, "grad_clip="),
])
def test_bad_training_config_is_refused_before_anything_runs(
        synthetic, tmp_path: Path, capsys, extra: list[str], config: dict | None, field: str) -> None:  # noqa: ANN001
    if config is not None:
        (tmp_path / "c.json").write_text(json.dumps(config))
        extra = [*extra, "--config", str(tmp_path / "c.json")]
    out = tmp_path / "run"
    assert main(train_args(synthetic, tmp_path / "no-model-needed", out, *extra)) == 2
    assert field in capsys.readouterr().err and not out.exists()


def test_resume_without_a_stopped_run_is_a_clear_error(synthetic, tiny_model_dir: Path, tmp_path: Path,
                                                       capsys) -> None:  # noqa: ANN001
    assert main(train_args(synthetic, tiny_model_dir, tmp_path / "run", "--resume")) == 2
    assert "Cannot resume" in capsys.readouterr().err


def test_sigterm_saves_last_and_resume_continues_as_if_never_stopped(
        synthetic, tiny_model_dir: Path, tmp_path: Path) -> None:
    common = ["--max-epochs", "1000", "--val-every", "3", "--schedule", "constant", "--lr", "0.001"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CFTCLIP_INSTANCE": str(tmp_path / "instance")}
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "cftclip_core", *train_args(synthetic, tiny_model_dir, run, *common)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        first = proc.stdout.readline()  # type: ignore[union-attr]
        assert first.startswith("step 1 loss"), first
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == EXIT_TERMINATED
    assert "stopped by SIGTERM" in rest
    assert (run / "last" / "model.safetensors").is_file() and (run / "last" / "trainer_state.pt").is_file()
    stopped_at = json.loads((run / "metrics.json").read_text())["steps"]
    assert json.loads((run / "metrics.json").read_text())["interrupted"] is True
    assert len(step_records(run)) == stopped_at >= 1

    assert main(train_args(synthetic, tiny_model_dir, run, *common, "--resume",
                           "--max-steps", str(stopped_at + 2))) == 0
    resumed = step_records(run)
    assert [r["step"] for r in resumed] == list(range(1, stopped_at + 3))

    # The same run without the interruption takes the same steps with the same losses.
    straight = tmp_path / "straight"
    assert main(train_args(synthetic, tiny_model_dir, straight, *common, "--max-steps", str(stopped_at + 2))) == 0
    expected = [r["loss"] for r in step_records(straight)]
    assert [r["loss"] for r in resumed] == pytest.approx(expected, rel=1e-5)


def test_train_accepts_the_tiny_demo_name_like_score(synthetic, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("CFTCLIP_INSTANCE", str(tmp_path / "instance"))
    out = tmp_path / "run"
    assert main(train_args(synthetic, Path("tiny-demo"), out, "--max-steps", "1", "--val-every-steps", "1")) == 0
    assert (out / "best").is_dir() and (tmp_path / "instance" / "models" / "tiny-demo-v1").is_dir()


# --- the replication preset and the threshold's source ----------------------------------------------------
def without_precision(args: list[str]) -> list[str]:
    """The command without the helper's --precision fp32 (its last occurrence stays if a test adds one)."""
    at = args.index("--precision")
    return args[:at] + args[at + 2:]


def test_replicate_original_trains_and_evaluates_as_the_released_code(
        synthetic, tiny_model_dir: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "run"
    assert main(without_precision(train_args(synthetic, tiny_model_dir, out, "--max-steps", "2", "--val-every", "1",
                                             "--replicate-original", "--eval", str(synthetic["all"])))) == 0
    record = json.loads((out / "config.json").read_text())
    assert (record["replicate_original"], record["schedule"], record["precision"], record["long_texts"],
            record["ties_improve"]) == (True, "periodic", "fp32", "drop", True)
    assert record["early_stopping"] == "a tie with the best counts as improvement"
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["threshold_from"] == "train-val" and metrics["precision"] == "fp32"
    assert metrics["n_validation"] == len(read_table(synthetic["val"]))  # the median of the run's val pairs
    printed = capsys.readouterr().out
    assert "data: train" in printed and "from train-val, fp32" in printed


@pytest.mark.parametrize(("extra", "message"), [
    (["--replicate-original", "--precision", "bf16"], "precision='bf16' contradicts replicate_original"),
    (["--replicate-original", "--threshold-from", "eval-val"], "threshold_from='eval-val' contradicts"),
    (["--replicate-original", "--eval-precision", "bf16"], "--eval-precision bf16 contradicts"),
    (["--threshold-from", "eval-val"], "has none; use threshold_from='train-val'"),
])
def test_replication_and_threshold_mistakes_are_refused_before_training(
        synthetic, tiny_model_dir: Path, tmp_path: Path, capsys, extra: list[str], message: str) -> None:  # noqa: ANN001
    args = without_precision(train_args(synthetic, tiny_model_dir, tmp_path / "run", "--eval",
                                        str(synthetic["train"]), *extra))
    assert main(args) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_eval_takes_the_threshold_from_the_named_source(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    scores, val = tmp_path / "s.csv", tmp_path / "v.csv"
    pd.DataFrame({"id": list("abcd"), "split": ["val", "test", "test", "test"], "label": [1, 1, 0, 1],
                  "similarity": [0.9, 0.3, 0.1, 0.5]}).to_csv(scores, index=False)
    pd.DataFrame({"id": list("xyz"), "split": "val", "label": None,
                  "similarity": [0.2, 0.25, 0.4]}).to_csv(val, index=False)
    assert main(["eval", "--scores", str(scores), "--bootstrap", "0"]) == 0
    own = json.loads(capsys.readouterr().out)
    assert own["threshold_from"] == "eval-val" and own["threshold"]["value"] == 0.9
    assert main(["eval", "--scores", str(scores), "--val", str(val), "--bootstrap", "0"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert trained["threshold_from"] == "train-val" and trained["threshold"]["value"] == 0.25
    assert main(["eval", "--scores", str(scores), "--threshold-from", "train-val"]) == 2
    assert "give their scores with --val FILE" in capsys.readouterr().err


def test_one_table_with_a_split_column_trains_and_validates_without_val_file(
        synthetic, tiny_model_dir: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    split = [a for a in train_args(synthetic, tiny_model_dir, tmp_path / "run", "--max-steps", "1")
             if a not in ("--val", str(synthetic["val"]))]
    split[split.index(str(synthetic["train"]))] = str(synthetic["all"])
    assert main(split) == 0
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    table = read_table(synthetic["all"])
    assert record["train_items"] == sum(r.split == "train" for r in table.records)
    assert record["val_items"] == sum(r.split == "val" for r in table.records)
    assert main([a if a != str(synthetic["all"]) else str(synthetic["val"]) for a in split]) == 2
    assert "has no rows with split 'train'; give --val FILE" in capsys.readouterr().err


def test_convert_marks_a_validation_share(tmp_path: Path) -> None:
    from tests.test_layouts import NEWSTT_ROWS, images

    images(tmp_path / "images", [r["image_id"] for r in NEWSTT_ROWS])
    import pandas as pd

    pd.DataFrame(NEWSTT_ROWS).drop(columns="NTT").to_csv(tmp_path / "n.csv", index=False)
    out = tmp_path / "marked.csv"
    assert main(["convert", "--data", str(tmp_path / "n.csv"), "--layout", "newstt", "--out", str(out),
                 "--val-fraction", "0.3", "--seed", "1"]) == 0
    assert sorted(r.split for r in read_table(out).records) == ["train", "train", "val"]
    assert main(["convert", "--data", str(tmp_path / "n.csv"), "--layout", "newstt", "--out", str(out),
                 "--val-fraction", "1.5"]) == 2
