"""A researcher trains from the app in a real headless Chromium: a 5-seed CFT experiment and a 5-seed plain
CLIP baseline on a synthetic set, on the CPU, with the tiny model and a few steps. While runs are in flight
the Streamlit server is stopped; a run finishes while nobody watches; a new server starts on the same
instance folder; the researcher reloads and finds all ten runs succeeded with their evaluation metrics.

The synthetic set (24 items, one counterfactual text each) is imported before the server starts. Two runs
train at once (``CFTCLIP_CPU_JOBS=2``, one thread each). Every wait is for something the page or the run
folders must show, bounded generously for two shared cores; none is a timed assertion.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from annotations.importer import import_dataset
from annotations.models import Experiment, TrainRun
from annotations.settings import Settings
from annotations.users import create_user
from cftclip_core import cli
from cftclip_core.formats import read_table
from cftclip_core.synthetic import WorldConfig, generate_dataset
from train_jobs import procs, runfiles
from train_jobs.states import ACTIVE, FINAL, SUCCEEDED

if TYPE_CHECKING:
    from tests.e2e.conftest import StreamlitServer

pytestmark = pytest.mark.e2e

USERNAME = "rita"
PASSWORD = "a long test password"
DATASET = "synthetic (24 items)"
SMALL = {"batch_size": "4", "max_steps": "6", "val_every_steps": "3", "freeze_text_layers": "1"}
EXPERIMENTS = {"cft-e2e": "cft", "clip-e2e": "clip"}
WAIT_MS = 600_000  # ten tiny runs, two at a time, on two shared cores


@pytest.fixture
def e2e_setup(e2e_instance: Path, e2e_db: sessionmaker[Session], tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFTCLIP_CPU_JOBS", "2")  # read by the server, whose jobs inherit the rest
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    create_user(e2e_db, USERNAME, PASSWORD, "researcher")
    csv = generate_dataset(tmp_path / "synthetic", 24, WorldConfig(image_size=64), seed=0)
    with_counterfactuals = csv.with_name("cf.csv")
    assert cli.main(["counterfactual", "--data", str(csv), "--out", str(with_counterfactuals)]) == 0
    import_dataset(e2e_db, Settings.for_instance(e2e_instance), read_table(with_counterfactuals), "synthetic")


@pytest.fixture
def no_job_left(e2e_db: sessionmaker[Session]):  # noqa: ANN201
    """Whatever happens, no training job outlives the test."""
    yield
    with e2e_db() as session:
        for run in session.scalars(select(TrainRun)):
            if run.pid and run.state in ACTIVE:
                procs.signal_group(run.pid, run.pid_started, signal.SIGKILL)


def settled(page: Page) -> None:
    """No rerun is redrawing the page: a widget moved by it would otherwise show twice for a moment."""
    expect(page.locator("[data-stale=true]")).to_have_count(0)


def choose(page: Page, label: str, option: str | re.Pattern[str]) -> None:
    settled(page)
    box = page.get_by_role("combobox", name=label)
    expect(box).to_have_count(1)  # not while a rerun redraws it
    for _ in range(5):  # a rerun that moves the box (a warning drawn above it) closes its list: open it again
        box.click()
        try:
            page.get_by_role("option", name=option).click(timeout=5_000)
            break
        except PlaywrightTimeoutError:
            page.keyboard.press("Escape")
    expect(box).to_have_value(option)


def type_into(page: Page, label: str, value: str) -> None:
    settled(page)
    field = page.get_by_label(label, exact=True)
    expect(field).to_have_count(1)  # not while a rerun redraws it
    field.fill(value)
    field.press("Enter")
    expect(field).to_have_value(value)


def launch(page: Page, name: str, method: str) -> None:
    """With the New experiment form, open on a first visit and kept open after each launch."""
    type_into(page, "Experiment name", name)
    page.get_by_test_id("stRadio").filter(has_text="Method").get_by_text(re.compile(f"^{method}: ")).click()
    page.get_by_role("button", name="Launch", exact=True).click()
    created = f"Experiment '{name}' created: 5 run(s) queued"
    expect(page.get_by_test_id("stAlertContentSuccess")).to_contain_text(created)


def runs_by_state(factory: sessionmaker[Session]) -> dict[str, list[TrainRun]]:
    with factory() as session:
        runs = session.scalars(select(TrainRun)).all()
    grouped: dict[str, list[TrainRun]] = {}
    for run in runs:
        grouped.setdefault(run.state, []).append(run)
    return grouped


def wait_for(condition: Callable[[], object], what: str, seconds: float = WAIT_MS / 1000) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def all_finished_with_results(factory: sessionmaker[Session]) -> list[TrainRun] | None:
    with factory() as session:
        runs = session.scalars(select(TrainRun).order_by(TrainRun.seed)).all()
    return runs if len(runs) == 10 and all(r.state in FINAL and r.results_at for r in runs) else None


def expect_succeeded_with_metrics(page: Page, experiment: str, runs: list[TrainRun]) -> None:
    """The experiment's five rows, each succeeded with the evaluation metrics imported for it."""
    choose(page, "Experiment", experiment)
    expect(page.get_by_text(f"{EXPERIMENTS[experiment]} on tiny-demo · local")).to_be_visible()
    for run in runs:
        metrics = run.eval_metrics["metrics"]
        headline = f"F1 {metrics['f1']['value']:.3f} · ROC-AUC {metrics['roc_auc']['value']:.3f}"
        row = page.get_by_test_id("stHorizontalBlock").filter(has_text=f"Seed {run.seed}").filter(has_text=headline)
        expect(row.locator(".stMarkdownBadge")).to_have_text("succeeded")


