"""The home page in a real headless Chromium: first visit, then scoring the demo with the tiny model as a job
that outlives a page reload and a restart of the app.

Streamlit's dataframe draws on a canvas; its cells are read from the grid's accessible table
(``role=grid`` / ``role=gridcell``), which holds the rows currently scrolled into view.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from annotations.models import TrainRun
from annotations.users import create_user
from train_jobs.states import ACTIVE

if TYPE_CHECKING:
    from tests.e2e.conftest import StreamlitServer

pytestmark = pytest.mark.e2e

FIRST_TITLE = "Collins becomes first woman to command a space shuttle mission"
PASSWORD = "a long test password"


@pytest.fixture
def e2e_setup(e2e_db: sessionmaker[Session]) -> None:
    create_user(e2e_db, "rita", PASSWORD, "researcher")  # the demo dataset is imported at the first start


def test_first_visit_shows_the_demo_and_scoring_is_a_job_that_survives_a_reload_and_an_app_restart(
    start_streamlit: Callable[..., StreamlitServer], page: Page, e2e_db: sessionmaker[Session],
    screenshot: Callable[[Page, str], Path], sign_in: Callable[[Page, str, str, str], None],
) -> None:
    server = start_streamlit()
    sign_in(page, server.base_url, "rita", PASSWORD)  # a researcher lands on Articles

    caption = page.get_by_test_id("stCaptionContainer").filter(has_text="Texts are shown as plain text.")
    expect(caption).to_have_text(re.compile(r"^26 articles\."))  # waits for the first start (demo import)
    expect(page.get_by_test_id("stHeading").get_by_role("heading", level=1)).to_have_text("Articles")
    expect(page.get_by_role("combobox", name="Dataset")).to_have_value("demo")
    expect(page.get_by_test_id("stAlert").filter(has_text="no scores yet")).to_be_visible()

    table = page.get_by_test_id("stDataFrame")
    expect(table).to_be_visible()
    grid = table.locator("table[role=grid]")  # hidden from the accessibility tree, so CSS
    expect(grid).to_have_attribute("aria-rowcount", "27")  # a header row and the 26 articles
    first_row = grid.locator("tbody tr").first
    expect(first_row.locator("td[role=gridcell]").nth(2)).to_have_text(FIRST_TITLE)
    expect(first_row.locator("td[role=gridcell]").nth(0)).to_have_text(re.compile(r"^data:image/jpeg;base64,"))
    expect(first_row.locator("td[role=gridcell]").nth(3)).to_have_text("")  # no similarity yet (drawn as "None")
    screenshot(page, "home-first-visit")

    page.get_by_test_id("stExpander").get_by_text("Score this dataset with a model").click()
    expect(page.get_by_role("combobox", name="Model")).to_have_value(re.compile(r"^tiny-demo "))
    score = page.get_by_test_id("stButton").get_by_role("button", name="Score", exact=True)
    queued = page.get_by_test_id("stAlert").filter(has_text="Scoring 'demo' with tiny-demo is queued")
    score.click()
    try:  # the job's outcome shows once the click's run has ended
        expect(queued).to_be_visible(timeout=15_000)
    except AssertionError:  # a click that came while the page was still settling reached no run: click again
        expect(page.locator("[data-stale=true]")).to_have_count(0)
        score.click()
        expect(queued).to_be_visible()
    progress = page.get_by_test_id("stProgress").filter(has_text="Scoring with tiny-demo (summary)")
    scored = page.get_by_test_id("stAlert").filter(has_text="Scored 26 articles with tiny-demo.")
    expect(progress.or_(scored).first).to_be_visible()

    page.reload()  # a rerun of the page: the job is still there (or already done)
    expect(progress.or_(scored).first).to_be_visible()
    server.stop()  # the app goes down while the job works (it runs outside Streamlit)
    with e2e_db() as session:
        job = session.scalars(select(TrainRun)).one()
    assert job.state in ACTIVE, f"the job had ended before the app stopped: {job.state}"
    server = start_streamlit(port=server.port)
    page.reload()

    expect(scored).to_be_visible(timeout=300_000)  # the new server's poller settles the job; the page redraws
    expect(page.get_by_test_id("stAlert").filter(has_text="carry no meaning")).to_be_visible()
    expect(page.get_by_test_id("stAlert").filter(has_text="no scores yet")).to_have_count(0)
    similarity = first_row.locator("td[role=gridcell]").nth(3)
    expect(similarity).not_to_have_text("")  # the accessible table holds the unformatted number
    assert -1.0 <= float(similarity.text_content()) <= 1.0
    expect(page.get_by_test_id("stException")).to_have_count(0)
    screenshot(page, "home-scored")
