"""Inter-annotator agreement: pure functions over a long table of votes (no database access), and
Cohen's kappa from a 2x2 table (the one kappa formula of the project, also used by the results pages).

A *votes* table has one row per vote: ``item_id``, ``annotator_id``, ``value``. Each annotator votes
at most once per item; items may have different numbers of votes, and a skipped item simply has no
row. The product's labels are binary (1 = the thumbnail shows an actor of the event, 0 = it does
not); percent agreement, Cohen's kappa, Fleiss' kappa and Krippendorff's alpha also accept any
hashable categories. Majority vote and per-annotator statistics need 0/1 values.

Items with a single vote carry no information about agreement: they are counted in the results
but left out of every agreement statistic. Where a statistic is undefined (no item with two votes,
or every vote in the same class so that chance agreement is 1) the value is NaN and ``note`` says
why; nothing raises and no numpy warning is emitted.

Tables returned as ``pandas.DataFrame`` (one row per pair, item, annotator or streak) have the
columns listed in each function's docstring; single results are dataclasses.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cftclip_core.errors import ConfigError, DataError

VOTE_COLUMNS = ("item_id", "annotator_id", "value")
PAIR_COLUMNS = (
    "annotator_a", "annotator_b", "n_items", "observed_agreement", "expected_agreement", "kappa", "note",
)
MAJORITY_COLUMNS = ("item_id", "n_votes", "n_yes", "n_no", "share_yes", "majority", "tie")
ANNOTATOR_COLUMNS = (
    "annotator_id", "n_votes", "share_yes", "n_compared", "agreement_with_majority",
    "kappa_with_majority", "note",
)
STREAK_COLUMNS = ("annotator_id", "start", "end", "length", "median_seconds")

_NO_PAIRS = "no item has votes from two or more annotators"

Votes = pd.DataFrame | Iterable[tuple[Hashable, Hashable, Hashable]]


# ---------------------------------------------------------------------------------------------
# Input handling


def _votes_frame(votes: Votes) -> pd.DataFrame:
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


def _binary_votes(votes: Votes) -> pd.DataFrame:
    """A votes table whose values are 0/1 (bools and 0.0/1.0 accepted), as ints."""
    df = _votes_frame(votes)
    bad = ~df["value"].isin([0, 1])
    if bad.any():
        raise DataError(
            f"Votes must be 0 (no actor) or 1 (shows an actor); found {df['value'][bad].iloc[0]!r} in "
            f"{int(bad.sum())} row(s). Map the labels to 0/1 first."
        )
    return df.assign(value=df["value"].astype(int))


def _factorize(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Integer codes and uniques, uniques sorted when the values can be ordered."""
    try:
        codes, uniques = pd.factorize(values, sort=True)
    except TypeError:  # mixed types that cannot be compared
        codes, uniques = pd.factorize(values, sort=False)
    return codes, pd.Index(uniques)


def _category_counts(df: pd.DataFrame) -> tuple[np.ndarray, pd.Index, pd.Index]:
    """Matrix items x categories of vote counts, with the item and category labels."""
    item_codes, items = _factorize(df["item_id"])
    value_codes, categories = _factorize(df["value"])
    counts = np.zeros((len(items), len(categories)), dtype=np.int64)
    np.add.at(counts, (item_codes, value_codes), 1)
    return counts, items, categories


