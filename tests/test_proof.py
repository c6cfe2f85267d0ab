"""The synthetic proof (cftclip_core.proof): run folders, one stage 0 saved at every dose and shared by the
arms, determinism, stopping and resuming doses, world seeds, the `all` command and argument errors. Tiny
settings only: these runs learn nothing worth asserting, so only structure and consistency are checked."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from cftclip_core import metrics
from cftclip_core.errors import ConfigError
from cftclip_core.proof.cache import RunStopped, Stage0
from cftclip_core.proof.cli import main
from cftclip_core.proof.run_files import run_dir_for
from cftclip_core.proof.runs import run_one
from cftclip_core.specs.proof import METRICS, ProofSettings, RunKey

TINY = ProofSettings(train_items=48, val_items=12, test_items=12, image_size=32, stage0_steps=(2, 4), steps=2,
                     batch_size=8, warmup_steps=0)
FEW_CFT = RunKey("few", "cft", 0, 0)
FEW_ZERO = RunKey("few", "zero-shot", 0, 0)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def proof_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two finished runs of seed 0 in the few-contexts world: zero-shot and cft."""
    root = tmp_path_factory.mktemp("proof")
    for run in (FEW_ZERO, FEW_CFT):
        run_one(run, run_dir_for(root, run), root / "cache", TINY)
    return root


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_a_trained_run_leaves_the_contract_files_for_every_dose_and_metrics_that_match_its_scores(
        proof_dir: Path) -> None:
    run = run_dir_for(proof_dir, FEW_CFT)
    result = read_json(run / "metrics.json")
    assert (result["world"], result["arm"], result["seed"], result["data_seed"]) == ("few", "cft", 0, 0)
    assert result["settings"] == TINY.result_key() and result["steps"] == 4
    assert [d["dose"] for d in result["doses"]] == [2, 4]
    for dose in result["doses"]:
        folder = run / f"dose-{dose['dose']}"
        for name in ("config.json", "log.jsonl", "best/config.json", "eval/metrics.json", "result.json"):
            assert (folder / name).is_file(), name
        scores = pd.read_csv(folder / "eval" / "scores.csv")
        assert scores.groupby("split")["label"].value_counts().to_dict() == {
            ("test", 0): 12, ("test", 1): 12, ("val", 0): 12, ("val", 1): 12}
        val, test = scores[scores["split"] == "val"], scores[scores["split"] == "test"]
        threshold = metrics.choose_threshold("f1-optimal", val["similarity"], val["label"]).value
        expected = metrics.compute_metrics(test["similarity"], test["label"], threshold)
        assert dose["threshold"] == pytest.approx(threshold)
        assert (dose["roc_auc"], dose["f1"]) == pytest.approx((expected.roc_auc, expected.f1))
        assert dose["n_test_images"] == 12 and dose["steps"] == 2
        assert (dose["name_accuracy"] * 12) == pytest.approx(round(dose["name_accuracy"] * 12))
        assert all(0 <= dose[name] <= 1 for name, _ in METRICS)
    for name, _ in METRICS:  # the run's headline numbers are the mean over the doses
        assert result[name] == pytest.approx(sum(d[name] for d in result["doses"]) / 2)
    fn = result["false_negatives"]
    assert fn["batches"] == 2 and fn["negatives"] == 2 * 8 * 7 and fn["share"] == fn["false_negatives"] / 112


def test_the_run_log_and_heartbeat_count_steps_over_the_whole_run(proof_dir: Path) -> None:
    run = run_dir_for(proof_dir, FEW_CFT)
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [(r["dose"], r["dose_step"], r["step"]) for r in records if "loss" in r]
    assert steps == [(2, 1, 1), (2, 2, 2), (4, 1, 3), (4, 2, 4)]  # the stage 0 was trained by the zero-shot run
    beat = read_json(run / "heartbeat.json")
    assert (beat["phase"], beat["step"], beat["total_steps"]) == ("done", 4, 4)
    builder = read_json(run_dir_for(proof_dir, FEW_ZERO) / "heartbeat.json")
    assert (builder["step"], builder["total_steps"]) == (4, 4)  # the 4 stage-0 steps it trained


def test_arms_and_doses_share_one_stage0_run_saved_at_each_dose(proof_dir: Path) -> None:
    zero = read_json(run_dir_for(proof_dir, FEW_ZERO) / "metrics.json")
    trained = read_json(run_dir_for(proof_dir, FEW_CFT) / "metrics.json")
    assert zero["stage0_model"] == trained["stage0_model"]
    folders = [p for p in (proof_dir / "cache").glob("stage0-*") if p.is_dir()]
    assert [p.name for p in folders] == [Path(zero["stage0_model"]).name]
    stage0 = Stage0.load(folders[0])
    assert all((stage0.model_dir(d) / "config.json").is_file() for d in (2, 4))
    validations = {r["step"]: r["val_loss"] for r in map(json.loads, (folders[0] / "stage0-log.jsonl").read_text()
                                                          .splitlines()) if "val_loss" in r}
    assert stage0.val_loss == {2: validations[2], 4: validations[4]}
    assert read_json(folders[0] / "stage0-config.json")["schedule"] == "constant"
    assert [d["stage0_val_loss"] for d in zero["doses"]] == [validations[2], validations[4]]
    assert zero["steps"] == 0 and "false_negatives" not in zero
    assert not (run_dir_for(proof_dir, FEW_ZERO) / "dose-2" / "best").exists()
    doses = {d["dose"]: d for d in zero["doses"]}
    assert doses[2]["roc_auc"] != doses[4]["roc_auc"] or doses[2]["context_auc"] != doses[4]["context_auc"]


