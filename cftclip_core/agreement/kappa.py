"""Agreement statistics: Cohen's kappa (the one formula, from codes or a 2x2 table), percent agreement,
Cohen's kappa for every pair of annotators, Fleiss' kappa and Krippendorff's alpha."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cftclip_core.agreement.votes import NO_PAIRS, Votes, category_counts, factorize, votes_frame
from cftclip_core.errors import ConfigError

PAIR_COLUMNS = (
    "annotator_a", "annotator_b", "n_items", "observed_agreement", "expected_agreement", "kappa", "note",
)


# Chance agreement of exactly 1 (both raters always used one and the same class) makes kappa 0/0.
CERTAIN = 1.0 - 1e-12


def chance_corrected(observed: Any, expected: Any) -> np.ndarray:
    """Cohen's kappa from observed and chance agreement, elementwise: (po - pe) / (1 - pe); NaN where the
    chance agreement is 1 (kappa is 0/0) or either is NaN (no item)."""
    po, pe = np.asarray(observed, dtype=float), np.asarray(expected, dtype=float)
    defined = np.nan_to_num(pe, nan=1.0) < CERTAIN
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


def kappa_of_codes(a: np.ndarray, b: np.ndarray, n_categories: int) -> tuple[float, float, float, str]:
    """Cohen's kappa of two aligned code arrays: (observed, expected, kappa, note)."""
    n = len(a)
    if n == 0:
        return math.nan, math.nan, math.nan, "no shared items"
    po = float(np.mean(a == b))
    pe = float(np.bincount(a, minlength=n_categories) @ np.bincount(b, minlength=n_categories)) / (n * n)
    if pe >= CERTAIN:
        return po, pe, math.nan, "undefined: both always gave the same single class (chance agreement is 1)"
    return po, pe, float(chance_corrected(po, pe)), ""


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
    counts, _, _ = category_counts(votes_frame(votes))
    n_i = counts.sum(axis=1)
    multi = n_i >= 2
    n_single = int((n_i == 1).sum())
    if not multi.any():
        return PercentAgreement(math.nan, math.nan, 0, n_single, NO_PAIRS)
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
    df = votes_frame(votes)
    item_codes, _ = factorize(df["item_id"])
    annotator_codes, annotators = factorize(df["annotator_id"])
    value_codes, categories = factorize(df["value"])
    wide = np.full((int(item_codes.max(initial=-1)) + 1, len(annotators)), -1, dtype=np.int64)
    wide[item_codes, annotator_codes] = value_codes
    rows = []
    for i in range(len(annotators)):
        for j in range(i + 1, len(annotators)):
            both = (wide[:, i] >= 0) & (wide[:, j] >= 0)
            n = int(both.sum())
            if n == 0:
                continue
            po, pe, kappa, note = kappa_of_codes(wide[both, i], wide[both, j], len(categories))
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
    counts, _, categories = category_counts(votes_frame(votes))
    n_i = counts.sum(axis=1)
    multi = n_i >= 2
    if not multi.any():
        return FleissKappa(math.nan, math.nan, math.nan, 0, 0, NO_PAIRS)
    c, n = counts[multi], n_i[multi]
    p_bar = float(((c * (c - 1)).sum(axis=1) / (n * (n - 1))).mean())
    p_j = c.sum(axis=0) / n.sum()
    p_e = float((p_j**2).sum())
    n_items, n_ratings = int(multi.sum()), int(n.sum())
    if p_e >= CERTAIN:
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
    counts, _, categories = category_counts(votes_frame(votes))
    m = counts.sum(axis=1)
    multi = m >= 2
    c, m = counts[multi].astype(float), m[multi].astype(float)
    weighted = c / (m - 1)[:, None]  # each unit's pairs count 1 / (m_u - 1)
    coincidences = weighted.T @ c - np.diag(weighted.sum(axis=0))  # minus each value paired with itself
    table = pd.DataFrame(coincidences, index=categories, columns=categories)
    n_units, n = int(multi.sum()), int(m.sum())
    if n_units == 0:
        return KrippendorffAlpha(math.nan, math.nan, math.nan, 0, 0, table, NO_PAIRS)
    n_c = coincidences.sum(axis=1)
    d_o = float((coincidences.sum() - np.trace(coincidences)) / n)
    d_e = float((n_c.sum() ** 2 - (n_c**2).sum()) / (n * (n - 1)))
    if d_e <= 0.0:
        only = categories[int(np.argmax(n_c))]
        note = f"undefined: every pairable value is {only!r}, so expected disagreement is 0"
        return KrippendorffAlpha(math.nan, d_o, d_e, n_units, n, table, note)
    return KrippendorffAlpha(1.0 - d_o / d_e, d_o, d_e, n_units, n, table)