def _nan_or(x: float) -> float | None:
    return None if isinstance(x, float) and math.isnan(x) else x


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame rows as JSON-friendly dicts (NaN/NA -> None, numpy scalars -> Python)."""
    def clean(v: Any) -> Any:
        return None if pd.isna(v) else (v.item() if isinstance(v, np.generic) else v)

    return [{k: clean(v) for k, v in row.items()} for row in frame.astype(object).to_dict(orient="records")]


# Chance agreement of exactly 1 (both raters always used one and the same class) makes kappa 0/0.
_CERTAIN = 1.0 - 1e-12


def chance_corrected(observed: Any, expected: Any) -> np.ndarray:
    """Cohen's kappa from observed and chance agreement, elementwise: (po - pe) / (1 - pe); NaN where the
    chance agreement is 1 (kappa is 0/0) or either is NaN (no item)."""
    po, pe = np.asarray(observed, dtype=float), np.asarray(expected, dtype=float)
    defined = np.nan_to_num(pe, nan=1.0) < _CERTAIN
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(defined, (po - pe) / np.where(defined, 1.0 - pe, 1.0), np.nan)


def kappa_from_counts(tp: Any, fp: Any, tn: Any, fn: Any) -> np.ndarray:
    """Cohen's kappa of two binary raters from their 2x2 table (elementwise over arrays of tables); NaN where
    the table is empty or chance agreement is 1. ``tp``: both said 1, ``fp``: the first 1 and the second 0."""
    tp, fp, tn, fn = (np.asarray(x, dtype=float) for x in (tp, fp, tn, fn))
    n = tp + fp + tn + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        observed = np.where(n > 0, (tp + tn) / np.where(n > 0, n, 1.0), np.nan)
        expected = np.where(n > 0, ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / np.where(n > 0, n * n, 1.0),
                            np.nan)
    return chance_corrected(observed, expected)


def _kappa(a: np.ndarray, b: np.ndarray, n_categories: int) -> tuple[float, float, float, str]:
    """Cohen's kappa of two aligned code arrays: (observed, expected, kappa, note)."""
    n = len(a)
    if n == 0:
        return math.nan, math.nan, math.nan, "no shared items"
    po = float(np.mean(a == b))
    pe = float(np.bincount(a, minlength=n_categories) @ np.bincount(b, minlength=n_categories)) / (n * n)
    if pe >= _CERTAIN:
        return po, pe, math.nan, "undefined: both always gave the same single class (chance agreement is 1)"
    return po, pe, float(chance_corrected(po, pe)), ""


# ---------------------------------------------------------------------------------------------
# Agreement statistics


@dataclass(frozen=True)
class PercentAgreement:
    """Raw agreement over items with two or more votes.

    ``pairwise``: for each item, the share of pairs of its annotators that gave the same value,
    sum_j n_ij (n_ij - 1) / (n_i (n_i - 1)); then the mean over items (each item weighs the same,
    whatever its number of votes). ``all_agree``: the share of those items on which every annotator
    gave the same value. For two votes per item the two coincide.
    """

    pairwise: float
    all_agree: float
    n_items: int  # items with >= 2 votes (those used)
    n_single_vote_items: int  # items with exactly one vote (counted, not used)
    note: str = ""


def percent_agreement(votes: Votes) -> PercentAgreement:
    counts, _, _ = _category_counts(_votes_frame(votes))
    n_i = counts.sum(axis=1)
    multi = n_i >= 2
    n_single = int((n_i == 1).sum())
    if not multi.any():
        return PercentAgreement(math.nan, math.nan, 0, n_single, _NO_PAIRS)
    c, n = counts[multi], n_i[multi]
    per_item = (c * (c - 1)).sum(axis=1) / (n * (n - 1))
    all_agree = c.max(axis=1) == n
    return PercentAgreement(float(per_item.mean()), float(all_agree.mean()), int(multi.sum()), n_single)


def cohen_kappa_pairs(votes: Votes, min_overlap: int = 1) -> pd.DataFrame:
    """Cohen's kappa for every pair of annotators over the items both labelled.

    One row per pair sharing at least one item (pairs sharing none are left out), columns
    ``annotator_a, annotator_b, n_items, observed_agreement, expected_agreement, kappa, note``.
    kappa is NaN, with a note, when the pair shares fewer than ``min_overlap`` items or when chance
    agreement is 1 (both always gave the same single class).
    """
    if min_overlap < 1:
        raise ConfigError(f"min_overlap must be at least 1, got {min_overlap}; use 1 to keep every pair.")
    df = _votes_frame(votes)
    item_codes, _ = _factorize(df["item_id"])
    annotator_codes, annotators = _factorize(df["annotator_id"])
    value_codes, categories = _factorize(df["value"])
    wide = np.full((int(item_codes.max(initial=-1)) + 1, len(annotators)), -1, dtype=np.int64)
    wide[item_codes, annotator_codes] = value_codes
    rows = []
    for i in range(len(annotators)):
        for j in range(i + 1, len(annotators)):
            both = (wide[:, i] >= 0) & (wide[:, j] >= 0)
            n = int(both.sum())
            if n == 0:
                continue
            po, pe, kappa, note = _kappa(wide[both, i], wide[both, j], len(categories))
            if n < min_overlap:
                kappa, note = math.nan, f"only {n} shared item(s), fewer than min_overlap={min_overlap}"
            rows.append((annotators[i], annotators[j], n, po, pe, kappa, note))
    return pd.DataFrame(rows, columns=list(PAIR_COLUMNS))