def test_same_seed_and_settings_give_identical_scores_from_scratch(proof_dir: Path, tmp_path: Path) -> None:
    run_one(FEW_CFT, tmp_path / "again", tmp_path / "fresh-cache", TINY)  # re-renders, retrains stage 0
    for dose in (2, 4):
        first = pd.read_csv(run_dir_for(proof_dir, FEW_CFT) / f"dose-{dose}" / "eval" / "scores.csv")
        again = pd.read_csv(tmp_path / "again" / f"dose-{dose}" / "eval" / "scores.csv")
        pd.testing.assert_frame_equal(again.drop(columns="model"), first.drop(columns="model"))  # same weights too


def test_each_seed_renders_its_own_world_unless_the_data_seed_holds_it(proof_dir: Path, tmp_path: Path) -> None:
    cache = proof_dir / "cache"
    run_one(RunKey("few", "zero-shot", 1, 1), tmp_path / "own", cache, TINY)
    run_one(RunKey("few", "zero-shot", 1, 0), tmp_path / "held", cache, TINY)
    worlds = sorted(p.name for p in cache.glob("world-few-*") if p.is_dir())
    assert [w.split("-")[2] for w in worlds] == ["data0", "data1"]
    tables = {w: (cache / w / "data.csv").read_bytes() for w in worlds}
    assert len(set(tables.values())) == 2
    stage0s = {Path(read_json(tmp_path / name / "metrics.json")["stage0_model"]).name for name in ("own", "held")}
    assert stage0s == {n for n in (p.name for p in cache.glob("stage0-few-seed1-*") if p.is_dir())}
    assert len(stage0s) == 2
    assert run_dir_for(tmp_path, RunKey("few", "cft", 1, 0)).name == "seed-1-data-0"


def test_a_finished_run_folder_is_refused(proof_dir: Path) -> None:
    with pytest.raises(ConfigError, match="already holds a finished run"):
        run_one(FEW_CFT, run_dir_for(proof_dir, FEW_CFT), proof_dir / "cache", TINY)


def test_a_stop_request_ends_the_run_without_caching_a_partial_stage0(tmp_path: Path) -> None:
    with pytest.raises(RunStopped):
        run_one(RunKey("few", "clip", 1, 1), tmp_path / "run", tmp_path / "cache", TINY, stop=lambda: True)
    assert read_json(tmp_path / "run" / "heartbeat.json")["phase"] == "stopped"
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert not [p for p in (tmp_path / "cache").glob("stage0-*") if p.is_dir()]


def test_a_restarted_run_keeps_its_finished_doses(proof_dir: Path, tmp_path: Path) -> None:
    cache = proof_dir / "cache"
    run = tmp_path / "run"
    first = run_one(FEW_CFT, run, cache, TINY)
    kept = (run / "dose-2" / "result.json").stat().st_mtime_ns
    (run / "metrics.json").unlink()  # as if it had been stopped during the last dose
    (run / "dose-4" / "result.json").unlink()
    again = run_one(FEW_CFT, run, cache, TINY)
    assert (run / "dose-2" / "result.json").stat().st_mtime_ns == kept
    assert again["roc_auc"] == pytest.approx(first["roc_auc"])


def test_all_runs_each_arm_as_a_process_writes_the_report_and_skips_finished_runs(
        proof_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    args = ["all", "--out", str(tmp_path), "--worlds", "few", "--arms", "zero-shot", "--seeds", "0",
            "--cache", str(proof_dir / "cache"), *TINY.to_args()]
    assert main(args) == 0
    run = run_dir_for(tmp_path, FEW_ZERO)
    assert read_json(run / "metrics.json")["settings"] == TINY.result_key()  # flags passed on intact
    assert "few zero-shot seed 0: ROC-AUC" in (run / "run.log").read_text()  # the run process's own log
    assert len(pd.read_csv(tmp_path / "results.csv")) == 2  # one row per dose
    assert (tmp_path / "table.md").is_file() and (tmp_path / "dose-response.svg").read_text().startswith("<svg")
    before = (run / "metrics.json").stat().st_mtime_ns
    caplog.clear()
    caplog.set_level(logging.INFO, logger="cftclip_core.proof")
    assert main(args) == 0
    assert "0 runs to do, 1 already finished" in caplog.text
    assert (run / "metrics.json").stat().st_mtime_ns == before


def test_settings_flags_round_trip_through_the_command_line() -> None:
    assert TINY.to_args()[TINY.to_args().index("--stage0-steps") + 1] == "2,4"
    assert ProofSettings.from_dict(json.loads(json.dumps(TINY.result_key()))) == dataclasses.replace(TINY)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--world", "mars", "--arm", "cft", "--seed", "0"], "Unknown world 'mars': choose one of many, few"),
        (["run", "--world", "few", "--arm", "plain", "--seed", "0"], "Unknown arm 'plain': choose one of zero-shot"),
        (["run", "--world", "few", "--arm", "cft", "--seed", "0", "--steps", "0"], "--steps=0 is not valid"),
        (["run", "--world", "few", "--arm", "cft", "--seed", "0", "--image-size", "60"], "multiple of 8"),
        (["run", "--world", "few", "--arm", "cft", "--seed", "0", "--stage0-steps", "800,400"],
         "--stage0-steps=800,400 is not valid: give increasing"),
        (["run", "--world", "few", "--arm", "cft", "--seed", "0", "--stage0-steps", "4x"], "--stage0-steps=4x"),
        (["run", "--world", "few", "--arm", "cft", "--seed", "0-2"], "--seed '0-2' is not valid"),
        (["run", "--world", "few", "--arm", "cft", "--seed", "0", "--data-seed", "x"], "--data-seed 'x' are not"),
        (["all", "--seeds", "4-2"], "--seeds '4-2' are not valid"),
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
