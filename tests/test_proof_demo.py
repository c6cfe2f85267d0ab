"""The one-click demo of the pre-registered proof: the plan's work, ETA and progress (cftclip_core.proof.plan,
plain functions), this machine's pace (calibrate), and the Train page's demo section (studio.proof_demo)
through AppTest, with the stand-in launcher of test_app_train (nothing trains)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from sqlalchemy import select

from annotations.models import Experiment, TrainRun
from cftclip_core.proof.plan import (
    MIN_OBSERVED,
    Pace,
    RunState,
    effective_slots,
    eta_before_launch,
    grid_seconds,
    progress,
    run_steps,
    total_steps,
)
from cftclip_core.specs.proof import ProofSettings, RunKey, grid
from tests.test_app_train import launcher, open_train, plain, sessions  # noqa: F401 - launcher is a fixture
from tests.test_proof_report import grid_dir  # noqa: F401 - a fixture

SETTINGS = ProofSettings()
PACE = Pace({"clip": 0.2, "i2t": 0.2, "cft": 0.25, "cft-m3": 0.3}, image=0.002, text=0.0005, start=5.0)


def test_the_preregistered_grid_is_12_stage0_runs_and_42_trained_runs_of_three_doses() -> None:
    runs = grid()
    assert total_steps(runs, SETTINGS) == 12 * 2400 + 42 * 3 * 300
    assert run_steps(RunKey("few", "zero-shot", 100, 100), SETTINGS) == 0


def test_grid_seconds_is_steps_times_pace_plus_evaluations_and_starts() -> None:
    runs = [RunKey("few", "zero-shot", 1, 1), RunKey("few", "cft", 1, 1), RunKey("many", "cft-m3", 1, 1)]
    training_only = Pace(PACE.step, image=0.0, text=0.0, start=0.0)
    assert grid_seconds(runs, SETTINGS, training_only) == pytest.approx(2 * 2400 * 0.2 + 900 * 0.25 + 900 * 0.3)
    with_starts = Pace(PACE.step, image=0.0, text=0.0, start=5.0)
    assert grid_seconds(runs, SETTINGS, with_starts) == pytest.approx(grid_seconds(runs, SETTINGS, training_only) + 15)
    assert grid_seconds(runs, SETTINGS, PACE) > grid_seconds(runs, SETTINGS, with_starts)  # evaluations cost
    whole = grid_seconds(grid(), SETTINGS, PACE)
    assert eta_before_launch(grid(), SETTINGS, PACE, 2) == pytest.approx(whole / 2)


def test_effective_slots_are_the_job_slots_but_at_most_one_per_core() -> None:
    assert (effective_slots(4, 2), effective_slots(1, 16), effective_slots(3, None)) == (2, 1, 3)


def states_of(runs: list[RunKey], **overrides: RunState) -> list[RunState]:
    return [overrides.get(f"{r.world}-{r.arm}-{r.seed}", RunState(r, False, False, 0)) for r in runs]


def test_progress_counts_runs_and_heartbeat_steps_and_extrapolates_the_observed_pace() -> None:
    runs = grid(["few"], [1, 2])  # 8 runs, 2 stage 0s: 2 x 2400 + 6 x 900 = 10,200 steps
    first, builder = runs[0], runs[2]  # zero-shot seed 1 (trained a stage 0), clip seed 1
    states = states_of(runs, **{"few-zero-shot-1": RunState(first, True, True, 2400),
                                "few-clip-1": RunState(builder, False, False, 450)})
    done = progress(states, SETTINGS, PACE, slots=2, elapsed=1000.0)
    assert (done.runs_done, done.runs_total, done.steps_done, done.steps_total) == (1, 8, 2850, 10_200)
    assert done.fraction >= MIN_OBSERVED
    assert done.eta_seconds == pytest.approx(1000.0 * (10_200 - 2850) / 2850)
    failed = states_of(runs, **{"few-clip-1": RunState(builder, True, False, 10)})
    assert progress(failed, SETTINGS, PACE, 2, 60.0).runs_done == 1  # a failed run is finished, its steps as far


def test_progress_uses_the_calibrated_pace_until_enough_is_done_and_ends_at_zero() -> None:
    runs = grid(["few"], [1])
    early = progress(states_of(runs), SETTINGS, PACE, slots=2, elapsed=30.0)
    assert early.steps_done == 0 and early.eta_seconds == pytest.approx(eta_before_launch(runs, SETTINGS, PACE, 2))
    assert progress(states_of(runs), SETTINGS, None, slots=2, elapsed=None).eta_seconds is None
    finished = [RunState(r, True, True, 0) for r in runs]
    done = progress(finished, SETTINGS, PACE, 2, 100.0)
    assert (done.runs_done, done.steps_done, done.eta_seconds) == (4, total_steps(runs, SETTINGS), 0.0)


@pytest.mark.slow
def test_calibrate_prints_this_machines_pace_for_every_trained_arm(tmp_path) -> None:  # noqa: ANN001
    command = [sys.executable, "-m", "cftclip_core.proof", "calibrate", "--timed-steps", "1", "--batch-size", "8",
               "--image-size", "32"]
    result = subprocess.run(command, capture_output=True, text=True, check=True, cwd=tmp_path,
                            env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    pace = Pace.from_dict(json.loads(result.stdout.strip().splitlines()[-1]))
    assert set(pace.step) == {"clip", "i2t", "cft", "cft-m3"}
    assert all(v > 0 for v in (*pace.step.values(), pace.image, pace.text, pace.start))


def fake_calibration(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []

    def run(command, **kwargs):  # noqa: ANN001, ANN003, ANN202
        calls.append(command)
        return subprocess.CompletedProcess(command, 0, stdout=json.dumps(PACE.to_dict()) + "\n", stderr="")

    monkeypatch.setattr("studio.proof_demo.subprocess.run", run)
    return calls


def test_demo_shows_the_eta_before_launch_then_queues_the_preregistered_grid_and_its_progress(
        app_instance, launcher, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001, F811
    monkeypatch.setenv("CFTCLIP_CPU_JOBS", "2")
    at = open_train(app_instance)
    assert at.button(key="train_demo").disabled  # no ETA yet: measure first
    assert any("Measure this machine first" in m.value for m in at.markdown)
    calls = fake_calibration(monkeypatch)
    at.button(key="demo_measure").click().run()
    assert not at.exception and calls[0][-2:] == ["cftclip_core.proof", "calibrate"]
    expected = eta_before_launch(grid(), SETTINGS, PACE, effective_slots(2, __import__("os").cpu_count()))
    hours, minutes = divmod(round(expected / 60), 60)
    estimate = next(m.value for m in at.markdown if "Estimated" in m.value)
    assert "54 runs (9 per seed), 12 stage-0 runs, 66,600 training steps and 162 evaluated models" in estimate
    assert f"**Estimated {hours} h {minutes:02d} min**" in estimate and "CFTCLIP_CPU_JOBS=2" in estimate

    at.button(key="train_demo").click().run()
    assert not at.exception
    assert any("The synthetic proof is queued: 9 experiments of 6 run(s) each" in plain(s.value) for s in at.success)
    with sessions(app_instance)() as session:
        experiments = session.scalars(select(Experiment).order_by(Experiment.id)).all()
        runs = session.scalars(select(TrainRun).order_by(TrainRun.id)).all()
    assert [(e.config["world"], e.config["arm"]) for e in experiments] == [
        *(("many", a) for a in ("zero-shot", "clip", "i2t", "cft", "cft-m3")),
        *(("few", a) for a in ("zero-shot", "clip", "i2t", "cft"))]
    assert experiments[0].name == "Synthetic proof 1: many world, zero-shot"
    assert len(runs) == 54 and sorted({r.seed for r in runs}) == [100, 101, 102, 103, 104, 105]
    assert runs[0].command[3:9] == ["run", "--world", "many", "--arm", "zero-shot", "--seed"]
    bars = [plain(bar.proto.text) for bar in at.get("progress") if bar.proto.text.startswith("Synthetic proof")]
    assert len(bars) == 1 and bars[0].startswith("Synthetic proof 1: Runs 0/54 finished · steps 0/66,600 · about ")


def test_a_failed_measurement_says_why_and_keeps_the_launch_closed(
        app_instance, launcher, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001, F811
    def broken(command, **kwargs):  # noqa: ANN001, ANN003, ANN202
        return subprocess.CompletedProcess(command, 1, stdout="", stderr="Traceback...\nMemoryError: out of memory\n")

    monkeypatch.setattr("studio.proof_demo.subprocess.run", broken)
    at = open_train(app_instance)
    at.button(key="demo_measure").click().run()
    assert not at.exception
    assert any("Measuring this machine failed (exit 1): MemoryError: out of memory" in plain(e.value)
               for e in at.error)
    assert at.button(key="train_demo").disabled
    at.text_input(key="demo_seeds").set_value("5-1").run()
    assert any("Seeds '5-1' are not valid" in plain(e.value) for e in at.error)


def test_the_demo_states_the_preregistered_result_from_its_results_file(grid_dir, tmp_path) -> None:  # noqa: ANN001, F811
    from cftclip_core.proof.cli import main
    from studio.proof_demo import shipped_result

    assert shipped_result(tmp_path / "missing.csv") is None
    assert main(["table", str(grid_dir)]) == 0
    result = shipped_result(grid_dir / "results.csv").set_index("contrast")
    assert list(result.index) == ["cft − i2t (many world, ROC-AUC)", "cft − clip (many world, ROC-AUC)"]
    assert set(result.columns) == {"mean Δ", "95% t-interval", "seeds won", "Holm p", "verdict"}
    assert all(v.startswith(("cft higher", "cft lower", "no significant")) for v in result["verdict"])
