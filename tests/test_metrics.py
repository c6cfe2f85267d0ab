"""Metrics are checked against scikit-learn / SciPy, edge cases against hand computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from cftclip_core import metrics as M
from cftclip_core.errors import EvaluationError


def _data(seed: int, n: int = 300, decimals: int | None = 2) -> tuple[np.ndarray, np.ndarray]:
    """Scores correlated with labels; rounding creates ties like real cosine scores do."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = 0.2 + 0.1 * y + 0.1 * rng.normal(size=n)
    return (np.round(s, decimals) if decimals is not None else s), y


def _reference(s: np.ndarray, y: np.ndarray, t: float) -> dict[str, float]:
    pred = (s > t).astype(int)
    both = len(set(y.tolist())) == 2
    return {
        "f1": skm.f1_score(y, pred, zero_division=0),
        "macro_f1": skm.f1_score(y, pred, average="macro", labels=[0, 1], zero_division=0),
        "precision": skm.precision_score(y, pred, zero_division=0),
        "recall": skm.recall_score(y, pred, zero_division=0),
        "accuracy": skm.accuracy_score(y, pred),
        "roc_auc": skm.roc_auc_score(y, s) if both else math.nan,
        "average_precision": skm.average_precision_score(y, s) if both else math.nan,
        "spearman": stats.spearmanr(s, y).statistic if both else math.nan,
    }


def _assert_metrics_close(got: dict[str, float], want: dict[str, float]) -> None:
    for name in M.METRIC_NAMES:
        if math.isnan(want[name]):
            assert math.isnan(got[name]), name
        else:
            assert got[name] == pytest.approx(want[name], abs=1e-12), name


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("quantile", [0.1, 0.5, 0.9])
def test_metrics_match_sklearn_and_scipy(seed: int, quantile: float) -> None:
    s, y = _data(seed, decimals=2 if seed % 2 else None)
    t = float(np.quantile(s, quantile))
    m = M.compute_metrics(s, y, t)
    _assert_metrics_close(m.values(), _reference(s, y, t))
    tn, fp, fn, tp = skm.confusion_matrix(y, (s > t).astype(int), labels=[0, 1]).ravel()
    assert (m.tp, m.fp, m.tn, m.fn) == (tp, fp, tn, fn)
    assert (m.n, m.n_pos, m.n_neg) == (len(y), int(y.sum()), int((y == 0).sum()))


def test_score_equal_to_threshold_is_predicted_zero() -> None:
    m = M.compute_metrics([0.1, 0.5, 0.9], [0, 1, 1], threshold=0.5)
    assert (m.tp, m.fn, m.tn) == (1, 1, 1)


@pytest.mark.parametrize("label", [0, 1])
def test_one_class_only_gives_nan_with_note(label: int) -> None:
    s, _ = _data(7, n=40)
    y = np.full(40, label)
    t = float(np.median(s))
    m = M.compute_metrics(s, y, t)
    _assert_metrics_close(m.values(), _reference(s, y, t))
    assert any(f"only class {label}" in note for note in m.notes)
    if label == 0:
        assert m.f1 == 0.0 and m.recall == 0.0
        assert any("no item is labelled 1" in note for note in m.notes)


def test_all_scores_tied() -> None:
    y = np.array([0, 1, 1, 0, 1])
    s = np.full(5, 0.3)
    m = M.compute_metrics(s, y, 0.1)
    assert math.isnan(m.spearman)
    assert m.roc_auc == pytest.approx(skm.roc_auc_score(y, s)) == pytest.approx(0.5)
    assert m.average_precision == pytest.approx(skm.average_precision_score(y, s))
    assert m.f1 == pytest.approx(skm.f1_score(y, np.ones(5, int)))
    assert any("tied" in note for note in m.notes)


def test_nothing_predicted_positive_sets_precision_to_zero_with_note() -> None:
    m = M.compute_metrics([0.1, 0.2, 0.3], [0, 1, 1], threshold=0.9)
    assert m.precision == 0.0 and m.f1 == 0.0
    assert any("no item is predicted 1" in note for note in m.notes)


