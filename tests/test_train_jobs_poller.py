"""The queue's poller: one per instance (a second waits and takes over), woken by a poll request, polls that
never overlap, the command line's ``poll --watch`` and ``list``; and a queue that moves with nobody watching.

Jobs here are a stand-in module that beats once and exits (quickly, with status 0), run by the real
launcher and wrapper."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from annotations.models import TrainRun
from cftclip_core.errors import CftClipError
from tests.train_jobs_helpers import queue_quick_runs
from train_jobs import locks, procs, runfiles
from train_jobs.api import Poller, alive_poller, poll, request_poll
from train_jobs.cli import main as jobs_cli
from train_jobs.poller import read_status
from train_jobs.settings import JobSettings


@pytest.fixture
def quick_runs(factory, instance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201
    """An experiment of two queued runs of the stand-in job, one CPU slot: the second waits for the first."""
    yield queue_quick_runs(factory, instance.instance_dir / "runs" / "quick", tmp_path / "jobs-code", monkeypatch)
    with factory() as session:
        for run in session.scalars(select(TrainRun)):
            if run.pid:
                procs.signal_group(run.pid, run.pid_started, 9)


def states_of(factory) -> list[str]:  # noqa: ANN001
    with factory() as session:
        return [run.state for run in session.scalars(select(TrainRun).order_by(TrainRun.seed))]


def wait_for(condition, what: str, seconds: float = 120.0):  # noqa: ANN001, ANN201
    """``condition()`` once true, waiting at most ``seconds`` (a bound for slow shared machines)."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def running(poller: Poller) -> threading.Thread:
    thread = poller.start_thread()
    wait_for(lambda: poller.holds_lock.is_set() or not thread.is_alive(), "the poller to start")
    return thread


def test_with_only_the_poller_the_next_queued_run_starts_when_the_first_ends(factory, instance,
                                                                             quick_runs: int) -> None:  # noqa: ANN001
    poller = Poller(instance, owner="the app", interval_s=0.2, factory=factory)
    thread = running(poller)
    try:
        wait_for(lambda: states_of(factory) == ["succeeded", "succeeded"], "both runs to run one after the other")
    finally:
        poller.stop()
        thread.join(10)
    with factory() as session:
        first, second = session.scalars(select(TrainRun).order_by(TrainRun.seed))
    assert second.launched_at >= first.finished_at  # one CPU slot: the second waited for the first
    assert first.results_at is not None and second.results_at is not None


def test_a_poller_says_whether_its_thread_runs(factory, instance, monkeypatch) -> None:  # noqa: ANN001
    poller = Poller(instance, owner="the app", interval_s=0.1, factory=factory)
    assert not poller.is_running()  # not started
    thread = running(poller)
    assert poller.is_running()
    poller.stop()
    thread.join(10)
    assert not poller.is_running()  # the app's next page run starts another (st.cache_resource validate)


def test_one_poller_per_instance_the_second_waits_and_takes_over(factory, instance) -> None:  # noqa: ANN001
    first = Poller(instance, owner="the app", interval_s=0.1, factory=factory)
    second = Poller(instance, owner="the command line", interval_s=0.1, factory=factory)
    threads = [running(first), second.start_thread()]
    try:
        time.sleep(0.5)  # several of the second's turns: it must not have taken the lock meanwhile
        assert first.holds_lock.is_set() and not second.holds_lock.is_set()
        assert read_status(instance).owner == "the app"
        first.stop()
        threads[0].join(10)
        wait_for(second.holds_lock.is_set, "the second poller to take over")
        wait_for(lambda: read_status(instance).owner == "the command line", "the new owner in the status")
        assert alive_poller(instance).owner == "the command line"
    finally:
        first.stop()
        second.stop()
        for thread in threads:
            thread.join(10)


def test_a_poll_request_wakes_the_poller_before_its_turn(factory, instance, monkeypatch) -> None:  # noqa: ANN001
    polls = []
    monkeypatch.setattr("train_jobs.poller.poll", lambda *args, **kwargs: polls.append(time.time()))
    poller = Poller(instance, owner="the app", interval_s=3600, factory=factory)
    thread = running(poller)
    try:
        wait_for(lambda: len(polls) == 1, "the first poll")
        request_poll(instance)
        wait_for(lambda: len(polls) == 2, "a poll on request, long before the hour is up")
    finally:
        poller.stop()
        thread.join(10)


def test_polls_of_one_instance_never_overlap(factory, instance) -> None:  # noqa: ANN001
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with locks.poll_lock(instance):
            held.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        held.wait(10)
        with pytest.raises(CftClipError, match="Another poll of the job queue has held"):
            with locks.poll_lock(instance, timeout_s=0.3):
                pass
    finally:
        release.set()
        holder.join(10)
    assert poll(factory, instance, JobSettings()).changes == []  # free again


def test_cli_list_settles_finished_runs_and_says_whether_a_poller_runs(factory, instance, quick_runs: int,  # noqa: ANN001
                                                                       capsys, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("CFTCLIP_INSTANCE", str(instance.instance_dir))
    monkeypatch.setenv("CFTCLIP_DATABASE_URL", instance.database_url)
    poll(factory, instance, JobSettings())  # the first run is launched, then nobody polls
    with factory() as session:
        first = session.scalars(select(TrainRun).order_by(TrainRun.seed)).first()
    wait_for(lambda: runfiles.read_exit(Path(first.run_dir)), "the first run to end")
    assert jobs_cli(["list"]) == 0
    out = capsys.readouterr().out
    assert "run 1 seed 0: succeeded" in out  # settled by the listing, not shown as running
    assert "seed 1: queued" in out and "no poller is running for this instance" in out


def test_cli_list_without_experiments_says_how_to_make_one(factory, instance, capsys,  # noqa: ANN001
                                                          monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("CFTCLIP_INSTANCE", str(instance.instance_dir))
    monkeypatch.setenv("CFTCLIP_DATABASE_URL", instance.database_url)
    assert jobs_cli(["list"]) == 0
    out = capsys.readouterr().out
    assert "No experiments yet" in out and "the Train page" in out and "not queued" in out
    assert "no poller is running for this instance" in out


def test_cli_poll_watch_waits_for_the_apps_poller_then_takes_over(instance, factory) -> None:  # noqa: ANN001
    app_poller = Poller(instance, owner="the app", interval_s=0.2, factory=factory)
    thread = running(app_poller)
    env = {"CFTCLIP_INSTANCE": str(instance.instance_dir), "CFTCLIP_DATABASE_URL": instance.database_url,
           "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    watcher = subprocess.Popen([sys.executable, "-m", "train_jobs", "poll", "--watch", "0.2"], env=env,
                               stdout=subprocess.PIPE, text=True)
    try:
        line = watcher.stdout.readline()
        assert "the queue is polled by the app" in line and "waiting to take over" in line
        assert read_status(instance).owner == "the app"
        app_poller.stop()
        thread.join(10)
        wait_for(lambda: read_status(instance).owner == "the command line", "the command line to take over")
        assert read_status(instance).pid == watcher.pid
    finally:
        app_poller.stop()
        watcher.terminate()
        watcher.wait(10)
