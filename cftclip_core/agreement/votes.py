"""Votes as the statistics take them: a long table (``item_id``, ``annotator_id``, ``value``) checked and
normalised, factorised into codes and per-item counts."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from cftclip_core.errors import DataError

VOTE_COLUMNS = ("item_id", "annotator_id", "value")
NO_PAIRS = "no item has votes from two or more annotators"
Votes = pd.DataFrame | Iterable[tuple[Hashable, Hashable, Hashable]]


def votes_frame(votes: Votes) -> pd.DataFrame:
    """Check and normalise a votes table (DataFrame, or iterable of (item, annotator, value))."""
    if not isinstance(votes, pd.DataFrame):
        votes = pd.DataFrame(list(votes), columns=list(VOTE_COLUMNS))
    missing = [c for c in VOTE_COLUMNS if c not in votes.columns]
    if missing:
        raise DataError(
            f"The votes table lacks column(s) {', '.join(missing)}; it needs item_id, annotator_id and value "
            "(one row per vote)."
        )
    df = votes[list(VOTE_COLUMNS)].reset_index(drop=True)
    empty = df.isna().any(axis=1)
    if empty.any():
        raise DataError(
            f"{int(empty.sum())} vote(s) have an empty item_id, annotator_id or value (first at row "
            f"{int(np.flatnonzero(empty)[0])}); drop skipped votes (no value) before computing agreement."
        )
    dup = df.duplicated(["item_id", "annotator_id"], keep=False)
    if dup.any():
        first = df[dup].iloc[0]
        raise DataError(
            f"{int(dup.sum())} rows repeat an (item, annotator) pair, e.g. item {first.item_id!r} by "
            f"{first.annotator_id!r}; keep only each annotator's current label per item."
        )
    return df


def binary_votes(votes: Votes) -> pd.DataFrame:
    """A votes table whose values are 0/1 (bools and 0.0/1.0 accepted), as ints."""
    df = votes_frame(votes)
    bad = ~df["value"].isin([0, 1])
    if bad.any():
        raise DataError(
            f"Votes must be 0 (no actor) or 1 (shows an actor); found {df['value'][bad].iloc[0]!r} in "
            f"{int(bad.sum())} row(s). Map the labels to 0/1 first."
        )
    return df.assign(value=df["value"].astype(int))


def factorize(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Integer codes and uniques, uniques sorted when the values can be ordered."""
    try:
        codes, uniques = pd.factorize(values, sort=True)
    except TypeError:  # mixed types that cannot be compared
        codes, uniques = pd.factorize(values, sort=False)
    return codes, pd.Index(uniques)


def category_counts(df: pd.DataFrame) -> tuple[np.ndarray, pd.Index, pd.Index]:
    """Matrix items x categories of vote counts, with the item and category labels."""
    item_codes, items = factorize(df["item_id"])
    value_codes, categories = factorize(df["value"])
    counts = np.zeros((len(items), len(categories)), dtype=np.int64)
    np.add.at(counts, (item_codes, value_codes), 1)
    return counts, items, categories


def nan_or(x: float) -> float | None:
    return None if isinstance(x, float) and math.isnan(x) else x


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows as JSON-friendly dicts (NaN/NA -> None, numpy scalars -> Python)."""
    def clean(v: Any) -> Any:
        return None if pd.isna(v) else (v.item() if isinstance(v, np.generic) else v)

    return [{k: clean(v) for k, v in row.items()} for row in frame.astype(object).to_dict(orient="records")]
