"""The queue moves with no browser open, and one poller serves an instance whatever the number of app
processes: a real ``streamlit run app.py`` (two of them), real jobs (a stand-in module that beats and exits,
run by the real launcher), and a browser that is closed as soon as the app has served one page."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from annotations.models import TrainRun
from annotations.settings import Settings
from annotations.users import create_user
from tests.train_jobs_helpers import queue_quick_runs
from train_jobs.poller import read_status

if TYPE_CHECKING:
    from tests.e2e.conftest import StreamlitServer

pytestmark = pytest.mark.e2e

PASSWORD = "a long test password"


@pytest.fixture
def e2e_setup(e2e_db: sessionmaker[Session], e2e_instance: Path, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> None:
    """A researcher, and an experiment of two queued stand-in runs sharing one CPU slot."""
    create_user(e2e_db, "rita", PASSWORD, "researcher")
    queue_quick_runs(e2e_db, e2e_instance / "runs" / "quick", tmp_path / "jobs-code", monkeypatch, seconds=2)


def wait_for(condition: Callable[[], object], what: str, seconds: float = 180.0) -> object:
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)
    return value


def runs(factory: sessionmaker[Session]) -> list[TrainRun]:
    with factory() as session:
        return list(session.scalars(select(TrainRun).order_by(TrainRun.seed)))


def visit_and_close(page: Page, base_url: str, sign_in: Callable[[Page, str, str, str], None]) -> None:
    """One page served by the app (its poller starts with it), then the browser is gone."""
    sign_in(page, base_url, "rita", PASSWORD)
    expect(page.get_by_role("heading", name="Articles", exact=True)).to_be_visible()
    page.context.close()


def test_with_every_browser_closed_the_next_queued_run_starts_and_one_poller_serves_the_instance(
        start_streamlit: Callable[..., StreamlitServer], new_page: Callable[[], Page], e2e_db: sessionmaker[Session],
        e2e_instance: Path, sign_in: Callable[[Page, str, str, str], None]) -> None:
    settings = Settings.for_instance(e2e_instance)
    first = start_streamlit()
    visit_and_close(new_page(), first.base_url, sign_in)

    done = wait_for(lambda: (found := runs(e2e_db)) and all(r.state == "succeeded" for r in found) and found,
                    "both runs to succeed with no browser open")
    assert done[1].launched_at >= done[0].finished_at  # one CPU slot: the second started when the first ended
    assert all(r.results_at is not None for r in done)
    status = read_status(settings)
    assert (status.owner, status.pid) == ("the app", first.process.pid)

    second = start_streamlit()  # another app process on the same instance, visited too
    visit_and_close(new_page(), second.base_url, sign_in)
    polled = status.polled_at
    wait_for(lambda: read_status(settings).polled_at > polled + 10, "the first app's poller to poll on")
    assert read_status(settings).pid == first.process.pid  # the second app's poller waits its turn
    first.stop()
    wait_for(lambda: read_status(settings).pid == second.process.pid, "the second app's poller to take over")