def test_nan_scores_are_reported_with_count_and_position() -> None:
    with pytest.raises(EvaluationError, match=r"2 NaN.*index 1, 3"):
        M.compute_metrics([0.1, np.nan, 0.2, np.nan], [0, 1, 0, 1], 0.1)
    with pytest.raises(EvaluationError, match="infinite"):
        M.evaluate([0.1, np.inf], [0, 1], 0.1)


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        ([0, 1, 2], r"0 or 1.*2 at index 2"),
        ([0, -1, 1], r"0 or 1.*-1 at index 1"),
        ([0, "yes", 1], "not a number"),
        ([0, None, 1], r"missing.*index 1"),
        ([0, 1], "one label per score"),
    ],
)
def test_invalid_labels_raise(labels: list, match: str) -> None:
    with pytest.raises(EvaluationError, match=match):
        M.evaluate([0.1, 0.2, 0.3], labels, 0.1)


def test_bool_and_string_labels_are_accepted() -> None:
    a = M.compute_metrics([0.1, 0.4, 0.3], [False, True, True], 0.2)
    b = M.compute_metrics([0.1, 0.4, 0.3], ["0", "1", "1"], 0.2)
    assert a == b and a.f1 == 1.0


# ---------------------------------------------------------------- thresholds


def test_f1_optimal_hand_example() -> None:
    # candidates: 0.05 -> F1 4/6, 0.15 -> 4/5, 0.25 -> 2/4, 0.35 -> 2/3, 0.4 -> 0
    th = M.choose_threshold("f1-optimal", [0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1])
    assert th.value == pytest.approx(0.15)
    assert th.strategy == "f1-optimal" and th.n_val == 4


def test_f1_optimal_ties_pick_lowest_threshold() -> None:
    # 0.05 (all positive) and 0.35 both give F1 = 2/3
    th = M.choose_threshold("f1-optimal", [0.1, 0.2, 0.3, 0.4], [1, 0, 0, 1])
    assert th.value == pytest.approx(0.05)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_f1_optimal_is_best_over_all_score_cuts(seed: int) -> None:
    s, y = _data(seed, n=120)
    th = M.choose_threshold("f1-optimal", s, y)
    cuts = np.concatenate(([s.min() - 1], np.unique(s)))
    best = max(skm.f1_score(y, (s > c).astype(int), zero_division=0) for c in cuts)
    assert skm.f1_score(y, (s > th.value).astype(int)) == pytest.approx(best)
    assert th.value not in set(s.tolist()) or th.value == s.max()


@pytest.mark.parametrize("labels", [None, [1, 0, 1, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
def test_val_median_is_label_free(labels: list[int] | None) -> None:
    # The original code: median of ALL validation scores; labels, if any, must not change it.
    threshold = M.choose_threshold("val-median", [0.1, 0.5, 0.2, 0.9, 0.4], labels)
    assert threshold.value == pytest.approx(0.4)
    assert threshold.n_val == 5


def test_fixed_threshold_from_number_or_numeric_string() -> None:
    assert M.choose_threshold(0.25) == M.Threshold(0.25, "fixed")
    assert M.choose_threshold(" 0.25 ").value == 0.25


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("median", [0.1, 0.2]), "unknown threshold strategy"),
        (("fixed", [0.1]), "needs a number"),
        (("f1-optimal", [0.1, 0.2]), "needs validation labels"),
        (("f1-optimal", [0.1, 0.2], [1, 1]), "both classes"),
        (("val-median", []), "empty"),
        (("val-median", None), "needs validation scores"),
        (("val-median", [0.1, np.nan]), "NaN"),
        ((float("nan"),), "finite"),
    ],
)
def test_choose_threshold_errors(args: tuple, match: str) -> None:
    with pytest.raises(EvaluationError, match=match):
        M.choose_threshold(*args)


def test_threshold_sweep_matches_sklearn_at_every_threshold() -> None:
    s, y = _data(5, n=80)
    sweep = M.threshold_sweep(s, y)
    assert np.all(np.diff(sweep.thresholds) > 0)
    assert len(sweep.thresholds) == len(np.unique(s)) + 1
    for i, t in enumerate(sweep.thresholds):
        ref = _reference(s, y, float(t))
        for name in ("f1", "macro_f1", "precision", "recall", "accuracy"):
            assert getattr(sweep, name)[i] == pytest.approx(ref[name], abs=1e-12), (name, t)
    assert sweep.tp[0] == y.sum() and sweep.fp[0] == (y == 0).sum()  # lowest: all predicted 1
    assert sweep.tp[-1] == 0 and sweep.fp[-1] == 0  # highest: all predicted 0
    frame = sweep.to_frame()
    assert list(frame.columns[:2]) == ["threshold", "tp"] and len(frame) == len(sweep.thresholds)


