"""Agreement statistics: published worked examples, scikit-learn / statsmodels / krippendorff
cross-checks on random data, brute-force re-computations and hand-computed tiny cases."""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from cftclip_core import agreement as A
from cftclip_core.errors import ConfigError, DataError

# Any division by zero or mean of nothing inside the module would surface as a RuntimeWarning.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

SEEDS = [0, 1, 2, 3, 4]

# Fleiss (1971) as on Wikipedia's "Fleiss' kappa" page: 10 subjects x 5 categories, counts of 14 raters.
FLEISS_TABLE = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: nominal data,
# 4 observers x 12 units, "." = missing.
KRIPPENDORFF_NOMINAL = {
    "A": "1 2 3 3 2 1 4 1 2 . . .",
    "B": "1 2 3 3 2 2 4 1 2 5 . 3",
    "C": ". 3 3 3 2 3 4 2 2 5 1 .",
    "D": "1 2 3 3 2 4 4 1 2 5 1 .",
}
# Same paper, section A: binary data, 2 observers x 10 units.
KRIPPENDORFF_BINARY = {"A": "0 1 0 0 0 0 0 0 1 0", "B": "1 1 1 0 0 1 0 0 0 0"}


def _from_count_table(table: np.ndarray) -> pd.DataFrame:
    """Long votes from an items x categories count table (raters named by position in the item)."""
    rows = []
    for item, counts in enumerate(table):
        raters = itertools.count()
        for category, count in enumerate(counts, start=1):
            rows += [(item, f"r{next(raters)}", category) for _ in range(count)]
    return pd.DataFrame(rows, columns=["item_id", "annotator_id", "value"])


def _from_coder_rows(coders: dict[str, str]) -> pd.DataFrame:
    rows = [
        (unit, coder, int(v))
        for coder, line in coders.items()
        for unit, v in enumerate(line.split(), start=1)
        if v != "."
    ]
    return pd.DataFrame(rows, columns=["item_id", "annotator_id", "value"])


