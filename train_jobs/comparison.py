"""Experiments compared across seeds: per-seed metrics, their mean / std / t-interval, and a paired
test between two experiments on the seeds both finished (the paper reports five seeds per model).

Reads only imported results (``TrainRun.eval_metrics``), never run folders.
"""

from __future__ import annotations

import math

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from annotations.models import Experiment, TrainRun
from cftclip_core.errors import EvaluationError
from cftclip_core.metrics import aggregate_seeds, paired_seed_test
from train_jobs import states
from train_jobs.results import results_row

SUMMARY_COLUMNS = ["metric", "n", "mean", "std", "ci_low", "ci_high"]
NOT_METRICS = {"run", "seed", "state", "steps", "best_val_loss", "threshold", "checkpoint"}


def seed_metrics(session: Session, experiment_ids: list[int]) -> pd.DataFrame:
    """One row per finished run with imported evaluation metrics: experiment, seed, run, metrics.

    A seed run again (a relaunch) counts once, with its latest successful run.
    """
    names = dict(session.execute(select(Experiment.id, Experiment.name).where(Experiment.id.in_(experiment_ids))).all())
    runs = session.scalars(select(TrainRun).where(TrainRun.experiment_id.in_(experiment_ids),
                                                  TrainRun.state == states.SUCCEEDED,
                                                  TrainRun.eval_metrics.is_not(None))
                           .order_by(TrainRun.experiment_id, TrainRun.seed, TrainRun.id))
    rows = {}
    for run in runs:
        rows[(run.experiment_id, run.seed)] = {"experiment_id": run.experiment_id,
                                               "experiment": names[run.experiment_id], **results_row(run)}
    return pd.DataFrame(list(rows.values()))


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
