"""The results pages (Articles, Thresholds, Disagreement, Models) through Streamlit's AppTest, on a database
seeded with a synthetic dataset, score sets and votes; the numbers shown are checked against the metrics
library, with gold labels and scores read back through the review and score-set modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from annotations.labeling import cast_vote
from annotations.models import Item, TriageDecision
from annotations.review import gold_frame
from annotations.score_sets import scores_frame
from annotations.users import create_user
from cftclip_core import metrics
from tests.conftest import app_test, sessions
from tests.test_results import Seeded, seed_results

RESEARCHER = ("rita", "researcher")
RESULTS_PAGES = ["pages/thresholds.py", "pages/disagreement.py", "pages/models.py"]



@pytest.fixture
def seeded(app_instance, tmp_path: Path) -> Seeded:  # noqa: ANN001
    return seed_results(sessions(app_instance), app_instance, tmp_path)


def open_page(settings, page: str):  # noqa: ANN001, ANN201
    """The page as a researcher reaches it: through the app's navigation."""
    at = app_test(settings, user=RESEARCHER).run()
    return at.switch_page(page).run()


def shown(at, label: str) -> str:  # noqa: ANN001
    return next(m.value for m in at.metric if m.label == label)


def expected_gold(settings, seeded: Seeded, score_set_id: int) -> tuple[pd.DataFrame, float]:  # noqa: ANN001
    """Scores with the gold label in force, and the val-median threshold, read without annotations.results."""
    with sessions(settings)() as session:
        scores = scores_frame(session, score_set_id)
        gold = gold_frame(session, seeded.dataset_id)[["item_id", "gold"]]
    frame = scores.merge(gold, on="item_id")
    return frame, float(np.median(frame.loc[frame["split"] == "val", "similarity"]))


@pytest.mark.parametrize("page", RESULTS_PAGES)
def test_results_pages_refuse_annotators_and_visitors(app_instance, page: str) -> None:  # noqa: ANN001
    at = app_test(app_instance, page, user=("ann", "annotator")).run()
    assert any("you are signed in as an annotator" in e.value for e in at.error)
    assert not at.dataframe and not at.get("vega_lite_chart")
    at = app_test(app_instance, page).run()
    assert any("Please sign in first" in e.value for e in at.error)


def test_thresholds_show_the_libraries_numbers_and_follow_the_slider(app_instance, seeded: Seeded) -> None:  # noqa: ANN001
    at = open_page(app_instance, "pages/thresholds.py")
    assert not at.exception
    newest = seeded.score_set_ids[-1]  # score sets are listed newest first
    frame, val_median = expected_gold(app_instance, seeded, newest)
    evaluated = frame[(frame["split"] != "val") & frame["gold"].notna()]
    scores, labels = evaluated["similarity"].to_numpy(), evaluated["gold"].to_numpy(dtype=int)
    at_median = metrics.compute_metrics(scores, labels, val_median)
    assert shown(at, "F1") == f"{at_median.f1:.3f}"
    assert shown(at, "ROC-AUC") == f"{at_median.roc_auc:.3f}"
    table = at.dataframe[0].value.set_index("threshold_name")
    assert table.loc["val-median", "threshold"] == pytest.approx(val_median)
    assert table.loc["val-median", "recall"] == pytest.approx(at_median.recall)
    assert any("annotators' majority for" in c.value for c in at.caption)  # which gold stands is said
    assert len(at.get("vega_lite_chart")) == 5  # distributions, P/R/F1, ROC, PR, agreement with the ceiling

    at.slider(key=f"thresholds_slider_{newest}").set_value(0.26).run()
    assert shown(at, "F1") == f"{metrics.compute_metrics(scores, labels, 0.26).f1:.3f}"
    assert all(len(m.label) <= 10 for m in at.metric), "six metrics share a row: a long label is cut"
    assert shown(at, "F1") != f"{at_median.f1:.3f}"


