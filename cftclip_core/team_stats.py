"""Statistics about an annotation team's work: pace and time to finish, and accuracy on items whose
answer is known (control items). Pure functions over plain tables; no database, no Streamlit.

A *label times* table has one row per new label: ``annotator_id`` and ``at`` (timezone-aware).
A *votes* table has one row per vote: ``item_id``, ``annotator_id``, ``value`` (0/1); *known* maps an
item id to its correct answer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd

from cftclip_core.errors import DataError

ACCURACY_COLUMNS = ("annotator_id", "n_control", "n_correct", "accuracy", "ci_low", "ci_high")
ACTIVITY_COLUMNS = ("annotator_id", "last_hour", "last_day", "last_label_at")
_Z95 = 1.959963984540054


@dataclass(frozen=True)
class Pace:
    """Labels per hour over a recent window, and the time to finish at that pace."""

    window: timedelta
    labels: int  # new labels in the window
    labels_per_hour: float
    annotators: int  # who added labels in the window
    remaining: int  # labels still needed
    eta: timedelta | None  # None when nothing was labelled in the window (no pace to go on) or nothing remains

    @property
    def finished(self) -> bool:
        return self.remaining <= 0


def pace(times: pd.DataFrame, now: datetime, remaining: int, window: timedelta = timedelta(hours=1)) -> Pace:
    """The team's pace over the ``window`` before ``now`` and the time the ``remaining`` labels take at it."""
    if window <= timedelta(0):
        raise DataError(f"The pace window must be positive, not {window}.")
    recent = _in_window(times, now, window)
    hours = window.total_seconds() / 3600
    per_hour = len(recent) / hours
    remaining = max(int(remaining), 0)
    eta = None
    if per_hour > 0 and remaining > 0:
        eta = timedelta(hours=remaining / per_hour)
    elif remaining == 0:
        eta = timedelta(0)
    return Pace(window, len(recent), per_hour, int(recent["annotator_id"].nunique()), remaining, eta)


def activity(times: pd.DataFrame, now: datetime) -> pd.DataFrame:
    """Per annotator: new labels in the last hour and the last 24 hours, and when their last label was
    added; the most active first. Columns: ACTIVITY_COLUMNS."""
    if times.empty:
        return pd.DataFrame(columns=list(ACTIVITY_COLUMNS))
    hour = _in_window(times, now, timedelta(hours=1)).groupby("annotator_id").size().rename("last_hour")
    day = _in_window(times, now, timedelta(days=1)).groupby("annotator_id").size().rename("last_day")
    last = times.groupby("annotator_id")["at"].max().rename("last_label_at")
    frame = pd.concat([hour, day, last], axis=1).fillna({"last_hour": 0, "last_day": 0})
    frame[["last_hour", "last_day"]] = frame[["last_hour", "last_day"]].astype(int)
    frame = frame.rename_axis("annotator_id").reset_index()
    return frame.sort_values(["last_hour", "last_day", "last_label_at"], ascending=False)[list(ACTIVITY_COLUMNS)] \
        .reset_index(drop=True)


def accuracy_on_known(votes: pd.DataFrame, known: Mapping[object, int]) -> pd.DataFrame:
    """Each annotator's accuracy on the items of ``known``, with a 95% Wilson score interval (small
    counts are the rule here: a handful of control items each). Annotators without a vote on a
    known item are left out. Columns: ACCURACY_COLUMNS, sorted by annotator."""
    if votes.empty or not known:
        return pd.DataFrame(columns=list(ACCURACY_COLUMNS))
    answers = pd.Series(known, name="known")
    on_known = votes.join(answers, on="item_id", how="inner")
    if on_known.empty:
        return pd.DataFrame(columns=list(ACCURACY_COLUMNS))
    on_known = on_known.assign(correct=(on_known["value"].astype(int) == on_known["known"].astype(int)).astype(int))
    grouped = on_known.groupby("annotator_id")["correct"].agg(["size", "sum"]).reset_index()
    rows = []
    for annotator, n, correct in grouped.itertuples(index=False):
        low, high = wilson_interval(int(correct), int(n))
        rows.append((annotator, int(n), int(correct), correct / n, low, high))
    return pd.DataFrame(rows, columns=list(ACCURACY_COLUMNS)).sort_values("annotator_id").reset_index(drop=True)


def wilson_interval(successes: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (NaN, NaN for n = 0)."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _in_window(times: pd.DataFrame, now: datetime, window: timedelta) -> pd.DataFrame:
    if times.empty:
        return times
    at = pd.to_datetime(times["at"], utc=True)
    return times[(at > pd.Timestamp(now - window)) & (at <= pd.Timestamp(now))]
