"""The synthetic proof (cftclip_core.proof): run folders, shared stage 0, determinism, stopping, the
aggregated table and its paired tests, the `all` command and argument errors. Tiny settings only: these
runs learn nothing worth asserting, so only structure and consistency are checked."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from cftclip_core import metrics
from cftclip_core.errors import ConfigError, DataError
from cftclip_core.proof import (
    ProofSettings,
    RunStopped,
    collect_results,
    comparisons,
    main,
    parse_seeds,
    run_dir_for,
    run_one,
)

TINY = ProofSettings(train_items=48, val_items=12, test_items=12, image_size=32, stage0_steps=2, steps=2,
                     batch_size=8, warmup_steps=0)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def proof_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two finished runs of seed 0 in the few-contexts world: zero-shot and cft."""
    root = tmp_path_factory.mktemp("proof")
    for arm in ("zero-shot", "cft"):
        run_one("few", arm, 0, run_dir_for(root, "few", arm, 0), root / "cache", TINY)
    return root


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_a_trained_run_leaves_the_contract_files_and_metrics_that_match_its_scores(proof_dir: Path) -> None:
    run = run_dir_for(proof_dir, "few", "cft", 0)
    for name in ("proof.json", "config.json", "log.jsonl", "best/config.json", "eval/metrics.json"):
        assert (run / name).is_file(), name
    assert read_json(run / "heartbeat.json")["phase"] == "done"
    steps = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if "loss" in r] == [1, 2]

    scores = pd.read_csv(run / "eval" / "scores.csv")
    assert list(scores.columns[:5]) == ["id", "split", "label", "similarity", "truncated"]
    assert scores.groupby("split")["label"].value_counts().to_dict() == {
        ("test", 0): 12, ("test", 1): 12, ("val", 0): 12, ("val", 1): 12}
    val, test = scores[scores["split"] == "val"], scores[scores["split"] == "test"]
    threshold = metrics.choose_threshold("f1-optimal", val["similarity"], val["label"]).value
    expected = metrics.compute_metrics(test["similarity"], test["label"], threshold)

    result = read_json(run / "metrics.json")
    assert (result["world"], result["arm"], result["seed"], result["steps"]) == ("few", "cft", 0, 2)
    assert result["settings"] == dataclasses.asdict(TINY)
    assert result["threshold"] == pytest.approx(threshold)
    assert result["roc_auc"] == pytest.approx(expected.roc_auc)
    assert result["f1"] == pytest.approx(expected.f1)
    assert result["n_test_images"] == 12
    assert (result["name_accuracy"] * 12) == pytest.approx(round(result["name_accuracy"] * 12))
    assert 0 <= result["context_auc"] <= 1
    assert read_json(run / "eval" / "metrics.json")["metrics"]["roc_auc"]["value"] == pytest.approx(expected.roc_auc)


def test_arms_of_a_seed_start_from_one_cached_stage0_model(proof_dir: Path) -> None:
    zero = read_json(run_dir_for(proof_dir, "few", "zero-shot", 0) / "metrics.json")
    trained = read_json(run_dir_for(proof_dir, "few", "cft", 0) / "metrics.json")
    assert zero["stage0_model"] == trained["stage0_model"]
    assert [p.name for p in (proof_dir / "cache").glob("stage0-*") if p.is_dir()] == [Path(zero["stage0_model"]).name]
    assert zero["steps"] == 0 and not (run_dir_for(proof_dir, "few", "zero-shot", 0) / "best").exists()


def test_same_seed_and_settings_give_identical_scores_from_scratch(proof_dir: Path, tmp_path: Path) -> None:
    run_one("few", "cft", 0, tmp_path / "again", tmp_path / "fresh-cache", TINY)  # re-renders, retrains stage 0
    first = pd.read_csv(run_dir_for(proof_dir, "few", "cft", 0) / "eval" / "scores.csv")
    again = pd.read_csv(tmp_path / "again" / "eval" / "scores.csv")
    pd.testing.assert_frame_equal(again.drop(columns="model"), first.drop(columns="model"))  # same weights too


def test_a_finished_run_folder_is_refused(proof_dir: Path) -> None:
    with pytest.raises(ConfigError, match="already holds a finished run"):
        run_one("few", "cft", 0, run_dir_for(proof_dir, "few", "cft", 0), proof_dir / "cache", TINY)


def test_a_stop_request_ends_the_run_without_caching_a_partial_stage0(tmp_path: Path) -> None:
    with pytest.raises(RunStopped):
        run_one("few", "clip", 1, tmp_path / "run", tmp_path / "cache", TINY, stop=lambda: True)
    assert read_json(tmp_path / "run" / "heartbeat.json")["phase"] == "stopped"
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert not [p for p in (tmp_path / "cache").glob("stage0-*") if p.is_dir()]


def fake_run(root: Path, world: str, arm: str, seed: int, auc: float, settings: ProofSettings = TINY) -> None:
    run = run_dir_for(root, world, arm, seed)
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({
        "world": world, "arm": arm, "seed": seed, "settings": dataclasses.asdict(settings), "steps": 2,
        "roc_auc": auc, "f1": auc - 0.1, "name_accuracy": auc / 2, "context_auc": 0.99, "threshold": 0.1}))


