"""The Articles page (the home page of researchers), driven through Streamlit's AppTest as a user would use
it: the demo dataset on a first start, and scoring it as a job whose progress the page shows. The queue is
polled by hand here (``poll_queue``), as the instance's poller does every few seconds."""

from __future__ import annotations

import re
import time

from sqlalchemy import select

from annotations.db import write_session
from annotations.models import TrainRun
from tests.conftest import app_test, sessions
from train_jobs.api import FINAL, poll

RESEARCHER = ("rita", "researcher")



def plain(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def poll_queue(settings) -> None:  # noqa: ANN001
    poll(sessions(settings), settings)


def the_job(settings) -> TrainRun:  # noqa: ANN001
    with sessions(settings)() as session:
        return session.scalars(select(TrainRun)).one()


def run_the_job_to_its_end(settings) -> TrainRun:  # noqa: ANN001
    """Launch the queued job, wait for its process to end (a bound for slow machines), settle it."""
    poll_queue(settings)
    deadline = time.monotonic() + 300
    while the_job(settings).state not in FINAL:
        assert time.monotonic() < deadline, "the scoring job did not end"
        time.sleep(0.5)
        poll_queue(settings)
    return the_job(settings)


def score(at, model: str | None = None):  # noqa: ANN001, ANN201
    if model is not None:
        at.selectbox(key="articles_score_model").select("other: a hub id or a local model folder").run()
        at.text_input(key="articles_score_other").input(model).run()
    return at.button(key="articles_score_button").click().run()


def test_first_start_creates_the_instance_and_shows_the_demo_articles(app_instance) -> None:  # noqa: ANN001
    at = app_test(app_instance, user=RESEARCHER).run()
    assert not at.exception
    assert (app_instance.instance_dir / "studio.db").is_file()
    assert at.selectbox(key="articles_dataset").value == "demo"
    table = at.dataframe[0].value
    assert len(table) == 26 and table["similarity"].isna().all()
    assert any("no scores yet" in info.value for info in at.info)


def test_scoring_is_a_job_whose_scores_fill_the_table_and_carry_the_tiny_warning(app_instance) -> None:  # noqa: ANN001
    at = score(app_test(app_instance, user=RESEARCHER).run())
    assert not at.exception
    assert any("Scoring 'demo' with tiny-demo is queued" in plain(s.value) for s in at.success)
    assert any("Scoring with tiny-demo (summary): waiting in the queue" in plain(p.text) for p in at.get("progress"))
    job = run_the_job_to_its_end(app_instance)
    assert job.state == "succeeded" and job.results_at is not None and job.results_error == ""

    at = app_test(app_instance, user=RESEARCHER).run()  # any later visit reads the stored score set
    assert any("Scored 26 articles with tiny-demo." in plain(s.value) for s in at.success)
    assert any("carry no meaning" in w.value for w in at.warning)
    assert at.dataframe[0].value["similarity"].between(-1, 1).all()
    assert "tiny model: meaningless" in at.selectbox(key="articles_score_set").format_func(
        at.selectbox(key="articles_score_set").value)


def test_a_job_in_progress_shows_on_every_visit_until_it_ends(app_instance) -> None:  # noqa: ANN001
    score(app_test(app_instance, user=RESEARCHER).run())
    with write_session(sessions(app_instance)) as session:  # what the reconciler copies from a live job's heartbeat
        run = session.scalars(select(TrainRun)).one()
        run.state, run.phase, run.step, run.total_steps = "running", "scoring", 10, 26
    for _ in range(2):  # a rerun, then a fresh visit (another tab, or after an app restart)
        at = app_test(app_instance, user=RESEARCHER).run()
        bars = [p for p in at.get("progress") if "Scoring with tiny-demo" in plain(p.text)]
        assert len(bars) == 1 and "10/26 pairs" in plain(bars[0].text) and bars[0].value == round(10 / 26 * 100)
        assert not at.button(key=f"articles_score_cancel_{run.id}").disabled


def test_a_model_that_cannot_load_fails_the_job_with_the_reason(app_instance) -> None:  # noqa: ANN001
    at = score(app_test(app_instance, user=RESEARCHER).run(), "nobody/unknown-clip")
    assert not at.exception
    job = run_the_job_to_its_end(app_instance)
    assert job.state == "failed"
    at = app_test(app_instance, user=RESEARCHER).run()
    assert any("Scoring with nobody/unknown-clip (summary) failed" in plain(e.value)
               and "Cannot load model 'nobody/unknown-clip'" in plain(e.value) for e in at.error)
    assert not at.exception


def test_a_missing_model_folder_is_refused_before_anything_is_queued(app_instance, tmp_path) -> None:  # noqa: ANN001
    at = score(app_test(app_instance, user=RESEARCHER).run(), str(tmp_path / "no-such-model"))
    assert any("No model folder at" in plain(e.value) for e in at.error)
    with sessions(app_instance)() as session:
        assert session.scalars(select(TrainRun)).first() is None
