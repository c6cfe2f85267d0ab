"""The queue's poller: one per instance, polling every few seconds so that runs start, end and have their
results imported whether or not anyone has a page open.

The app starts one in a daemon thread of the Streamlit server process (``studio.services``), and
``python -m train_jobs poll --watch SECONDS`` runs one on a headless server. Whoever holds
``instance/jobs/poller.lock`` polls; any other poller of the same instance (a second app process, the
command line, a restarted server whose old process lingers) waits and takes over when that lock is freed,
which the operating system does when the holder's process ends. The holder keeps ``poller.json`` up to date
(who polls, when it last did, its last error), which the Train page and ``list`` show.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from filelock import FileLock, Timeout
from sqlalchemy.orm import Session, sessionmaker

from annotations.db import make_engine, session_factory
from annotations.settings import Settings
from train_jobs import locks, runfiles
from train_jobs.reconcile import PollReport, poll
from train_jobs.settings import JobSettings

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 5.0
WAKE_CHECK_S = 0.5  # how often a waiting poller looks for a poll request


@dataclass(frozen=True)
class PollerStatus:
    """What the instance's poller last said about itself (``poller.json``)."""

    owner: str  # "the app" or "the command line"
    pid: int
    host: str
    interval_s: float
    started_at: float  # unix seconds
    polled_at: float | None  # the end of its last poll
    error: str  # of its last poll; empty when it went well

    def is_alive(self, now: float | None = None) -> bool:
        """Whether it polled (or started) recently enough to be still at work."""
        last = self.polled_at or self.started_at
        return (now or time.time()) - last < 3 * self.interval_s + locks.POLL_WAIT_S

    def describe(self, now: float | None = None) -> str:
        when = f"last poll {max(0, (now or time.time()) - self.polled_at):.0f} s ago" if self.polled_at else "starting"
        return f"{self.owner} (process {self.pid} on {self.host}), every {self.interval_s:g} s, {when}"


def read_status(settings: Settings) -> PollerStatus | None:
    data = runfiles.read_json(locks.jobs_dir(settings) / locks.POLLER_STATUS)
    try:
        return PollerStatus(**data) if isinstance(data, dict) else None
    except TypeError:  # written by another version
        return None


def alive_poller(settings: Settings) -> PollerStatus | None:
    """The instance's poller if one is at work, else None (queued runs then wait)."""
    status = read_status(settings)
    return status if status is not None and status.is_alive() else None


class Poller:
    """Polls the queue every ``interval_s`` seconds (or at once when asked) while it holds the poller lock."""

    def __init__(self, settings: Settings, *, owner: str, interval_s: float = DEFAULT_INTERVAL_S,
                 job_settings: JobSettings | None = None, factory: sessionmaker[Session] | None = None,
                 on_report: Callable[[PollReport], None] | None = None,
                 on_waiting: Callable[[PollerStatus | None], None] | None = None) -> None:
        self.settings = settings
        self.owner = owner
        self.interval_s = interval_s
        self.job_settings = job_settings
        self.factory = factory
        self.on_report = on_report or (lambda report: None)
        self.on_waiting = on_waiting or (lambda holder: None)
        self.stop_event = threading.Event()
        self.holds_lock = threading.Event()  # set while this poller is the instance's
        self._lock = FileLock(locks.jobs_dir(settings) / locks.POLLER_LOCK, blocking=False)
        self._started_at = self._last_poll_started = 0.0
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """Poll until ``stop()``; wait (and keep trying) while another poller holds the lock."""
        engine = None
        if self.factory is None:
            engine = make_engine(self.settings.database_url)
            self.factory = session_factory(engine)
        told_waiting = False
        try:
            while not self.stop_event.is_set():
                if not self.holds_lock.is_set():
                    if not self._take_lock():
                        if not told_waiting:
                            self.on_waiting(read_status(self.settings))
                            told_waiting = True
                        self.stop_event.wait(self.interval_s)
                        continue
                    told_waiting = False
                self.poll_once()
                self._wait_for_next_turn()
        finally:
            if self.holds_lock.is_set():
                self._lock.release()
                self.holds_lock.clear()
            if engine is not None:
                engine.dispose()

    def start_thread(self, name: str = "cftclip-queue-poller") -> threading.Thread:
        self._thread = threading.Thread(target=self.run, name=name, daemon=True)
        self._thread.start()
        return self._thread

    def is_running(self) -> bool:
        """Whether its thread (``start_thread``) still runs: polling, or waiting for the lock."""
        return self._thread is not None and self._thread.is_alive() and not self.stop_event.is_set()

    def stop(self) -> None:
        self.stop_event.set()

    def poll_once(self) -> PollReport | None:
        self._last_poll_started = time.time()  # a poll asked for after this moment gets a poll of its own
        try:
            report = poll(self.factory, self.settings, self.job_settings)
        except Exception as exc:  # noqa: BLE001 - a failed poll must not end the poller; the next one retries
            log.exception("Polling the job queue failed")
            self._write_status(polled_at=time.time(), error=f"{type(exc).__name__}: {exc}")
            return None
        self._write_status(polled_at=time.time(), error="")
        self.on_report(report)
        return report

    def _take_lock(self) -> bool:
        try:
            self._lock.acquire()
        except Timeout:
            return False
        self.holds_lock.set()
        self._started_at = time.time()
        self._last_poll_started = 0.0
        self._write_status(polled_at=None, error="")
        log.info("Polling the job queue of %s every %g s (%s)", self.settings.instance_dir, self.interval_s,
                 self.owner)
        return True

    def _wait_for_next_turn(self) -> None:
        deadline = time.monotonic() + self.interval_s
        while not self.stop_event.wait(min(WAKE_CHECK_S, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline or locks.poll_requested_at(self.settings) >= self._last_poll_started:
                return

    def _write_status(self, *, polled_at: float | None, error: str) -> None:
        status = PollerStatus(self.owner, os.getpid(), socket.gethostname(), self.interval_s, self._started_at,
                              polled_at, error)
        try:
            runfiles.write_json_atomic(locks.jobs_dir(self.settings) / locks.POLLER_STATUS, asdict(status))
        except OSError as exc:  # a full disk: the queue still moves; the status just goes stale
            log.warning("Cannot write the poller's status: %s", exc)