def test_table_gives_mean_std_and_paired_tests_that_match_paired_seed_test(tmp_path: Path) -> None:
    values = {"clip": [0.61, 0.62, 0.57], "cft": [0.82, 0.85, 0.73], "i2t": [0.60, 0.61, 0.55]}
    for arm, aucs in values.items():
        for seed, auc in enumerate(aucs):
            fake_run(tmp_path, "many", arm, seed, auc)
    assert main(["table", str(tmp_path)]) == 0

    results = pd.read_csv(tmp_path / "results.csv")
    assert len(results) == 9 and list(results["arm"].unique()) == ["clip", "cft", "i2t"]  # arms in canonical order
    table = (tmp_path / "table.md").read_text()
    cft = metrics.aggregate_seeds(values["cft"])
    assert f"| cft | 3 | {cft.mean:.3f} ± {cft.std:.3f} |" in table
    assert "--worlds many --arms clip,cft,i2t --seeds 0-2" in table and "--steps 2" in table

    found = {(c.arm, c.baseline): c for c in comparisons(collect_results(tmp_path))}
    assert set(found) == {("cft", "clip"), ("i2t", "clip"), ("cft", "i2t")}
    expected = metrics.paired_seed_test(values["cft"], values["clip"])
    got = found[("cft", "clip")].tests["roc_auc"]
    assert (got.mean_diff, got.p_value, got.wins_a) == pytest.approx((expected.mean_diff, expected.p_value, 3))
    assert f"| cft − clip | 3 | {expected.mean_diff:+.3f} (p={expected.p_value:.2g})" in table
    name_test = found[("cft", "i2t")].tests["name_accuracy"]
    assert name_test.mean_diff == pytest.approx(metrics.paired_seed_test(
        [v / 2 for v in values["cft"]], [v / 2 for v in values["i2t"]]).mean_diff)


def test_table_refuses_duplicate_runs_and_mixed_settings(tmp_path: Path) -> None:
    fake_run(tmp_path / "a", "many", "cft", 0, 0.8)
    fake_run(tmp_path / "a" / "copy", "many", "cft", 0, 0.8)
    with pytest.raises(DataError, match="Two finished runs of many cft seed 0"):
        collect_results(tmp_path / "a")
    fake_run(tmp_path / "b", "many", "cft", 0, 0.8)
    fake_run(tmp_path / "b", "many", "clip", 0, 0.6, dataclasses.replace(TINY, steps=3))
    with pytest.raises(DataError, match="different settings"):
        collect_results(tmp_path / "b")


def test_all_runs_each_arm_as_a_process_writes_the_table_and_skips_finished_runs(proof_dir: Path, tmp_path: Path,
                                                                                  caplog: pytest.LogCaptureFixture) -> None:
    args = ["all", "--out", str(tmp_path), "--worlds", "few", "--arms", "zero-shot", "--seeds", "0",
            "--cache", str(proof_dir / "cache"), *TINY.to_args()]
    assert main(args) == 0
    run = run_dir_for(tmp_path, "few", "zero-shot", 0)
    assert read_json(run / "metrics.json")["settings"] == dataclasses.asdict(TINY)  # flags passed on intact
    assert "few zero-shot seed 0: ROC-AUC" in (run / "run.log").read_text()  # the run process's own log
    assert len(pd.read_csv(tmp_path / "results.csv")) == 1 and (tmp_path / "table.md").is_file()
    before = (run / "metrics.json").stat().st_mtime_ns
    caplog.clear()
    caplog.set_level(logging.INFO, logger="cftclip_core.proof")
    assert main(args) == 0
    assert "0 runs to do, 1 already finished" in caplog.text
    assert (run / "metrics.json").stat().st_mtime_ns == before


def test_seed_lists() -> None:
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("3,0-1,3") == [3, 0, 1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--world", "mars", "--arm", "cft", "--seed", "0"], "Unknown world 'mars': choose one of many, few"),
        (["run", "--world", "few", "--arm", "plain", "--seed", "0"], "Unknown arm 'plain': choose one of zero-shot, clip"),
        (["run", "--world", "few", "--arm", "cft", "--seed", "0", "--steps", "0"], "--steps=0 is not valid"),
        (["run", "--world", "few", "--arm", "cft", "--seed", "0", "--image-size", "60"], "multiple of 8"),
        (["all", "--seeds", "4-2"], "--seeds '4-2' is not valid"),
        (["all", "--arms", "cft,plain"], "Unknown arm 'plain'"),
        (["all", "--jobs", "0"], "--jobs 0 is not valid"),
        (["table"], "No finished proof runs"),
    ],
)
def test_bad_arguments_give_clear_errors_and_create_nothing(argv: list[str], message: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    tail = [str(tmp_path)] if argv == ["table"] else ["--out", str(out)] + (
        ["--cache", str(tmp_path / "cache")] if argv[0] == "run" else [])
    assert main(argv + tail) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "cache").exists()