@dataclass(frozen=True)
class FleissKappa:
    """Fleiss' kappa, generalised to a varying number of raters per item.

    Over the items with n_i >= 2 ratings: P_i = sum_j n_ij (n_ij - 1) / (n_i (n_i - 1)),
    P-bar = mean of P_i (``p_observed``), p_j = share of category j among all ratings of those
    items, P_e = sum_j p_j^2 (``p_expected``), kappa = (P-bar - P_e) / (1 - P_e). With the same
    number of raters on every item this is exactly Fleiss (1971).
    """

    kappa: float
    p_observed: float
    p_expected: float
    n_items: int  # items used (>= 2 ratings)
    n_ratings: int  # ratings on those items
    note: str = ""


def fleiss_kappa(votes: Votes) -> FleissKappa:
    counts, _, categories = _category_counts(_votes_frame(votes))
    n_i = counts.sum(axis=1)
    multi = n_i >= 2
    if not multi.any():
        return FleissKappa(math.nan, math.nan, math.nan, 0, 0, _NO_PAIRS)
    c, n = counts[multi], n_i[multi]
    p_bar = float(((c * (c - 1)).sum(axis=1) / (n * (n - 1))).mean())
    p_j = c.sum(axis=0) / n.sum()
    p_e = float((p_j**2).sum())
    n_items, n_ratings = int(multi.sum()), int(n.sum())
    if p_e >= _CERTAIN:
        only = categories[int(np.argmax(p_j))]
        note = f"undefined: every rating is {only!r}, so chance agreement is 1"
        return FleissKappa(math.nan, p_bar, p_e, n_items, n_ratings, note)
    return FleissKappa((p_bar - p_e) / (1.0 - p_e), p_bar, p_e, n_items, n_ratings)


@dataclass(frozen=True)
class KrippendorffAlpha:
    """Krippendorff's alpha (nominal) from the coincidence matrix; handles missing values.

    Every unit with m_u >= 2 values adds, for each ordered pair of its values from different coders,
    1 / (m_u - 1) to the coincidence o_ck. With n_c = sum_k o_ck and n = sum_c n_c (the pairable
    values): D_o = sum_{c != k} o_ck / n, D_e = sum_{c != k} n_c n_k / (n (n - 1)),
    alpha = 1 - D_o / D_e (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability").
    """

    alpha: float
    observed_disagreement: float
    expected_disagreement: float
    n_units: int  # units with >= 2 values
    n_pairable: int  # values in those units (n)
    coincidences: pd.DataFrame = field(repr=False, compare=False)  # o_ck, categories x categories
    note: str = ""