# ---------------------------------------------------------------- bootstrap and report


def test_bootstrap_interval_contains_point_and_is_reproducible() -> None:
    s, y = _data(11, n=200)
    t = float(np.median(s))
    a = M.evaluate(s, y, t, n_bootstrap=300, seed=3)
    b = M.evaluate(s, y, t, n_bootstrap=300, seed=3)
    c = M.evaluate(s, y, t, n_bootstrap=300, seed=4)
    assert a.to_dict() == b.to_dict()
    assert a.to_dict()["metrics"] != c.to_dict()["metrics"]
    for name in M.METRIC_NAMES:
        low, high = a.bootstrap.intervals[name]
        assert low <= getattr(a.metrics, name) <= high, name
        assert low < high, name
    assert a.bootstrap.n_valid["roc_auc"] == 300


def test_bootstrap_resamples_match_sklearn_on_the_same_items() -> None:
    s, y = _data(12, n=150)
    t = float(np.quantile(s, 0.4))
    boot = M.bootstrap_metrics(s, y, t, n_resamples=20, seed=9)
    idx = np.random.default_rng(9).integers(0, len(s), size=(20, len(s)))
    for b in (0, 7, 19):
        want = _reference(s[idx[b]], y[idx[b]], t)
        _assert_metrics_close({k: v[b] for k, v in boot.samples.items()}, want)


def test_bootstrap_does_not_depend_on_memory_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    s, y = _data(13, n=100)
    whole = M.bootstrap_metrics(s, y, 0.25, n_resamples=50, seed=1)
    monkeypatch.setattr("cftclip_core.metrics.counts.CHUNK_ELEMENTS", 700)  # 7 resamples per chunk
    chunked = M.bootstrap_metrics(s, y, 0.25, n_resamples=50, seed=1)
    for name in M.METRIC_NAMES:
        np.testing.assert_array_equal(whole.samples[name], chunked.samples[name])


def test_bootstrap_with_rare_class_reports_undefined_resamples() -> None:
    y = np.zeros(30, int)
    y[0] = 1
    s = np.linspace(0, 1, 30)
    boot = M.bootstrap_metrics(s, y, 0.5, n_resamples=200, seed=0)
    undefined = int(np.isnan(boot.samples["roc_auc"]).sum())
    assert 0 < undefined < 200
    assert boot.n_valid["roc_auc"] == 200 - undefined
    assert any(f"undefined in {undefined} of 200" in note for note in boot.notes)


def test_report_to_dict_is_plain_json_with_nan_as_none() -> None:
    threshold = M.Threshold(0.3, "val-median", 3)
    report = M.evaluate([0.1, 0.5, 0.7], [1, 1, 1], threshold, n_bootstrap=50)
    d = report.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text) == d
    assert d["metrics"]["roc_auc"] == {"value": None, "ci_low": None, "ci_high": None}
    assert d["metrics"]["f1"]["value"] == pytest.approx(0.8)
    assert d["threshold"] == {"value": 0.3, "strategy": "val-median", "n_val": 3}
    assert d["confusion"] == {"tp": 2, "fp": 0, "tn": 0, "fn": 1}
    assert any("only class 1" in note for note in d["notes"])


def test_evaluate_without_bootstrap() -> None:
    report = M.evaluate([0.1, 0.5], [0, 1], 0.3, n_bootstrap=0)
    assert report.bootstrap is None
    assert report.to_dict()["metrics"]["f1"] == {"value": 1.0}
    assert report.threshold == M.Threshold(0.3, "fixed")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"confidence": 1.0}, "confidence"), ({"n_bootstrap": -1}, "n_bootstrap")],
)
def test_evaluate_rejects_bad_settings(kwargs: dict, match: str) -> None:
    with pytest.raises(EvaluationError, match=match):
        M.evaluate([0.1, 0.5], [0, 1], 0.3, **kwargs)