def test_thresholds_empty_states_say_what_to_do(app_instance, tmp_path: Path) -> None:  # noqa: ANN001
    factory = sessions(app_instance)
    at = open_page(app_instance, "pages/thresholds.py")  # only the demo dataset, never scored
    assert any("no scores yet" in i.value for i in at.info) and not at.exception

    seeded = seed_results(factory, app_instance, tmp_path, 12, n_score_sets=1, annotators=(), name="unlabelled")
    at = app_test(app_instance, user=RESEARCHER)
    at.session_state["thresholds_dataset"] = "unlabelled"
    at.run().switch_page("pages/thresholds.py").run()
    assert any("No labels yet" in i.value for i in at.info) and not at.exception
    assert len(at.get("vega_lite_chart")) == 1  # the scores alone

    voter = create_user(factory, "yes-sayer", "correct horse battery", "annotator")
    with factory() as session:
        item_ids = session.scalars(select(Item.id).where(Item.dataset_id == seeded.dataset_id)).all()
    for item_id in item_ids:
        cast_vote(factory, voter.id, item_id, 1)
    at.run()
    assert any("labelled items are 1" in w.value for w in at.warning) and not at.exception


def test_articles_show_every_model_vote_and_gold_and_open_a_detail(app_instance, seeded: Seeded) -> None:  # noqa: ANN001
    factory = sessions(app_instance)
    at = open_page(app_instance, "pages/home.py")
    assert not at.exception
    table = at.dataframe[0].value
    newest, oldest = seeded.score_set_ids[-1], seeded.score_set_ids[0]
    frame, val_median = expected_gold(app_instance, seeded, newest)
    expected = frame.set_index("external_id")
    got = table.set_index("external_id").loc[expected.index]
    assert np.allclose(got["similarity"], expected["similarity"])
    assert (got["prediction"] == (expected["similarity"] > val_median).astype(int)).all()
    assert (got["reference"].fillna(-1) == expected["gold"].fillna(-1)).all()
    assert {"label_amy", "label_bob", "label_cyd", f"sim_{oldest}"} <= set(table.columns)
    assert any(f"Threshold in force: {val_median:.3f}" in c.value for c in at.caption)

    target = expected.index[5]
    at.text_input(key="articles_search").input(target).run()
    assert at.dataframe[0].value["external_id"].tolist() == [target]
    assert any(c.value.startswith("1 article.") and "Filtered from 40" in c.value for c in at.caption)
    picker = at.selectbox(key="articles_item").options  # the picker follows the search, as the table does
    assert len(picker) == 1 and picker[0].startswith(f"{target}: ")
    at.text_input(key="articles_search").set_value("").run()
    assert len(at.selectbox(key="articles_item").options) == 40

    with factory() as session:
        item = session.scalars(select(Item).where(Item.dataset_id == seeded.dataset_id, Item.split == "train")).first()
        item.extra = {**item.extra, "counterfactual": "<b>Someone else</b> waves"}
        session.commit()
        item_id, title = item.id, item.title
    at.selectbox(key="articles_item").set_value(item_id).run()
    assert not at.exception
    html = " ".join(h.value for h in at.get("html"))
    assert title in html and "&lt;b&gt;Someone else&lt;/b&gt; waves" in html  # plain text, never markup
    models = at.dataframe[1].value
    assert len(models) == 2 and models["similarity"].notna().all()
    assert at.dataframe[2].value["annotator"].tolist() == ["amy", "bob", "cyd"][: len(at.dataframe[2].value)]


def test_disagreement_cells_annotators_and_triage(app_instance, seeded: Seeded) -> None:  # noqa: ANN001
    factory = sessions(app_instance)
    at = open_page(app_instance, "pages/disagreement.py")
    assert not at.exception
    frame, val_median = expected_gold(app_instance, seeded, seeded.score_set_ids[-1])
    evaluated = frame[(frame["split"] != "val") & frame["gold"].notna()]
    expected = metrics.compute_metrics(evaluated["similarity"], evaluated["gold"].astype(int), val_median)
    at.segmented_control(key="disagreement_cell").set_value("FP").run()
    behind = next(d.value for d in at.dataframe if "share_yes" in d.value.columns and "n_votes" in d.value.columns)
    assert len(behind) == expected.fp and (behind["prediction"] == 1).all() and (behind["reference"] == 0).all()
    annotators = next(d.value for d in at.dataframe if "kappa_model" in d.value.columns)
    assert annotators["annotator"].tolist() == ["amy", "bob", "cyd"]

    save = next(b for b in at.button if b.label == "Save verdict")
    save.click().run()  # no verdict picked: refused, nothing written
    assert any("Pick a verdict first" in e.value for e in at.error)
    with factory() as session:
        assert session.scalars(select(TriageDecision)).first() is None
    next(r for r in at.radio if r.label == "Why do they disagree?").set_value("humans_wrong")
    next(t for t in at.text_input if t.label == "Note (optional)").input("the face is clearly visible")
    next(b for b in at.button if b.label == "Save verdict").click().run()
    assert not at.exception
    with factory() as session:
        decision = session.scalars(select(TriageDecision)).one()
    assert (decision.verdict, decision.note, decision.score_set_id) == (
        "humans_wrong", "the face is clearly visible", seeded.score_set_ids[-1])
    assert any("Hard cases: 1 triaged" in c.value for c in at.caption)

    at.toggle(key="triage_undecided").set_value(True).run()  # the item just decided leaves the queue
    assert at.selectbox(key="triage_item").value != decision.item_id
    next(r for r in at.radio if r.label == "Why do they disagree?").set_value("ambiguous")
    next(b for b in at.button if b.label == "Save verdict").click().run()
    assert not at.exception and any("Hard cases: 2 triaged" in c.value for c in at.caption)


