"""What the Train page shows, computed by ``train_jobs.views``, and the one-click demo of ``train_jobs.demo``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select

from annotations.db import write_session
from annotations.models import Experiment, TrainRun
from cftclip_core.errors import ConfigError
from train_jobs import demo, states, views
from train_jobs.api import create_proof_experiment, experiment_runs


def test_form_text_becomes_typed_config_and_unparsable_text_is_left_for_the_check() -> None:
    texts = {"lr": "2e-4", "batch_size": "8", "max_steps": "", "grad_clip": "none", "device": "",
             "gradient_checkpointing": "true", "text_field": "title", "patience": "five", "weight_decay": "0"}
    assert views.typed_values(texts) == {
        "lr": 2e-4, "batch_size": 8, "max_steps": None, "grad_clip": None, "device": None,
        "gradient_checkpointing": True, "text_field": "title", "patience": "five", "weight_decay": 0.0}
    defaults = views.form_defaults()
    assert "seed" not in defaults and defaults["lr"] == 1e-4 and defaults["batch_size"] == 128
    assert views.typed_values({name: views.as_text(value) for name, value in defaults.items()}) == defaults


@pytest.mark.parametrize(("text", "seeds"), [
    ("0-4", (0, 1, 2, 3, 4)), ("0, 2,2,7", (0, 2, 7)), ("3-5,1", (3, 4, 5, 1))])
def test_seeds_are_read_as_lists_and_ranges(text: str, seeds: tuple[int, ...]) -> None:
    assert views.parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["4-0", "a", "", "-1", "0-100000000", str(10**23)])
def test_bad_seeds_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="are not valid: give integers from 0 to"):
        views.parse_seeds(text)


def test_curves_keep_the_last_record_of_a_repeated_step_and_skip_a_line_being_written(tmp_path: Path) -> None:
    steps = [{"step": s, "loss": float(s), "data_time": 0.1, "step_time": 0.2 * (s > 2)} for s in range(1, 5)]
    resumed = [{"step": 3, "loss": 30.0, "data_time": 0.1, "step_time": 0.4}, {"step": 3, "val_loss": 2.5},
               {"step": 5, "loss": float("nan"), "data_time": 0.1, "step_time": 0.4}]
    lines = [json.dumps(r) for r in steps + resumed] + ['{"step": 6, "lo']
    (tmp_path / "log.jsonl").write_text("\n".join(lines))
    curves = views.read_curves(tmp_path)
    assert curves.loss.to_dict("list") == {"step": [1, 2, 3, 4], "loss": [1.0, 2.0, 30.0, 4.0]}
    assert curves.validation.to_dict("list") == {"step": [3], "val_loss": [2.5]}
    assert curves.seconds_per_step == pytest.approx((0.1 + 0.1 + 0.5 + 0.3) / 4)
    assert views.read_curves(tmp_path / "absent").loss.empty


def test_long_curves_are_thinned_to_a_few_hundred_points_keeping_their_shape() -> None:
    frame = pd.DataFrame({"step": range(1, 10_001), "loss": [10_000 / s for s in range(1, 10_001)]})
    curves = {f"seed {seed}": views.Curves(frame, frame.rename(columns={"loss": "val_loss"}).iloc[::1000], None)
              for seed in range(5)}
    loss, validation = views.experiment_curves(curves, max_points=300)
    assert len(loss) <= 300 and set(loss["run"]) == set(curves)
    one = loss[loss["run"] == "seed 0"]
    assert one["loss"].is_monotonic_decreasing and one["step"].iloc[0] < 100 and one["step"].iloc[-1] > 9_900
    assert len(validation) == 50  # already few: drawn as they are


def run_like(**values) -> TrainRun:  # noqa: ANN003
    return TrainRun(**{"state": "running", "phase": "training", "step": 40, "total_steps": 100, "samples_per_s": 16.0,
                       "config": {"batch_size": 8}, **values})


def test_eta_comes_from_the_recent_pace_or_the_heartbeats_speed() -> None:
    assert views.eta_seconds(run_like(), 0.5) == pytest.approx(30.0)
    assert views.eta_seconds(run_like(), None) == pytest.approx(60 * 8 / 16)
    assert views.eta_seconds(run_like(phase="evaluating"), 0.5) is None
    assert views.eta_seconds(run_like(state="queued"), 0.5) is None
    durations = [views.format_duration(s) for s in (None, 42, 720, 3 * 3600 + 300)]
    assert durations == ["–", "42 s", "12 min", "3 h 05 min"]
    assert views.progress(run_like()) == 0.4 and views.progress(run_like(state="succeeded", step=None)) == 1.0


def proof_runs_finished(factory, instance, name: str, arm: str, roc_aucs: list[float]) -> int:  # noqa: ANN001
    experiment = create_proof_experiment(factory, instance, name=name, arm=arm, seeds=tuple(range(len(roc_aucs))))
    with write_session(factory) as session:
        for run, roc_auc in zip(experiment_runs(session, experiment.id), roc_aucs):
            for state in (states.STARTING, states.RUNNING, states.SUCCEEDED):
                states.move(run, state)
            run.metrics = {"roc_auc": roc_auc, "f1": 0.7, "name_accuracy": 0.5, "context_auc": 0.9}
    return experiment.id


def test_summaries_count_runs_by_state_and_the_proof_comparison_averages_seeds(
        factory, instance) -> None:  # noqa: ANN001
    proof_runs_finished(factory, instance, "clip arm", "clip", [0.6, 0.7, 0.8])
    cft = proof_runs_finished(factory, instance, "cft arm", "cft", [0.9, 0.95])
    with factory() as session:
        summary = views.experiment_summaries(session).set_index("name")
        comparison = views.proof_comparison(session).set_index("arm")
    assert summary.loc["cft arm", "trains"] == "synthetic proof: many world, cft"
    assert summary.loc["clip arm", "succeeded"] == 3 and summary.loc["clip arm", "queued"] == 0
    assert list(summary.index) == ["cft arm", "clip arm"]  # newest first
    assert comparison.loc["clip", "seeds"] == 3 and comparison.loc["clip", "roc_auc"] == pytest.approx(0.7)
    assert comparison.loc["clip", "roc_auc_sd"] == pytest.approx(0.1)
    assert comparison.loc["cft", "roc_auc"] == pytest.approx(0.925)
    with factory() as session:
        run = experiment_runs(session, cft)[0]
    assert views.headline(run) == "F1 0.700 · ROC-AUC 0.900 · name accuracy 0.500"


def test_unique_names_count_up(factory, instance) -> None:  # noqa: ANN001
    with factory() as session:
        assert views.unique_name(session, "cft_%") == "cft_%"
    create_proof_experiment(factory, instance, name="cft_%", seeds=(0,))
    with factory() as session:
        assert views.unique_name(session, "cft_%") == "cft_%-2"
        assert views.unique_name(session, "cft") == "cft"  # '_' and '%' match only themselves


def test_demo_queues_every_world_and_arm_and_a_failure_half_way_leaves_nothing(
        factory, instance, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    real = demo.create_proof_experiment

    def fails_on_the_third(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        with factory() as session:
            made = session.scalar(select(func.count()).select_from(Experiment))
        if made == 2:
            with write_session(factory) as session:  # meanwhile another tab's poll launched a run of the first
                first = session.scalars(select(TrainRun).order_by(TrainRun.id)).first()
                states.move(first, states.STARTING)
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(demo, "create_proof_experiment", fails_on_the_third)
    with pytest.raises(OSError, match="No space left"):
        demo.create_proof_demo(factory, instance, seeds=(0, 1))
    with factory() as session:
        experiments = session.scalars(select(Experiment)).all()
        runs = session.scalars(select(TrainRun)).all()
    assert len(experiments) == 1 and len(runs) == 1  # only the started run is kept, with its cancel asked for
    assert runs[0].state == "starting" and runs[0].cancel_requested_at is not None
    assert [p.name for p in (instance.instance_dir / "runs").iterdir()] == [Path(experiments[0].folder).name]
    monkeypatch.setattr(demo, "create_proof_experiment", real)
    made = demo.create_proof_demo(factory, instance, seeds=(0, 1))
    assert len(made) == len(demo.proof_grid()) == 9 and [e.name for e in made][:2] == [  # "1" is taken above
        "Synthetic proof 2: many world, zero-shot", "Synthetic proof 2: many world, clip"]


def test_samples_per_second_is_smoothed_over_the_recent_steps_not_the_last_one(tmp_path: Path) -> None:
    records = [{"step": s, "loss": 1.0, "data_time": 0.1, "step_time": 0.4 if s < 30 else 4.9} for s in range(1, 31)]
    (tmp_path / views.TRAIN_LOG).write_text("".join(json.dumps(r) + "\n" for r in records))
    curves = views.read_curves(tmp_path)
    run = TrainRun(config={"batch_size": 8}, samples_per_s=8 / 5.0)  # the heartbeat: the last, slow step only
    # 19 steps of 0.5 s and one of 5 s: 8 samples / 0.725 s, not 8 / 5 s
    assert views.samples_per_second(run, curves.seconds_per_step) == pytest.approx(8 / ((19 * 0.5 + 5.0) / 20))
    assert views.samples_per_second(run, None) is None
