"""Seeds compared: per-seed metrics of finished runs, mean/std/t-interval, paired test across seeds."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from annotations.importer import import_dataset
from annotations.models import TrainRun
from cftclip_core.errors import EvaluationError
from cftclip_core.formats import read_table
from cftclip_core.metrics import aggregate_seeds, paired_seed_test
from cftclip_core.synthetic import WorldConfig, generate_dataset
from train_jobs.api import ExperimentRequest, create_experiment, experiment_runs
from train_jobs.comparison import paired_comparison, seed_metrics, seed_summary
from train_jobs.gpus import GpuInventory

CPU_ONLY = GpuInventory((), "none", "No GPU found (test).")
F1 = {"model-a": [0.80, 0.84, 0.79, 0.83, 0.81], "model-b": [0.74, 0.80, 0.76, 0.75, 0.79]}


def report(f1: float) -> dict:
    return {"threshold": {"value": 0.2, "strategy": "val-median", "n_val": 3},
            "metrics": {"f1": {"value": f1, "ci_low": f1 - 0.05, "ci_high": f1 + 0.05},
                        "roc_auc": {"value": f1 + 0.1}}}


@pytest.fixture
def experiments(factory, instance, tmp_path: Path) -> dict[str, int]:  # noqa: ANN001
    return make_experiments(factory, instance, tmp_path)


def make_experiments(factory, instance, tmp_path: Path) -> dict[str, int]:  # noqa: ANN001
    """Two experiments of five seeds with imported metrics (model-b's seed 4 still running): name -> id."""
    csv = generate_dataset(tmp_path / "syn", 24, WorldConfig(image_size=64), seed=0)
    dataset = import_dataset(factory, instance, read_table(csv), "syn").id
    ids = {}
    for name, values in F1.items():
        config = {"model": "tiny-demo", "loss": "clip", "batch_size": 4, "max_steps": 2, "freeze_text_layers": 1, "lr": 1e-4 if name == "model-a" else 3e-4}
        experiment = create_experiment(factory, instance, ExperimentRequest(
            name=name, config=config, train_dataset_id=dataset, eval_dataset_id=dataset), inventory=CPU_ONLY)
        ids[name] = experiment.id
        with factory.begin() as session:
            for run, f1 in zip(experiment_runs(session, experiment.id), values):
                finished = run.seed != 4 or name == "model-a"  # model-b's seed 4 is still running
                session.execute(update(TrainRun).where(TrainRun.id == run.id).values(
                    state="succeeded" if finished else "running", eval_metrics=report(f1) if finished else None,
                    metrics={"steps": 2, "best_val_loss": 1.0}))
    return ids


def test_per_seed_metrics_summary_and_paired_test_match_the_metrics_library(factory, experiments) -> None:  # noqa: ANN001
    with factory() as session:
        frame = seed_metrics(session, list(experiments.values()))
    assert sorted(frame[frame["experiment"] == "model-a"]["seed"]) == [0, 1, 2, 3, 4]
    assert sorted(frame[frame["experiment"] == "model-b"]["seed"]) == [0, 1, 2, 3]  # only finished runs

    summary = seed_summary(frame).set_index(["experiment", "metric"])
    expected = aggregate_seeds(F1["model-a"])
    row = summary.loc[("model-a", "f1")]
    assert (row["n"], row["mean"], row["std"], row["ci_low"], row["ci_high"]) == pytest.approx(
        (5, expected.mean, expected.std, expected.ci_low, expected.ci_high))
    assert summary.loc[("model-b", "roc_auc"), "mean"] == pytest.approx(sum(F1["model-b"][:4]) / 4 + 0.1)

    result = paired_comparison(frame, experiments["model-a"], experiments["model-b"], "f1")
    test = paired_seed_test(F1["model-a"][:4], F1["model-b"][:4])
    assert result["seeds"] == [0, 1, 2, 3] and result["n"] == 4
    assert (result["mean_diff"], result["p_value"]) == pytest.approx((test.mean_diff, test.p_value))
    assert result["wins_a"] == 4


def test_comparison_without_shared_finished_seeds_says_what_to_do(factory, experiments) -> None:  # noqa: ANN001
    with factory() as session:
        frame = seed_metrics(session, [experiments["model-a"]])
    with pytest.raises(EvaluationError, match="No finished seeds"):
        paired_comparison(frame, experiments["model-a"], experiments["model-b"], "f1")
    assert seed_summary(frame.iloc[:1]).set_index("metric").loc["f1", "n"] == 1  # one seed: no interval
    assert seed_summary(frame.iloc[:1]).set_index("metric")["std"].isna().all()
