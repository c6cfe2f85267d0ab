"""cftclip_core.results (pure) and annotations.results (queries): what the results pages show, checked against the
metrics library and brute force.

``seed_results`` (also used by the page tests, the browser test and the benchmark) fills a database the way
a project does: a synthetic dataset imported through the importer, score sets stored like scoring does,
and annotators voting through the labeling API.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from annotations import results as store
from annotations.importer import import_dataset
from annotations.labeling import cast_vote
from annotations.models import TriageDecision
from annotations.review import set_gold
from annotations.score_sets import store_score_set
from annotations.users import create_user
from cftclip_core import agreement, metrics, results
from cftclip_core.formats import read_table
from cftclip_core.results import thresholds
from cftclip_core.synthetic import WorldConfig, generate_dataset

# name, chance of voting against the file's label, share of the items they label
ANNOTATORS = (("amy", 0.05, 1.0), ("bob", 0.15, 1.0), ("cyd", 0.3, 0.5))
PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class Seeded:
    dataset_id: int
    score_set_ids: tuple[int, ...]  # the first separates the classes best
    researcher_id: int


def seed_results(factory, settings, folder: Path, n_items: int = 40, *, n_score_sets: int = 2,  # noqa: ANN001
                 annotators=ANNOTATORS, name: str = "synthetic", tiny_last: bool = False, seed: int = 0) -> Seeded:
    """A synthetic dataset (splits train/val/test, labels in the file), score sets whose similarity tracks the
    label less and less, and annotators voting with their own error rates."""
    table = read_table(generate_dataset(folder / name, n_items, WorldConfig(image_size=32), seed=seed))
    dataset = import_dataset(factory, settings, table, name)
    with factory() as session:
        items = store.load_results(session, dataset.id, "imported").items
    labels = items["reference"].to_numpy(dtype=int)
    rng = np.random.default_rng(seed)
    ids = []
    for k in range(n_score_sets):
        similarity = 0.2 + 0.12 / (k + 1) * labels + rng.normal(0.0, 0.04, labels.size)
        ids.append(store_score_set(factory, dataset.id, f"model-{k}", f"fingerprint-{k}", "title",
                                   dict(zip(items["item_id"].tolist(), ((float(s), False) for s in similarity))),
                                   meaningless=tiny_last and k == n_score_sets - 1).id)
    for username, error, share in annotators:
        user = create_user(factory, username, PASSWORD, "annotator")
        for position, (item_id, label) in enumerate(zip(items["item_id"], labels)):
            if position < share * len(labels):
                cast_vote(factory, user.id, int(item_id), int(label) ^ int(rng.random() < error))
    researcher = create_user(factory, f"{name}-lead", PASSWORD, "researcher")
    return Seeded(dataset.id, tuple(ids), researcher.id)


@pytest.fixture
def seeded(factory, instance, tmp_path: Path) -> Seeded:  # noqa: ANN001
    return seed_results(factory, instance, tmp_path)


def load(factory, seeded: Seeded, reference: str = "gold") -> results.ResultsData:  # noqa: ANN001
    with factory() as session:
        return store.load_results(session, seeded.dataset_id, reference)


def test_every_score_set_vote_and_gold_line_up_per_item(factory, seeded: Seeded) -> None:  # noqa: ANN001
    from annotations.score_sets import scores_frame

    data = load(factory, seeded)
    assert len(data.items) == 40 and data.annotators == ("amy", "bob", "cyd")
    for info in data.score_sets:
        with factory() as session:
            stored = scores_frame(session, info.id).set_index("item_id")["similarity"]
        assert np.allclose(data.items.set_index("item_id")[info.column].loc[stored.index], stored)
    votes = data.votes.pivot(index="item_id", columns="annotator", values="value")
    assert (data.items.set_index("item_id")["label_amy"] == votes["amy"]).all()
    assert data.items["label_cyd"].isna().sum() == 20  # cyd labelled half the items
    n_yes = votes.sum(axis=1, min_count=1)
    n = votes.notna().sum(axis=1)
    majority = pd.Series(np.where(2 * n_yes > n, 1, np.where(2 * n_yes < n, 0, -1)), index=votes.index)
    by_item = data.items.set_index("item_id")
    assert (by_item["reference"].fillna(-1) == majority).all()
    assert set(by_item["reference_source"]) <= {"majority", "tie"}

    item = int(by_item.index[0])
    set_gold(factory, item, 1 - int(majority[item]) if majority[item] >= 0 else 0, "checked the photo",
             seeded.researcher_id)
    settled = load(factory, seeded).items.set_index("item_id").loc[item]
    assert settled["reference_source"] == "adjudicated" and settled["reference"] != majority[item]
    imported = load(factory, seeded, "imported").items
    assert set(imported["reference_source"]) == {"imported"} and imported["reference"].isin([0, 1]).all()


def test_thresholds_are_the_metrics_library_strategies(factory, seeded: Seeded) -> None:  # noqa: ANN001
    data = load(factory, seeded, "imported")
    strong = seeded.score_set_ids[0]
    items = data.items
    val = items[items["split"] == "val"]
    column = data.score_set(strong).column
    median = results.choose_threshold(data, strong, "val-median")
    assert median.value == pytest.approx(float(np.median(val[column]))) and median.n_val == len(val)
    optimal = results.choose_threshold(data, strong, "f1-optimal")
    expected = metrics.choose_threshold("f1-optimal", val[column].to_numpy(), val["reference"].to_numpy(dtype=int))
    assert optimal.value == pytest.approx(expected.value)
    assert results.choose_threshold(data, strong, 0.25).value == 0.25

    no_splits = dataclasses.replace(data, items=items.assign(split=None))
    fallback = results.choose_threshold(no_splits, strong, "val-median")
    assert fallback.value == pytest.approx(float(items[column].median())) and "no scored item in the 'val' split" in fallback.note
    missing = results.choose_threshold(no_splits, strong, "f1-optimal")
    assert missing.value is None and "both classes" in missing.note
    assert no_splits.subsets() == [results.ALL_ITEMS]
    assert data.subsets()[:2] == [results.OUTSIDE_VALIDATION, results.ALL_ITEMS]
    assert set(results.evaluated(data, strong)["split"]) == {"train", "test"}


def test_curves_are_thinned_keep_the_best_f1_and_kappa_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 1000)
    scores = 0.2 + 0.05 * labels + rng.normal(0, 0.05, 1000)
    curves = results.threshold_curves(scores, labels)
    assert len(curves) <= thresholds.CURVE_POINTS + 1 and curves["threshold"].is_monotonic_increasing
    assert curves["f1"].max() == pytest.approx(metrics.threshold_sweep(scores, labels).f1.max())
    for row in curves.iloc[[10, 150, 250]].itertuples():
        assert row.kappa == pytest.approx(cohen_kappa_score(labels, (scores > row.threshold).astype(int)))
        assert row.tpr == pytest.approx(np.mean(scores[labels == 1] > row.threshold))
    assert np.isnan(agreement.kappa_from_counts(5, 0, 0, 0))  # both raters always said 1: undefined


def test_histogram_counts_every_item_once_per_label() -> None:
    frame = pd.DataFrame({"similarity": [0.1, 0.2, 0.2, 0.3, 0.5],
                          "reference": pd.array([1, 0, None, 1, 1], dtype="Int64")})
    hist = results.similarity_histogram(frame, bins=4)
    assert hist.groupby("reference")["count"].sum().to_dict() == {"0": 1, "1": 3, "unlabelled": 1}
    assert len(set(zip(hist["bin_start"], hist["bin_end"]))) == 4


def test_human_agreement_compares_each_annotator_with_the_others_majority() -> None:
    rng = np.random.default_rng(7)
    n_items, names = 30, ["a", "b", "c", "d"]
    truth = rng.integers(0, 2, n_items)
    votes = pd.DataFrame([(i, name, int(truth[i]) ^ int(rng.random() < 0.25)) for i in range(n_items)
                          for name in names if rng.random() < 0.85], columns=["item_id", "annotator", "value"])
    counts = votes.groupby("item_id")["value"].agg(["size", "sum"])
    adjudicated = {0: 1, 1: 0, 2: 1}
    items = pd.DataFrame({"item_id": counts.index, "n_votes": counts["size"], "n_yes": counts["sum"]})
    majority = np.where(2 * items["n_yes"] > items["n_votes"], 1, np.where(2 * items["n_yes"] < items["n_votes"], 0, -1))
    items["reference"] = pd.array([adjudicated.get(i, m if m >= 0 else None) for i, m in zip(items["item_id"], majority)],
                                  dtype="Int64")
    items["reference_source"] = ["adjudicated" if i in adjudicated else "majority" if m >= 0 else "tie"
                                 for i, m in zip(items["item_id"], majority)]
    data = results.ResultsData(1, "gold", items.reset_index(drop=True), votes, (), tuple(names))
    table = results.human_agreement(data).set_index("annotator")
    for name in names:
        mine, reference = [], []
        for row in votes[votes["annotator"] == name].itertuples():
            others = votes[(votes["item_id"] == row.item_id) & (votes["annotator"] != name)]["value"]
            if row.item_id in adjudicated:
                ref = adjudicated[row.item_id]
            elif others.sum() * 2 != len(others) and len(others):
                ref = int(others.sum() * 2 > len(others))
            else:
                continue
            mine.append(row.value)
            reference.append(ref)
        assert table.loc[name, "n_reference"] == len(mine)
        assert table.loc[name, "kappa_reference"] == pytest.approx(cohen_kappa_score(mine, reference))
        assert table.loc[name, "agreement_reference"] == pytest.approx(np.mean(np.array(mine) == np.array(reference)))
    assert results.human_ceiling(table.reset_index()) == pytest.approx(table["kappa_reference"].mean())


def test_filters_combine_and_search_ignores_case(factory, seeded: Seeded) -> None:  # noqa: ANN001
    data = load(factory, seeded)
    strong = seeded.score_set_ids[0]
    frame = results.articles(data, strong, results.choose_threshold(data, strong, "val-median").value)
    every = results.filter_articles(frame, results.ArticleFilter())
    assert len(every) == 40
    tests = results.filter_articles(frame, results.ArticleFilter(splits=("test",)))
    assert len(tests) == 4 and set(tests["split"]) == {"test"}
    ones = results.filter_articles(frame, results.ArticleFilter(references=(1,), predictions=(0,)))
    assert ((ones["reference"] == 1) & (ones["prediction"] == 0)).all()
    assert len(ones) == ((frame["reference"] == 1) & (frame["prediction"] == 0)).sum()
    unlabelled = results.filter_articles(frame, results.ArticleFilter(references=(None,)))
    assert unlabelled["reference"].isna().all() and len(unlabelled) == frame["reference"].isna().sum()
    for kind, column in (("annotators", "annotators_disagree"), ("model", "model_disagrees")):
        chosen = results.filter_articles(frame, results.ArticleFilter(disagreement=kind))
        assert len(chosen) == frame[column].sum() and chosen[column].all()
    word = frame.iloc[5]["title"].split()[0]
    found = results.filter_articles(frame, results.ArticleFilter(text=word.upper()))
    assert frame.iloc[5]["item_id"] in found["item_id"].tolist()
    assert found["title"].str.lower().str.contains(word.lower()).all()
    by_id = results.filter_articles(frame, results.ArticleFilter(text=frame.iloc[7]["external_id"]))
    assert by_id["item_id"].tolist() == [frame.iloc[7]["item_id"]]
    assert results.filter_articles(frame, results.ArticleFilter(flagged_only=True)).empty


def test_triage_verdict_is_recorded_replaced_refused_and_exported(factory, instance, seeded: Seeded,  # noqa: ANN001
                                                                  tmp_path: Path) -> None:
    data = load(factory, seeded)
    strong, weak = seeded.score_set_ids
    threshold = results.choose_threshold(data, weak, "val-median")
    frame = results.with_predictions(results.evaluated(data, weak), threshold.value)
    queue = results.triage_queue(frame, 0.25, pd.DataFrame(columns=["item_id", "verdict", "note", "decided_by",
                                                                    "decided_at"]))
    assert queue["model_disagrees"].all() and queue["margin"].is_monotonic_decreasing
    item = int(frame.iloc[0]["item_id"])
    with factory() as session:
        before = store.data_version(session, seeded.dataset_id)
    store.record_triage(factory, item, weak, "ambiguous", "crop hides the face", seeded.researcher_id, threshold)
    store.record_triage(factory, item, weak, "model_wrong", " the minister is in the photo ", seeded.researcher_id,
                          threshold)
    with pytest.raises(results.ResultsError, match="verdict is one of"):
        store.record_triage(factory, item, weak, "dunno", "", seeded.researcher_id, threshold)
    with pytest.raises(results.ResultsError, match="choose a threshold first"):
        store.record_triage(factory, item, weak, "ambiguous", "", seeded.researcher_id,
                              results.ThresholdChoice("f1-optimal", None))
    other = seed_results(factory, instance, tmp_path / "other", 4, n_score_sets=1, annotators=(), name="other")
    with pytest.raises(results.ResultsError, match="not in the dataset"):
        store.record_triage(factory, item, other.score_set_ids[0], "ambiguous", "", seeded.researcher_id, threshold)
    with factory() as session:
        decisions = store.triage_decisions(session, weak)
        hard = store.hard_cases(session, seeded.dataset_id)
        assert session.query(TriageDecision).count() == 1
        assert store.data_version(session, seeded.dataset_id) != before
    assert decisions[["item_id", "verdict", "note"]].values.tolist() == [[item, "model_wrong", "the minister is in the photo"]]
    assert hard[["verdict", "score_set_id", "decided_by"]].values.tolist() == [["model_wrong", weak, "synthetic-lead"]]
    assert hard.iloc[0]["similarity"] == pytest.approx(frame.iloc[0]["similarity"])
    assert hard.iloc[0]["image"].startswith("media/")
    assert (hard.iloc[0]["threshold"], hard.iloc[0]["threshold_strategy"]) == (threshold.value, "val-median")
    assert hard.iloc[0]["prediction"] == frame.iloc[0]["prediction"]  # what the model said at that threshold


def test_metrics_table_matches_evaluate_and_flags_the_tiny_model(factory, instance, tmp_path: Path) -> None:  # noqa: ANN001
    seeded = seed_results(factory, instance, tmp_path, n_score_sets=3, tiny_last=True)
    data = load(factory, seeded, "imported")
    table = results.metrics_table(data, "val-median", n_bootstrap=200).set_index("score_set_id")
    for score_set_id in seeded.score_set_ids:
        scores, labels = results.labelled(results.evaluated(data, score_set_id))
        threshold = results.choose_threshold(data, score_set_id, "val-median").value
        report = metrics.evaluate(scores, labels, threshold, n_bootstrap=200)
        row = table.loc[score_set_id]
        assert row["threshold"] == pytest.approx(threshold) and row["n_evaluated"] == 36
        for name in metrics.METRIC_NAMES:
            assert row[name] == pytest.approx(getattr(report.metrics, name))
        assert (row["f1_low"], row["f1_high"]) == pytest.approx(report.bootstrap.intervals["f1"])
    assert table.loc[seeded.score_set_ids[0], "f1"] > table.loc[seeded.score_set_ids[2], "f1"]
    assert "meaningless" in table.loc[seeded.score_set_ids[2], "score_set"]


def test_comparison_is_the_paired_bootstrap_on_shared_items(factory, seeded: Seeded) -> None:  # noqa: ANN001
    data = load(factory, seeded, "imported")
    a, b = seeded.score_set_ids
    comparison = results.compare_score_sets(data, a, b, "val-median", "f1", n_resamples=300)
    frame = results.evaluated(data, a)
    expected = metrics.paired_bootstrap(frame["similarity"], frame[data.score_set(b).column], frame["reference"].astype(int),
                                        threshold_a=results.choose_threshold(data, a, "val-median").value,
                                        threshold_b=results.choose_threshold(data, b, "val-median").value,
                                        n_resamples=300)
    assert comparison.n_items == 36 and comparison.result.difference == pytest.approx(expected.difference)
    assert (comparison.result.ci_low, comparison.result.p_value) == pytest.approx((expected.ci_low, expected.p_value))
    assert comparison.differences["count"].sum() == expected.n_valid
    with pytest.raises(results.ResultsError, match="two different"):
        results.compare_score_sets(data, a, a, "val-median")


def test_confusion_cells_count_every_labelled_item(factory, seeded: Seeded) -> None:  # noqa: ANN001
    data = load(factory, seeded, "imported")
    a = seeded.score_set_ids[0]
    frame = results.with_predictions(results.evaluated(data, a), 0.25)
    counts = results.confusion_counts(results.confusion_cells(frame)).set_index("cell")["count"]
    m = metrics.compute_metrics(*results.labelled(frame), 0.25)
    assert counts.to_dict() == {"TP": m.tp, "FP": m.fp, "FN": m.fn, "TN": m.tn}


def test_data_version_changes_with_every_kind_of_write(factory, seeded: Seeded) -> None:  # noqa: ANN001
    def version() -> tuple[object, ...]:
        with factory() as session:
            return store.data_version(session, seeded.dataset_id)

    seen = [version()]
    data = load(factory, seeded)
    item = int(data.items.iloc[0]["item_id"])
    amy = 1  # the first user created
    cast_vote(factory, amy, item, 1 - int(data.items.iloc[0]["label_amy"]))
    seen.append(version())
    set_gold(factory, item, 1, "settled", seeded.researcher_id)
    seen.append(version())
    store_score_set(factory, seeded.dataset_id, "another", "fp", "summary", {item: (0.3, False)})
    seen.append(version())
    store.record_triage(factory, item, seeded.score_set_ids[0], "ambiguous", "", seeded.researcher_id,
                          results.ThresholdChoice("fixed", 0.2))
    seen.append(version())
    assert len(set(seen)) == len(seen)


def test_nothing_labelled_yet_says_so_instead_of_failing(factory, instance, tmp_path: Path) -> None:  # noqa: ANN001
    seeded = seed_results(factory, instance, tmp_path, n_items=12, annotators=())
    data = load(factory, seeded)
    assert data.items["reference"].isna().all() and data.votes.empty
    a = seeded.score_set_ids[0]
    assert results.choose_threshold(data, a, "f1-optimal").value is None
    table = results.metrics_table(data, "val-median", n_bootstrap=10)
    assert (table["n_evaluated"] == 0).all() and table["note"].str.contains("no labelled item").all()
    assert results.human_agreement(data).empty
    with pytest.raises(results.ResultsError, match="share no labelled item"):
        results.compare_score_sets(data, *seeded.score_set_ids, "val-median")
