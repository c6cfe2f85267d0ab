"""Binary labels per item and per annotator: the majority vote, each annotator against the majority of the
others (leave-one-out), and streaks of suspiciously fast votes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cftclip_core.agreement.kappa import kappa_of_codes
from cftclip_core.agreement.votes import Votes, binary_votes, factorize
from cftclip_core.errors import ConfigError, DataError

MAJORITY_COLUMNS = ("item_id", "n_votes", "n_yes", "n_no", "share_yes", "majority", "tie")
ANNOTATOR_COLUMNS = (
    "annotator_id", "n_votes", "share_yes", "n_compared", "agreement_with_majority",
    "kappa_with_majority", "note",
)
STREAK_COLUMNS = ("annotator_id", "start", "end", "length", "median_seconds")


def majority_vote(votes: Votes) -> pd.DataFrame:
    """Per item: ``item_id, n_votes, n_yes, n_no, share_yes, majority, tie``.

    ``majority`` is 1 or 0 for a strict majority and <NA> on a tie (``tie`` True): the caller
    decides what a tie means (adjudication, a further vote). Items with one vote have that vote.
    """
    df = binary_votes(votes)
    item_codes, items = factorize(df["item_id"])
    n_yes = np.bincount(item_codes, weights=df["value"].to_numpy(), minlength=len(items)).astype(np.int64)
    n_votes = np.bincount(item_codes, minlength=len(items)).astype(np.int64)
    n_no = n_votes - n_yes
    tie = n_yes == n_no
    majority = pd.array(np.where(n_yes > n_no, 1, 0), dtype="Int64")
    majority[tie] = pd.NA
    share = n_yes / np.maximum(n_votes, 1)  # every listed item has >= 1 vote
    return pd.DataFrame(
        {"item_id": items, "n_votes": n_votes, "n_yes": n_yes, "n_no": n_no, "share_yes": share,
         "majority": majority, "tie": tie},
        columns=list(MAJORITY_COLUMNS),
    )


def annotator_stats(votes: Votes, majority: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per annotator: ``annotator_id, n_votes, share_yes, n_compared, agreement_with_majority,
    kappa_with_majority, note``.

    Each vote is compared with the majority of the OTHER annotators on that item (leave-one-out, so
    an annotator does not agree with themself); ``n_compared`` counts the items where the others
    have a strict majority. ``agreement_with_majority`` is the share of those where the annotator
    matches it, ``kappa_with_majority`` Cohen's kappa between the two (NaN with a note when
    undefined). ``majority`` is ``majority_vote(votes)``, computed here when not given.
    """
    df = binary_votes(votes)
    majority = majority_vote(df) if majority is None else majority
    merged = df.merge(majority[["item_id", "n_votes", "n_yes", "n_no"]], on="item_id", how="left")
    recount = merged.groupby("item_id", sort=False)["value"].transform("size")
    if merged["n_votes"].isna().any() or not (merged["n_votes"] == recount).all():
        raise DataError(
            "The majority table does not match these votes (items missing or vote counts differ); "
            "pass majority_vote(votes) computed from the same votes."
        )
    value = merged["value"].to_numpy()
    others_yes = merged["n_yes"].to_numpy() - (value == 1)
    others_no = merged["n_no"].to_numpy() - (value == 0)
    loo = np.where(others_yes > others_no, 1, np.where(others_no > others_yes, 0, -1))
    annotator_codes, annotators = factorize(merged["annotator_id"])
    rows = []
    for k, annotator in enumerate(annotators):
        mine = annotator_codes == k
        compared = mine & (loo >= 0)
        n_compared = int(compared.sum())
        if n_compared == 0:
            agreement, kappa, note = math.nan, math.nan, "no item where the other annotators have a strict majority"
        else:
            agreement, _, kappa, note = kappa_of_codes(value[compared], loo[compared], 2)
        rows.append((annotator, int(mine.sum()), float(value[mine].mean()), n_compared, agreement, kappa, note))
    return pd.DataFrame(rows, columns=list(ANNOTATOR_COLUMNS))


def fast_streaks(
    events: pd.DataFrame,
    threshold_s: float = 2.0,
    min_length: int = 10,
    *,
    time_column: str = "at",
    seconds_column: str = "seconds",
) -> pd.DataFrame:
    """Runs of at least ``min_length`` consecutive votes by one annotator, each under ``threshold_s``.

    ``events`` has ``annotator_id``, a time column (any sortable type) and the seconds spent on each
    item; each annotator's events are taken in time order. A vote with unknown seconds ends a run.
    Returns ``annotator_id, start, end, length, median_seconds`` (start/end: times of the first and
    last vote of the run), one row per run.
    """
    if threshold_s <= 0 or min_length < 1:
        raise ConfigError(
            f"threshold_s must be > 0 and min_length >= 1 (got {threshold_s}, {min_length}); the defaults "
            "are 2.0 seconds and 10 votes."
        )
    needed = ["annotator_id", time_column, seconds_column]
    missing = [c for c in needed if c not in events.columns]
    if missing:
        raise DataError(f"The events table lacks column(s) {', '.join(missing)}; it needs {', '.join(needed)}.")
    rows = []
    for annotator, group in events.groupby("annotator_id", sort=True):
        group = group.sort_values(time_column, kind="stable")
        seconds = pd.to_numeric(group[seconds_column], errors="coerce").to_numpy(dtype=float)
        fast = np.r_[False, np.nan_to_num(seconds, nan=np.inf) < threshold_s, False].astype(np.int8)
        edges = np.diff(fast)
        times = group[time_column]
        for start, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
            if stop - start >= min_length:
                rows.append((annotator, times.iloc[start], times.iloc[stop - 1], int(stop - start),
                             float(np.median(seconds[start:stop]))))
    return pd.DataFrame(rows, columns=list(STREAK_COLUMNS))