def krippendorff_alpha(votes: Votes, level: str = "nominal") -> KrippendorffAlpha:
    if level != "nominal":
        raise ConfigError(
            f"Krippendorff's alpha is implemented for level='nominal' only, got {level!r}; the labels are "
            "categories, so use 'nominal' (for 0/1 labels every level gives the same alpha)."
        )
    counts, _, categories = _category_counts(_votes_frame(votes))
    m = counts.sum(axis=1)
    multi = m >= 2
    c, m = counts[multi].astype(float), m[multi].astype(float)
    weighted = c / (m - 1)[:, None]  # each unit's pairs count 1 / (m_u - 1)
    coincidences = weighted.T @ c - np.diag(weighted.sum(axis=0))  # minus each value paired with itself
    table = pd.DataFrame(coincidences, index=categories, columns=categories)
    n_units, n = int(multi.sum()), int(m.sum())
    if n_units == 0:
        return KrippendorffAlpha(math.nan, math.nan, math.nan, 0, 0, table, _NO_PAIRS)
    n_c = coincidences.sum(axis=1)
    d_o = float((coincidences.sum() - np.trace(coincidences)) / n)
    d_e = float((n_c.sum() ** 2 - (n_c**2).sum()) / (n * (n - 1)))
    if d_e <= 0.0:
        only = categories[int(np.argmax(n_c))]
        note = f"undefined: every pairable value is {only!r}, so expected disagreement is 0"
        return KrippendorffAlpha(math.nan, d_o, d_e, n_units, n, table, note)
    return KrippendorffAlpha(1.0 - d_o / d_e, d_o, d_e, n_units, n, table)


# ---------------------------------------------------------------------------------------------
# Majority and annotators (binary labels)


def majority_vote(votes: Votes) -> pd.DataFrame:
    """Per item: ``item_id, n_votes, n_yes, n_no, share_yes, majority, tie``.

    ``majority`` is 1 or 0 for a strict majority and <NA> on a tie (``tie`` True): the caller
    decides what a tie means (adjudication, a further vote). Items with one vote have that vote.
    """
    df = _binary_votes(votes)
    item_codes, items = _factorize(df["item_id"])
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
    df = _binary_votes(votes)
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
    annotator_codes, annotators = _factorize(merged["annotator_id"])
    rows = []
    for k, annotator in enumerate(annotators):
        mine = annotator_codes == k
        compared = mine & (loo >= 0)
        n_compared = int(compared.sum())
        if n_compared == 0:
            agreement, kappa, note = math.nan, math.nan, "no item where the other annotators have a strict majority"
        else:
            agreement, _, kappa, note = _kappa(value[compared], loo[compared], 2)
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


# ---------------------------------------------------------------------------------------------
# Report


@dataclass(frozen=True)
class AgreementReport:
    """Everything the review page shows about agreement on one set of votes."""

    n_votes: int
    n_items: int  # items with at least one vote
    n_annotators: int
    n_items_multi: int  # items with >= 2 votes: the ones agreement is computed on
    n_items_single: int  # items with exactly one vote: counted, not used
    percent: PercentAgreement
    fleiss: FleissKappa
    krippendorff: KrippendorffAlpha
    pairwise: pd.DataFrame = field(repr=False, compare=False)  # cohen_kappa_pairs

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable (NaN becomes None)."""
        alpha = {k: v for k, v in asdict(self.krippendorff).items() if k != "coincidences"}
        return {
            "n_votes": self.n_votes,
            "n_items": self.n_items,
            "n_annotators": self.n_annotators,
            "n_items_multi": self.n_items_multi,
            "n_items_single": self.n_items_single,
            "percent_agreement": {k: _nan_or(v) for k, v in asdict(self.percent).items()},
            "fleiss_kappa": {k: _nan_or(v) for k, v in asdict(self.fleiss).items()},
            "krippendorff_alpha": {k: _nan_or(v) for k, v in alpha.items()},
            "pairwise_cohen_kappa": _records(self.pairwise),
        }


def agreement_report(votes: Votes, min_overlap: int = 1) -> AgreementReport:
    """All agreement statistics of one set of votes; ``min_overlap`` as in ``cohen_kappa_pairs``."""
    df = _votes_frame(votes)
    per_item = df.groupby("item_id", sort=False).size()
    return AgreementReport(
        n_votes=len(df),
        n_items=len(per_item),
        n_annotators=int(df["annotator_id"].nunique()),
        n_items_multi=int((per_item >= 2).sum()),
        n_items_single=int((per_item == 1).sum()),
        percent=percent_agreement(df),
        fleiss=fleiss_kappa(df),
        krippendorff=krippendorff_alpha(df),
        pairwise=cohen_kappa_pairs(df, min_overlap=min_overlap),
    )
