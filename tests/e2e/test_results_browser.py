"""The results pages in a real headless Chromium: the threshold explorer follows its slider, and a click on a
chart point opens that article's detail.

The instance is prepared before the server starts with ``seed_results`` (a synthetic dataset, two score sets,
three annotators' votes). Last, a link from the triage queue opens the same article on the Articles page. The slider is moved with the keyboard (End: the highest threshold, where nothing is
predicted 1). The chart's points use a nearest-point selection, so after the table is filtered down to one
article, a click anywhere in the plot picks that article's point: no pixel coordinates are guessed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Page, expect
from sqlalchemy.orm import Session, sessionmaker

from annotations.models import Item
from annotations.review import gold_frame
from annotations.score_sets import scores_frame
from annotations.settings import Settings
from annotations.users import create_user
from cftclip_core import metrics
from tests.test_results import Seeded, seed_results

pytestmark = pytest.mark.e2e

PASSWORD = "a long test password"


@pytest.fixture
def seeded(e2e_instance: Path, e2e_db: sessionmaker[Session], tmp_path: Path) -> Seeded:
    return seed_results(e2e_db, Settings.for_instance(e2e_instance), tmp_path / "data")


@pytest.fixture
def e2e_setup(seeded: Seeded, e2e_db: sessionmaker[Session]) -> None:
    create_user(e2e_db, "rita", PASSWORD, "researcher")


def metric_value(page: Page, label: str):  # noqa: ANN201 - a Playwright locator
    return page.get_by_test_id("stMetric").filter(has_text=label).get_by_test_id("stMetricValue")


def test_threshold_slider_changes_f1_and_a_chart_point_opens_the_article(
    streamlit_server: str, page: Page, seeded: Seeded, e2e_db: sessionmaker[Session],
    sign_in: Callable[[Page, str, str, str], None], screenshot: Callable[[Page, str], Path],
) -> None:
    with e2e_db() as session:  # what the page must show, computed without the page's own module
        scores = scores_frame(session, seeded.score_set_ids[-1]).merge(
            gold_frame(session, seeded.dataset_id)[["item_id", "gold"]], on="item_id")
    evaluated = scores[(scores["split"] != "val") & scores["gold"].notna()]
    val_median = float(np.median(scores.loc[scores["split"] == "val", "similarity"]))
    f1 = metrics.compute_metrics(evaluated["similarity"], evaluated["gold"].astype(int), val_median).f1

    sign_in(page, streamlit_server, "rita", PASSWORD)
    page.get_by_test_id("stSidebar").get_by_role("link", name="Thresholds").click()
    expect(metric_value(page, "F1")).to_have_text(f"{f1:.3f}")
    expect(page.get_by_test_id("stVegaLiteChart")).to_have_count(5)
    screenshot(page, "thresholds")
    page.get_by_role("slider").focus()
    page.keyboard.press("End")  # the highest threshold: nothing predicted 1, so F1 is 0
    expect(metric_value(page, "F1")).to_have_text("0.000")
    expect(metric_value(page, "Recall")).to_have_text("0.000")

    page.get_by_test_id("stSidebar").get_by_role("link", name="Articles").click()
    target = scores.iloc[5]
    search = page.get_by_label("Search titles, summaries and ids")
    search.fill(target["external_id"])
    search.press("Enter")
    expect(page.get_by_test_id("stCaptionContainer").filter(has_text="Texts are shown as plain text")).to_contain_text(
        "1 article.")
    chart = page.get_by_test_id("stVegaLiteChart")
    expect(chart).to_have_count(1)
    chart.locator("canvas, svg.marks").first.click()  # anywhere in the plot: the nearest (only) point
    with e2e_db() as session:
        title = session.get(Item, int(target["item_id"])).title
    expect(page.get_by_role("combobox", name="Open an article")).to_have_value(f"{target['external_id']}: {title}")
    expect(page.get_by_text("Similarity of each model")).to_be_visible()
    expect(page.get_by_test_id("stException")).to_have_count(0)
    screenshot(page, "article-detail")

    page.get_by_test_id("stSidebar").get_by_role("link", name="Disagreement").click()
    page.get_by_role("tab", name="Triage queue").click()
    queued = page.get_by_role("combobox", name="Item to triage")
    expect(queued).to_have_value(re.compile(r"^syn-"))
    first = queued.input_value()
    page.get_by_role("link", name="Open this article on the Articles page").click()
    expect(page.get_by_role("combobox", name="Open an article")).to_have_value(re.compile("^" + re.escape(first)))
    expect(page.get_by_test_id("stException")).to_have_count(0)