def test_models_table_and_paired_bootstrap_match_the_library(app_instance, seeded: Seeded) -> None:  # noqa: ANN001
    at = open_page(app_instance, "pages/models.py")
    assert not at.exception
    table = at.dataframe[0].value.set_index("score_set")
    pairs = {}
    for score_set_id in seeded.score_set_ids:
        frame, val_median = expected_gold(app_instance, seeded, score_set_id)
        evaluated = frame[(frame["split"] != "val") & frame["gold"].notna()]
        pairs[score_set_id] = (evaluated, val_median)
        report = metrics.evaluate(evaluated["similarity"], evaluated["gold"].astype(int), val_median, n_bootstrap=1000)
        row = table[table.index.str.startswith(f"#{score_set_id} ")].iloc[0]
        assert row["f1"] == pytest.approx(report.metrics.f1) and row["roc_auc"] == pytest.approx(report.metrics.roc_auc)
        assert row["f1_low"] == pytest.approx(report.bootstrap.intervals["f1"][0])
    (a, ta), (b, tb) = pairs[seeded.score_set_ids[-1]], pairs[seeded.score_set_ids[0]]  # A = newest, B = the next
    paired = metrics.paired_bootstrap(a["similarity"], b.set_index("item_id").loc[a["item_id"], "similarity"],
                                      a["gold"].astype(int), threshold_a=ta, threshold_b=tb)
    assert shown(at, "A - B") == f"{paired.difference:.3f}"
    assert shown(at, "p-value (two-sided)") == f"{paired.p_value:.3f}"


@pytest.mark.parametrize("page", RESULTS_PAGES)
def test_results_pages_without_scores_point_to_the_articles_page(app_instance, page: str) -> None:  # noqa: ANN001
    at = open_page(app_instance, page)
    assert not at.exception
    assert any("no scores yet" in i.value for i in at.info)


def test_a_link_from_another_page_opens_its_article(app_instance, seeded: Seeded) -> None:  # noqa: ANN001
    with sessions(app_instance)() as session:
        item = session.scalars(select(Item).where(Item.dataset_id == seeded.dataset_id, Item.position == 7)).one()
    at = app_test(app_instance, "pages/home.py", user=RESEARCHER)
    at.query_params["dataset"] = "synthetic"
    at.query_params["item"] = str(item.id)
    at.run()
    assert not at.exception
    assert at.selectbox(key="articles_dataset").value == "synthetic"
    assert at.selectbox(key="articles_item").value == item.id
    assert item.title in " ".join(h.value for h in at.get("html"))


def test_scatter_charts_draw_a_sample_below_altairs_row_limit() -> None:
    from studio.charts import POINT_LIMIT, points_chart

    rng = np.random.default_rng(0)
    points = pd.DataFrame({"item_id": range(6000), "external_id": "x", "title": "t", "similarity": rng.random(6000),
                           "share_yes": rng.random(6000), "reference_name": "1"})
    spec = points_chart(points, "similarity", "share_yes", 0.5, "Items", "x", "y").to_dict()  # raises above 5,000
    rows = max(len(values) for values in spec["datasets"].values())
    assert rows == POINT_LIMIT and "A random 2,000 of 6,000 items" in str(spec)
