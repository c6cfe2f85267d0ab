"""Experiments compared across seeds: per-seed metrics, their mean / std / t-interval, and a paired
test between two experiments on the seeds both finished (the paper reports five seeds per model).

Each run's metrics are computed from the score set its evaluation imported (``ScoreSet.train_run_id``) by
``cftclip_core.results.evaluate_score_set`` under an ``Evaluation`` (reference, threshold strategy, items):
the function and defaults the Models page uses, so a run shows the same F1 on the Train, Seeds and Models
pages. Never reads run folders.
"""

from __future__ import annotations

import math

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from annotations.models import Experiment, ScoreSet, TrainRun
from annotations.results import load_results
from cftclip_core.errors import EvaluationError
from cftclip_core.metrics import aggregate_seeds, paired_seed_test
from cftclip_core.results import METRIC_COLUMNS, Evaluation, evaluate_score_set
from train_jobs import states

SUMMARY_COLUMNS = ["metric", "n", "mean", "std", "ci_low", "ci_high"]
NOT_METRICS = {"run", "seed", "threshold", "n_evaluated", "score_set_id"}


def run_metrics(session: Session, runs: list[TrainRun], evaluation: Evaluation = Evaluation(), *,
                imported_without_gold: bool = False) -> dict[int, dict]:
    """run id -> the metrics of the score set the run imported, under ``evaluation`` (no entry for a run
    without one): ``score_set_id``, ``reference``, ``threshold``, ``threshold_choice``, ``n_evaluated``, the
    metrics, ``note``. ``imported_without_gold``: on a dataset with no gold label at all, the imported label is
    the reference (as the run's own evaluation had it); ``reference`` says which was used."""
    if not runs:
        return {}
    score_sets = session.execute(select(ScoreSet.train_run_id, ScoreSet.id, ScoreSet.dataset_id)
                                 .where(ScoreSet.train_run_id.in_([run.id for run in runs]))).all()
    data = {}
    for dataset_id in {dataset_id for _, _, dataset_id in score_sets}:
        data[dataset_id] = load_results(session, dataset_id, evaluation.reference)
        if imported_without_gold and evaluation.reference == "gold" and data[dataset_id].items["reference"].isna().all():
            data[dataset_id] = load_results(session, dataset_id, "imported")
    return {run_id: {"score_set_id": score_set_id, "reference": data[dataset_id].reference,
                     **evaluate_score_set(data[dataset_id], score_set_id, evaluation.strategy, evaluation.subset)}
            for run_id, score_set_id, dataset_id in score_sets}


def seed_metrics(session: Session, experiment_ids: list[int], evaluation: Evaluation = Evaluation()) -> pd.DataFrame:
    """One row per succeeded run whose evaluation scores were imported: experiment, seed, run, score set,
    threshold, items evaluated and the metrics under ``evaluation`` (see ``run_metrics``).

    A seed run again (a relaunch) counts once, with its latest successful run.
    """
    names = dict(session.execute(select(Experiment.id, Experiment.name).where(Experiment.id.in_(experiment_ids))).all())
    runs = list(session.scalars(select(TrainRun).where(TrainRun.experiment_id.in_(experiment_ids),
                                                       TrainRun.state == states.SUCCEEDED)
                                .order_by(TrainRun.experiment_id, TrainRun.seed, TrainRun.id)))
    measured = run_metrics(session, runs, evaluation)
    rows = {}
    for run in runs:
        if run.id in measured:
            row = measured[run.id]
            rows[(run.experiment_id, run.seed)] = {
                "experiment_id": run.experiment_id, "experiment": names[run.experiment_id], "seed": run.seed,
                "run": run.id, "score_set_id": row["score_set_id"], "threshold": row["threshold"],
                "n_evaluated": row["n_evaluated"], **{m: row.get(m) for m in METRIC_COLUMNS}}
    frame = pd.DataFrame(list(rows.values()))
    return frame.astype({m: float for m in METRIC_COLUMNS}) if not frame.empty else frame


def finished_experiments(session: Session, experiment_ids: list[int]) -> list[int]:
    """Of ``experiment_ids`` (in their order), those whose runs have all ended and at least one succeeded."""
    states_of: dict[int, set[str]] = {}
    for experiment_id, state in session.execute(select(TrainRun.experiment_id, TrainRun.state)
                                                .where(TrainRun.experiment_id.in_(experiment_ids))):
        states_of.setdefault(experiment_id, set()).add(state)
    return [i for i in experiment_ids if states.SUCCEEDED in states_of.get(i, set())
            and not states_of[i] & set(states.ACTIVE)]


def metric_names(frame: pd.DataFrame) -> list[str]:
    """The metric columns of a ``seed_metrics`` frame (every numeric result column but bookkeeping)."""
    return [c for c in frame.columns if c not in NOT_METRICS | {"experiment_id", "experiment"}
            and pd.api.types.is_numeric_dtype(frame[c])]


def seed_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per experiment and metric: seeds, mean, sample std and 95% t-interval (std/interval empty for one seed)."""
    rows = []
    for (experiment_id, experiment), group in frame.groupby(["experiment_id", "experiment"], sort=False):
        for metric in metric_names(frame):
            values = group[metric].dropna().to_numpy(float)
            if values.size:
                s = aggregate_seeds(values)
                rows.append({"experiment_id": experiment_id, "experiment": experiment, "metric": metric, "n": s.n,
                             "mean": s.mean, "std": s.std, "ci_low": s.ci_low, "ci_high": s.ci_high})
    return pd.DataFrame(rows, columns=["experiment_id", "experiment", *SUMMARY_COLUMNS])


def paired_comparison(frame: pd.DataFrame, a: int, b: int, metric: str) -> dict:
    """Experiment ``a`` minus ``b`` on ``metric`` over the seeds both finished (paired t-test)."""
    wide = frame[frame["experiment_id"].isin([a, b])].pivot_table(index="seed", columns="experiment_id",
                                                                    values=metric)
    if a not in wide.columns or b not in wide.columns:
        raise EvaluationError(f"No finished seeds with '{metric}' for one of the two experiments; wait for their "
                              "runs to finish (or pick experiments evaluated on a labelled dataset).")
    paired = wide[[a, b]].dropna()
    if paired.empty:
        raise EvaluationError("The two experiments share no finished seed; run the same seeds (0-4) for both.")
    test = paired_seed_test(paired[a].to_numpy(float), paired[b].to_numpy(float))
    return {"seeds": [int(s) for s in paired.index], "n": test.n, "mean_a": test.mean_a, "mean_b": test.mean_b,
            "mean_diff": test.mean_diff, "ci_low": test.ci_low, "ci_high": test.ci_high,
            "p_value": None if math.isnan(test.p_value) else test.p_value, "wins_a": test.wins_a,
            "wins_b": test.wins_b, "ties": test.ties}
