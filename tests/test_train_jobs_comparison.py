"""Seeds compared: per-seed metrics of finished runs, mean/std/t-interval, paired test across seeds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import update

from annotations.importer import import_dataset
from annotations.models import TrainRun, utcnow
from annotations.results import load_results
from annotations.score_sets import add_score_set
from cftclip_core.errors import EvaluationError
from cftclip_core.formats import read_table
from cftclip_core.metrics import aggregate_seeds, compute_metrics, paired_seed_test
from cftclip_core.results import Evaluation
from cftclip_core.synthetic import WorldConfig, generate_dataset
from train_jobs.api import ExperimentRequest, create_experiment, experiment_runs
from train_jobs.comparison import finished_experiments, paired_comparison, run_metrics, seed_metrics, seed_summary
from train_jobs.gpus import GpuInventory

CPU_ONLY = GpuInventory((), "none", "No GPU found (test).")
STRENGTH = {"model-a": 0.12, "model-b": 0.05}  # how far each experiment's similarity moves with the label
IMPORTED = Evaluation(reference="imported")  # the synthetic file's labels (nobody voted)


@pytest.fixture
def experiments(factory, instance, tmp_path: Path) -> Experiments:  # noqa: ANN001
    return make_experiments(factory, instance, tmp_path)


@dataclass
class Experiments:
    ids: dict[str, int]  # name -> experiment id
    f1: dict[str, list[float]]  # name -> F1 of each finished seed, computed here with the metrics library


def make_experiments(factory, instance, tmp_path: Path) -> Experiments:  # noqa: ANN001
    """Two experiments of five seeds whose evaluation scores were imported (model-b's seed 4 still running), each
    run's F1 on the imported labels at the val-median threshold worked out with the metrics library."""
    csv = generate_dataset(tmp_path / "syn", 24, WorldConfig(image_size=64), seed=0)
    dataset = import_dataset(factory, instance, read_table(csv), "syn").id
    with factory() as session:
        items = load_results(session, dataset, "imported").items
    labels, is_val = items["reference"].to_numpy(dtype=int), (items["split"] == "val").to_numpy()
    rng = np.random.default_rng(0)
    made = Experiments({}, {})
    for name, strength in STRENGTH.items():
        config = {"model": "tiny-demo", "loss": "clip", "batch_size": 4, "max_steps": 2, "freeze_text_layers": 1,
                  "lr": 1e-4 if name == "model-a" else 3e-4}
        experiment = create_experiment(factory, instance, ExperimentRequest(
            name=name, config=config, train_dataset_id=dataset, eval_dataset_id=dataset), inventory=CPU_ONLY)
        made.ids[name], made.f1[name] = experiment.id, []
        with factory.begin() as session:
            for run in experiment_runs(session, experiment.id):
                finished = run.seed != 4 or name == "model-a"  # model-b's seed 4 is still running
                session.execute(update(TrainRun).where(TrainRun.id == run.id).values(
                    state="succeeded" if finished else "running", results_at=utcnow() if finished else None,
                    eval_metrics=RUNS_OWN_REPORT if finished else None, metrics={"steps": 2, "best_val_loss": 1.0}))
                if finished:
                    similarity = 0.2 + strength * labels + rng.normal(0.0, 0.04, labels.size)
                    add_score_set(session, dataset, f"{name} seed {run.seed}", f"fp-{run.id}", "summary",
                                  dict(zip(items["item_id"].tolist(), ((float(v), False) for v in similarity))),
                                  note=f"training run {run.id}", train_run_id=run.id)
                    threshold = float(np.median(similarity[is_val]))
                    made.f1[name].append(compute_metrics(similarity[~is_val], labels[~is_val], threshold).f1)
    return made


RUNS_OWN_REPORT = {"threshold": {"value": 0.9, "strategy": "val-median"}, "metrics": {"f1": {"value": 0.5}}}


def test_per_seed_metrics_summary_and_paired_test_match_the_metrics_library(factory, experiments) -> None:  # noqa: ANN001
    F1, experiments = experiments.f1, experiments.ids  # noqa: N806
    with factory() as session:
        frame = seed_metrics(session, list(experiments.values()), IMPORTED)
    assert sorted(frame[frame["experiment"] == "model-a"]["seed"]) == [0, 1, 2, 3, 4]
    assert sorted(frame[frame["experiment"] == "model-b"]["seed"]) == [0, 1, 2, 3]  # only finished runs

    summary = seed_summary(frame).set_index(["experiment", "metric"])
    expected = aggregate_seeds(F1["model-a"])
    row = summary.loc[("model-a", "f1")]
    assert (row["n"], row["mean"], row["std"], row["ci_low"], row["ci_high"]) == pytest.approx(
        (5, expected.mean, expected.std, expected.ci_low, expected.ci_high))
    assert (frame["f1"] != 0.5).all()  # the runs' own reports (another threshold, labels at launch) are not shown

    result = paired_comparison(frame, experiments["model-a"], experiments["model-b"], "f1")
    test = paired_seed_test(F1["model-a"][:4], F1["model-b"][:4])
    assert result["seeds"] == [0, 1, 2, 3] and result["n"] == 4
    assert (result["mean_diff"], result["p_value"]) == pytest.approx((test.mean_diff, test.p_value))
    assert (result["wins_a"], result["wins_b"]) == (test.wins_a, test.wins_b)


def test_comparison_without_shared_finished_seeds_says_what_to_do(factory, experiments) -> None:  # noqa: ANN001
    experiments = experiments.ids
    with factory() as session:
        frame = seed_metrics(session, [experiments["model-a"]], IMPORTED)
    with pytest.raises(EvaluationError, match="No finished seeds"):
        paired_comparison(frame, experiments["model-a"], experiments["model-b"], "f1")
    assert seed_summary(frame.iloc[:1]).set_index("metric").loc["f1", "n"] == 1  # one seed: no interval
    assert seed_summary(frame.iloc[:1]).set_index("metric")["std"].isna().all()


def test_only_experiments_whose_runs_all_ended_count_as_finished(factory, experiments) -> None:  # noqa: ANN001
    with factory() as session:
        assert finished_experiments(session, list(experiments.ids.values())) == [experiments.ids["model-a"]]


def test_the_train_page_measures_against_the_imported_label_only_where_there_is_no_gold(factory, experiments) -> None:  # noqa: ANN001
    with factory() as session:
        runs = [r for r in experiment_runs(session, experiments.ids["model-a"])]
        strict = run_metrics(session, runs)
        lenient = run_metrics(session, runs, imported_without_gold=True)
    assert all(row["reference"] == "gold" and row["n_evaluated"] == 0 for row in strict.values())  # nobody voted
    assert [lenient[r.id]["reference"] for r in runs] == ["imported"] * 5
    assert [lenient[r.id]["f1"] for r in runs] == pytest.approx(experiments.f1["model-a"])