def _random_votes(seed: int, n_items: int = 80, n_annotators: int = 5, p_vote: float = 0.6) -> pd.DataFrame:
    """Binary votes: a hidden truth per item, each annotator flips it with their own error rate,
    and votes on each item with probability p_vote (so items get 0..n_annotators votes)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n_items)
    error = rng.uniform(0.05, 0.35, n_annotators)
    rows = []
    for item in range(n_items):
        for a in range(n_annotators):
            if rng.random() < p_vote:
                rows.append((f"i{item}", f"ann{a}", int(truth[item] ^ (rng.random() < error[a]))))
    return pd.DataFrame(rows, columns=["item_id", "annotator_id", "value"])


def _wide(votes: pd.DataFrame) -> pd.DataFrame:
    return votes.pivot(index="item_id", columns="annotator_id", values="value")


# --------------------------------------------------------------------------------------------
# Worked examples


def test_fleiss_kappa_matches_the_published_worked_example() -> None:
    result = A.fleiss_kappa(_from_count_table(FLEISS_TABLE))
    assert result.kappa == pytest.approx(0.210, abs=5e-4)
    assert result.p_observed == pytest.approx(0.378, abs=5e-4)  # P-bar on the Wikipedia page
    assert result.p_expected == pytest.approx(0.213, abs=5e-4)  # P-bar_e
    assert (result.n_items, result.n_ratings) == (10, 140)


def test_krippendorff_alpha_matches_the_published_nominal_example_with_missing_values() -> None:
    result = A.krippendorff_alpha(_from_coder_rows(KRIPPENDORFF_NOMINAL))
    assert result.alpha == pytest.approx(0.743, abs=5e-4)
    # Unit 12 has a single value and is not pairable; the paper's n = 40 pairable values.
    assert (result.n_units, result.n_pairable) == (11, 40)
    o = result.coincidences
    assert o.sum(axis=1).tolist() == pytest.approx([9, 13, 10, 5, 3])  # the paper's n_c
    assert [o.loc[1, 1], o.loc[1, 2], o.loc[2, 3], o.loc[3, 4], o.loc[5, 5]] == pytest.approx(
        [7, 4 / 3, 4 / 3, 1 / 3, 3]
    )


def test_krippendorff_alpha_matches_the_published_binary_example() -> None:
    assert A.krippendorff_alpha(_from_coder_rows(KRIPPENDORFF_BINARY)).alpha == pytest.approx(0.095, abs=5e-4)


# --------------------------------------------------------------------------------------------
# Cross-checks on random data


@pytest.mark.parametrize("seed", SEEDS)
def test_pairwise_cohen_kappa_equals_sklearn_on_shared_items(seed: int) -> None:
    votes = _random_votes(seed)
    wide = _wide(votes)
    pairs = A.cohen_kappa_pairs(votes)
    assert len(pairs) == 10  # 5 annotators, every pair shares items
    for row in pairs.itertuples():
        both = wide[[row.annotator_a, row.annotator_b]].dropna()
        assert row.n_items == len(both)
        a, b = both[row.annotator_a].astype(int), both[row.annotator_b].astype(int)
        assert row.kappa == pytest.approx(cohen_kappa_score(a, b))
        assert row.observed_agreement == pytest.approx(np.mean(a == b))


@pytest.mark.parametrize("seed", SEEDS)
def test_percent_agreement_and_fleiss_equal_brute_force_over_pairs(seed: int) -> None:
    votes = _random_votes(seed)
    per_item = [g["value"].tolist() for _, g in votes.groupby("item_id") if len(g) >= 2]
    pair_shares = [np.mean([x == y for x, y in itertools.combinations(v, 2)]) for v in per_item]
    pct = A.percent_agreement(votes)
    assert pct.pairwise == pytest.approx(np.mean(pair_shares))
    assert pct.all_agree == pytest.approx(np.mean([len(set(v)) == 1 for v in per_item]))
    assert pct.n_items == len(per_item)

    share_yes = np.mean([x for v in per_item for x in v])
    p_e = share_yes**2 + (1 - share_yes) ** 2
    assert A.fleiss_kappa(votes).kappa == pytest.approx((np.mean(pair_shares) - p_e) / (1 - p_e))


@pytest.mark.parametrize("seed", SEEDS)
def test_krippendorff_alpha_equals_brute_force_pair_enumeration(seed: int) -> None:
    votes = _random_votes(seed)
    o: Counter[tuple[int, int]] = Counter()
    for _, group in votes.groupby("item_id"):
        values = group["value"].tolist()
        for x, y in itertools.permutations(values, 2):
            o[(x, y)] += 1 / (len(values) - 1)
    n0, n1 = o[(0, 0)] + o[(0, 1)], o[(1, 0)] + o[(1, 1)]
    n = n0 + n1
    expected = 1 - (n - 1) * (o[(0, 1)] + o[(1, 0)]) / (2 * n0 * n1)
    assert A.krippendorff_alpha(votes).alpha == pytest.approx(expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_krippendorff_alpha_equals_the_krippendorff_package(seed: int) -> None:
    krippendorff = pytest.importorskip("krippendorff")
    votes = _random_votes(seed)
    data = _wide(votes).T.to_numpy(dtype=float)  # coders x units, NaN = missing
    reference = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    assert A.krippendorff_alpha(votes).alpha == pytest.approx(reference)


@pytest.mark.parametrize("seed", SEEDS)
def test_fleiss_kappa_equals_statsmodels_with_equal_raters(seed: int) -> None:
    inter_rater = pytest.importorskip("statsmodels.stats.inter_rater")
    rng = np.random.default_rng(seed)
    table = rng.multinomial(6, rng.dirichlet(np.ones(3)), size=40)  # 40 items, 6 raters, 3 classes
    assert A.fleiss_kappa(_from_count_table(table)).kappa == pytest.approx(inter_rater.fleiss_kappa(table))
    assert A.fleiss_kappa(_from_count_table(FLEISS_TABLE)).kappa == pytest.approx(
        inter_rater.fleiss_kappa(FLEISS_TABLE)
    )


# --------------------------------------------------------------------------------------------
# Hand-computed tiny cases

# x: 1,1,0   y: 1,1   z: 0,0,0,0   w: 1 (single vote)
TINY = [
    ("x", "a", 1), ("x", "b", 1), ("x", "c", 0),
    ("y", "a", 1), ("y", "b", 1),
    ("z", "a", 0), ("z", "b", 0), ("z", "c", 0), ("z", "d", 0),
    ("w", "c", 1),
]


def test_tiny_case_percent_agreement_and_fleiss_with_unequal_raters() -> None:
    pct = A.percent_agreement(TINY)
    # Pair shares: x 1/3, y 1, z 1; w is excluded but counted.
    assert pct.pairwise == pytest.approx(7 / 9)
    assert pct.all_agree == pytest.approx(2 / 3)
    assert (pct.n_items, pct.n_single_vote_items) == (3, 1)
    fleiss = A.fleiss_kappa(TINY)
    # p_1 = 4/9, p_0 = 5/9 over the 9 ratings of x, y, z; P_e = 41/81; (7/9 - 41/81) / (40/81) = 0.55
    assert fleiss.p_expected == pytest.approx(41 / 81)
    assert fleiss.kappa == pytest.approx(0.55)
    assert (fleiss.n_items, fleiss.n_ratings) == (3, 9)


def test_tiny_case_majority_vote() -> None:
    votes = TINY + [("t", "a", 1), ("t", "b", 0)]
    m = A.majority_vote(votes).set_index("item_id")
    assert m.loc["x", ["n_votes", "n_yes", "n_no"]].tolist() == [3, 2, 1]
    assert m.loc["x", "share_yes"] == pytest.approx(2 / 3)
    assert pd.isna(m.loc["t", "majority"])  # a tie has no majority
    assert m.drop("t")["majority"].to_dict() == {"w": 1, "x": 1, "y": 1, "z": 0}
    assert m["tie"].to_dict() == {"t": True, "w": False, "x": False, "y": False, "z": False}


def test_tiny_case_annotator_stats_use_the_majority_of_the_others() -> None:
    stats = A.annotator_stats(TINY).set_index("annotator_id")
    # a: x others(b1,c0) tie; y others(b1) -> 1 agrees; z others 0,0,0 -> 0 agrees.
    # c: x others(a1,b1) -> 1, c said 0: disagrees; z -> agrees; w has no others.
    # d: z -> agrees.
    assert stats["n_votes"].to_dict() == {"a": 3, "b": 3, "c": 3, "d": 1}
    assert stats.loc["c", "share_yes"] == pytest.approx(1 / 3)
    assert stats["n_compared"].to_dict() == {"a": 2, "b": 2, "c": 2, "d": 1}
    assert stats["agreement_with_majority"].to_dict() == pytest.approx({"a": 1.0, "b": 1.0, "c": 0.5, "d": 1.0})
    assert stats.loc["a", "kappa_with_majority"] == pytest.approx(1.0)
    # c vs others' majority: (0 vs 1), (0 vs 0): po 1/2, pe = 1 * 1/2 -> kappa 0.
    assert stats.loc["c", "kappa_with_majority"] == pytest.approx(0.0)
    assert math.isnan(stats.loc["d", "kappa_with_majority"])  # one item, both said 0
    assert "same single class" in stats.loc["d", "note"]


@pytest.mark.parametrize("seed", SEEDS)
def test_annotator_stats_equal_a_leave_one_out_recomputation(seed: int) -> None:
    votes = _random_votes(seed)
    stats = A.annotator_stats(votes, A.majority_vote(votes)).set_index("annotator_id")
    wide = _wide(votes)
    for annotator in wide.columns:
        own, others = wide[annotator], wide.drop(columns=annotator)
        yes, no = (others == 1).sum(axis=1), (others == 0).sum(axis=1)
        loo = pd.Series(np.where(yes > no, 1, np.where(no > yes, 0, np.nan)), index=wide.index)
        keep = own.notna() & loo.notna()
        row = stats.loc[annotator]
        assert row["n_votes"] == own.notna().sum()
        assert row["share_yes"] == pytest.approx(own.mean())
        assert row["n_compared"] == keep.sum()
        assert row["agreement_with_majority"] == pytest.approx((own[keep] == loo[keep]).mean())
        assert row["kappa_with_majority"] == pytest.approx(cohen_kappa_score(own[keep], loo[keep]))


def test_annotator_stats_refuse_a_majority_table_from_other_votes() -> None:
    with pytest.raises(DataError, match="majority_vote"):
        A.annotator_stats(TINY, A.majority_vote(TINY[:5]))


def test_fast_streaks_find_runs_of_quick_votes_per_annotator() -> None:
    t0 = pd.Timestamp("2024-05-01 10:00")
    seconds_a = [1.0] * 12 + [5.0] + [0.5] * 9 + [1.5] * 3  # two runs of 12 under 2 s, split by the 5 s vote
    seconds_b = [1.0] * 6 + [math.nan] + [1.0] * 6  # unknown seconds break the run
    rows = [("a", t0 + pd.Timedelta(seconds=10 * i), s) for i, s in enumerate(seconds_a)]
    rows += [("b", t0 + pd.Timedelta(seconds=10 * i), s) for i, s in enumerate(seconds_b)]
    events = pd.DataFrame(rows, columns=["annotator_id", "at", "seconds"]).sample(frac=1, random_state=0)
    streaks = A.fast_streaks(events)
    assert streaks["annotator_id"].tolist() == ["a", "a"]
    assert streaks["length"].tolist() == [12, 12]
    assert streaks["start"].tolist() == [t0, t0 + pd.Timedelta(seconds=130)]
    assert streaks["end"].tolist() == [t0 + pd.Timedelta(seconds=110), t0 + pd.Timedelta(seconds=240)]
    assert streaks["median_seconds"].tolist() == pytest.approx([1.0, 0.5])
    assert A.fast_streaks(events, min_length=6)["annotator_id"].tolist() == ["a", "a", "b", "b"]
    assert A.fast_streaks(events, threshold_s=1.0, min_length=5)["length"].tolist() == [9]


# --------------------------------------------------------------------------------------------
# Undefined statistics and edge cases


def test_empty_votes_give_nan_with_notes_and_empty_tables() -> None:
    empty = pd.DataFrame(columns=["item_id", "annotator_id", "value"])
    report = A.agreement_report(empty)
    assert (report.n_votes, report.n_items, report.n_items_multi) == (0, 0, 0)
    for value, note in [
        (report.percent.pairwise, report.percent.note),
        (report.fleiss.kappa, report.fleiss.note),
        (report.krippendorff.alpha, report.krippendorff.note),
    ]:
        assert math.isnan(value) and "two or more" in note
    assert report.pairwise.empty and list(report.pairwise.columns) == list(A.PAIR_COLUMNS)
    assert A.majority_vote(empty).empty and A.annotator_stats(empty).empty
    assert A.fast_streaks(pd.DataFrame(columns=["annotator_id", "at", "seconds"])).empty
    json.dumps(report.to_dict(), allow_nan=False)


def test_single_annotator_counts_items_but_has_no_agreement() -> None:
    votes = [(i, "solo", i % 2) for i in range(5)]
    report = A.agreement_report(votes)
    assert (report.n_items, report.n_items_single, report.n_items_multi, report.n_annotators) == (5, 5, 0, 1)
    assert math.isnan(report.fleiss.kappa) and math.isnan(report.krippendorff.alpha)
    assert report.pairwise.empty
    stats = A.annotator_stats(votes)
    assert stats.loc[0, "n_compared"] == 0 and math.isnan(stats.loc[0, "agreement_with_majority"])


def test_identical_votes_make_chance_corrected_statistics_undefined() -> None:
    votes = [(i, a, 1) for i in range(6) for a in "abc"]
    report = A.agreement_report(votes)
    assert report.percent.pairwise == 1.0 and report.percent.all_agree == 1.0
    assert math.isnan(report.fleiss.kappa) and "chance agreement is 1" in report.fleiss.note
    assert math.isnan(report.krippendorff.alpha) and "expected disagreement is 0" in report.krippendorff.note
    assert report.pairwise["kappa"].isna().all()
    assert report.pairwise["note"].str.contains("same single class").all()
    assert report.pairwise["observed_agreement"].tolist() == [1.0, 1.0, 1.0]
    d = report.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["fleiss_kappa"]["kappa"] is None and d["pairwise_cohen_kappa"][0]["kappa"] is None


def test_pairs_below_min_overlap_get_nan_and_a_note() -> None:
    votes = _random_votes(0, n_items=30)
    pairs = A.cohen_kappa_pairs(votes, min_overlap=1000)
    assert pairs["kappa"].isna().all() and pairs["note"].str.contains("min_overlap=1000").all()
    assert (pairs["n_items"] > 0).all()
    with pytest.raises(ConfigError):
        A.cohen_kappa_pairs(votes, min_overlap=0)


def test_pairs_without_shared_items_are_left_out() -> None:
    votes = [("x", "a", 1), ("x", "b", 0), ("y", "c", 1), ("y", "d", 1)]
    pairs = A.cohen_kappa_pairs(votes)
    assert list(zip(pairs["annotator_a"], pairs["annotator_b"])) == [("a", "b"), ("c", "d")]


def test_report_to_dict_has_all_statistics_and_is_json() -> None:
    report = A.agreement_report(_from_coder_rows(KRIPPENDORFF_NOMINAL))
    d = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert d["krippendorff_alpha"]["alpha"] == pytest.approx(0.743, abs=5e-4)
    assert (d["n_votes"], d["n_items"], d["n_annotators"], d["n_items_multi"], d["n_items_single"]) == (
        41, 12, 4, 11, 1,
    )
    assert d["percent_agreement"]["pairwise"] == pytest.approx(report.percent.pairwise)
    assert len(d["pairwise_cohen_kappa"]) == 6 and set(d["pairwise_cohen_kappa"][0]) == set(A.PAIR_COLUMNS)


# --------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("votes", "message"),
    [
        (pd.DataFrame({"item_id": [1], "value": [1]}), "annotator_id"),
        ([("x", "a", 1), ("x", "a", 0)], "repeat an \\(item, annotator\\) pair"),
        (pd.DataFrame({"item_id": ["x"], "annotator_id": ["a"], "value": [None]}), "drop skipped votes"),
    ],
)
def test_malformed_votes_are_refused_with_a_fix(votes: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        A.percent_agreement(votes)  # type: ignore[arg-type]


def test_binary_functions_refuse_other_values_but_statistics_accept_categories() -> None:
    votes = [("x", "a", "yes"), ("x", "b", "no")]
    with pytest.raises(DataError, match="0 \\(no actor\\) or 1"):
        A.majority_vote(votes)
    assert A.percent_agreement(votes).pairwise == 0.0
    assert A.majority_vote([("x", "a", True), ("x", "b", 1.0)])["majority"].tolist() == [1]


def test_unsupported_alpha_level_is_refused() -> None:
    with pytest.raises(ConfigError, match="nominal"):
        A.krippendorff_alpha(TINY, level="ordinal")