def test_two_five_seed_experiments_survive_an_app_restart_and_finish_with_metrics(
    start_streamlit: Callable[..., StreamlitServer], page: Page, e2e_db: sessionmaker[Session], no_job_left: None,
    sign_in: Callable[[Page, str, str, str], None], screenshot: Callable[[Page, str], Path],
) -> None:
    server = start_streamlit()
    sign_in(page, server.base_url, USERNAME, PASSWORD)
    page.get_by_test_id("stSidebar").get_by_role("link", name="Train").click()
    expect(page.get_by_text("jobs run on the CPU only")).to_be_visible()

    choose(page, "Training dataset", DATASET)
    choose(page, "Evaluation dataset (labelled)", DATASET)
    # Evaluating on the training dataset: its rerun adds warnings that move the pickers below; wait for them.
    expect(page.get_by_text("The training and evaluation sets share")).to_be_visible()
    choose(page, "Base model", re.compile("^tiny-demo: "))
    # Its rerun puts a note under the picker, which moves the fields below: type into them after it.
    expect(page.get_by_text("Freezing fitted to the model: tiny-demo has 2 text and 2 vision layers")).to_be_visible()
    expect(page.get_by_label("lr", exact=True)).to_have_value("0.0001")  # the paper's, pre-filled
    for field, value in SMALL.items():
        type_into(page, field, value)
    for name, method in EXPERIMENTS.items():
        launch(page, name, method)

    # Watch until the first runs are done and others are still on their way, then stop the server.
    wait_for(lambda: runs_by_state(e2e_db).get(SUCCEEDED), "a first run to succeed")
    # The page shows the experiment launched last, whose runs wait for CPU slots: look at the one training.
    choose(page, "Experiment", "cft-e2e")
    expect(page.get_by_test_id("stVegaLiteChart").first).to_be_visible()  # the live loss curves
    screenshot(page, "train-live")
    wait_for(lambda: runs_by_state(e2e_db).get("running"), "a run to be training")
    server.stop()
    in_flight = runs_by_state(e2e_db)  # as the stopped app left it: nothing changes it until the next start
    running = in_flight.get("running", []) + in_flight.get("starting", [])
    assert running, f"every launched run had finished before the server stopped: {in_flight}"

    # A run finishes while no app watches it: only its folder knows, until the next start settles it.
    finished_alone = wait_for(lambda: next((r for r in running if runfiles.read_exit(Path(r.run_dir))), None),
                              "a run to finish while the app is down")
    with e2e_db() as session:
        assert session.get(TrainRun, finished_alone.id).state in ("running", "starting")

    server = start_streamlit(port=server.port)
    page.reload()  # the new server's poller settles what finished meanwhile; the queued runs go on
    # The first run of a fresh server goes through app.py (its navigation), not straight to pages/train.py.
    nav = page.get_by_test_id("stSidebar")
    expect(nav.get_by_role("link", name="Seeds")).to_be_visible()
    expect(page.get_by_test_id("stSidebarNav")).to_have_count(0)
    runs = wait_for(lambda: all_finished_with_results(e2e_db), "all ten runs to finish")
    assert {r.state for r in runs} == {SUCCEEDED}, [(r.id, r.state, r.reason) for r in runs]
    assert all(r.metrics["steps"] == 6 and r.eval_metrics and r.results_error == "" for r in runs)
    with e2e_db() as session:
        experiments = {e.id: e for e in session.scalars(select(Experiment))}
    assert {e.name: e.config["loss"] for e in experiments.values()} == EXPERIMENTS
    for experiment in experiments.values():
        expect_succeeded_with_metrics(page, experiment.name, [r for r in runs if r.experiment_id == experiment.id])
    screenshot(page, "train-finished")
    expect(page.get_by_role("link", name="Compare these runs with other models on the Models page")).to_be_visible()
    expect(page.get_by_test_id("stException")).to_have_count(0)