# ---------------------------------------------------------------- seeds and paired comparisons


def test_aggregate_seeds_matches_hand_t_interval() -> None:
    values = [0.61, 0.64, 0.58, 0.66, 0.62]
    summary = M.aggregate_seeds(values)
    mean = sum(values) / 5
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 4)
    half = stats.t.ppf(0.975, 4) * std / math.sqrt(5)
    assert summary.n == 5
    assert summary.mean == pytest.approx(mean)
    assert summary.std == pytest.approx(std)
    assert (summary.ci_low, summary.ci_high) == pytest.approx((mean - half, mean + half))
    low, high = stats.t.interval(0.95, 4, loc=mean, scale=stats.sem(values))
    assert (summary.ci_low, summary.ci_high) == pytest.approx((low, high))


def test_aggregate_single_seed_and_errors() -> None:
    one = M.aggregate_seeds([0.7])
    assert one.mean == 0.7 and math.isnan(one.std) and math.isnan(one.ci_low)
    assert json.dumps(one.to_dict(), allow_nan=False)
    same = M.aggregate_seeds([0.5, 0.5, 0.5])
    assert (same.std, same.ci_low, same.ci_high) == (0.0, 0.5, 0.5)
    with pytest.raises(EvaluationError, match="NaN at position 1"):
        M.aggregate_seeds([0.5, float("nan")])
    with pytest.raises(EvaluationError, match="non-empty"):
        M.aggregate_seeds([])


def test_paired_seed_test_matches_scipy() -> None:
    a = [0.71, 0.69, 0.74, 0.70, 0.72]
    b = [0.66, 0.68, 0.70, 0.70, 0.65]
    result = M.paired_seed_test(a, b)
    ref = stats.ttest_rel(a, b)
    assert result.t_statistic == pytest.approx(ref.statistic)
    assert result.p_value == pytest.approx(ref.pvalue)
    diff = np.subtract(a, b)
    assert result.mean_diff == pytest.approx(diff.mean())
    assert result.std_diff == pytest.approx(diff.std(ddof=1))
    low, high = stats.t.interval(0.95, 4, loc=diff.mean(), scale=stats.sem(diff))
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high))
    assert (result.wins_a, result.wins_b, result.ties) == (4, 0, 1)
    with pytest.raises(EvaluationError, match="same seeds"):
        M.paired_seed_test(a, b[:4])


def test_paired_bootstrap_identical_models_show_no_difference() -> None:
    s, y = _data(21, n=100)
    r = M.paired_bootstrap(
        s, s.copy(), y, "f1", threshold_a=0.25, threshold_b=0.25, n_resamples=200
    )
    assert r.difference == 0.0 and (r.ci_low, r.ci_high) == (0.0, 0.0)
    assert r.p_value == 1.0


def test_paired_bootstrap_detects_a_better_model_and_matches_sklearn() -> None:
    rng = np.random.default_rng(22)
    y = rng.integers(0, 2, 300)
    good = y + 0.5 * rng.normal(size=300)
    bad = y + 3.0 * rng.normal(size=300)
    r = M.paired_bootstrap(good, bad, y, "roc_auc", n_resamples=400, seed=5)
    assert r.difference == pytest.approx(skm.roc_auc_score(y, good) - skm.roc_auc_score(y, bad))
    assert r.ci_low > 0 and r.p_value < 0.01
    assert r.n_valid == 400
    idx = np.random.default_rng(5).integers(0, 300, size=(400, 300))[17]
    want = skm.roc_auc_score(y[idx], good[idx]) - skm.roc_auc_score(y[idx], bad[idx])
    assert r.samples[17] == pytest.approx(want)


def test_paired_bootstrap_errors() -> None:
    with pytest.raises(EvaluationError, match="threshold_b"):
        M.paired_bootstrap([0.1, 0.2], [0.3, 0.4], [0, 1], "f1", threshold_a=0.1)
    with pytest.raises(EvaluationError, match="unknown metric"):
        M.paired_bootstrap([0.1, 0.2], [0.3, 0.4], [0, 1], "auc")
    with pytest.raises(EvaluationError, match="same items"):
        M.paired_bootstrap([0.1, 0.2], [0.3], [0, 1], "roc_auc")
