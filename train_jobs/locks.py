"""Locks and files of the queue in the instance folder (``instance/jobs/``).

``poll.lock`` is held for the length of one poll (reconcile + launch), so that polls from several places
(the app's poller, ``python -m train_jobs list``, a second app process) never interleave: a finished run is
settled and its results imported once. ``poller.lock`` is held by the one long-lived poller of the instance
for as long as it runs (``train_jobs.poller``). Both are ``flock`` locks: the operating system drops them
when their process dies, so a crashed poller never blocks the next one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from annotations.settings import Settings
from cftclip_core.errors import CftClipError

JOBS_DIR = "jobs"
POLL_LOCK = "poll.lock"
POLLER_LOCK = "poller.lock"
POLLER_STATUS = "poller.json"
POLL_REQUESTED = "poll-requested"  # touched to ask the poller for a poll now (after a launch, a cancel...)
POLL_WAIT_S = 120.0  # a poll takes well under a second; one waiting this long means something hangs


def jobs_dir(settings: Settings) -> Path:
    folder = settings.instance_dir / JOBS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def poll_lock(settings: Settings, timeout_s: float = POLL_WAIT_S) -> Iterator[None]:
    """Hold the instance's poll lock for one poll (waits for a poll running elsewhere to finish)."""
    lock = FileLock(jobs_dir(settings) / POLL_LOCK, timeout=timeout_s)
    try:
        lock.acquire()
    except Timeout:
        raise CftClipError(f"Another poll of the job queue has held {lock.lock_file} for {timeout_s:.0f} s; it may "
                           "hang. Find the process (`fuser` on that file), stop it, and try again.") from None
    try:
        yield
    finally:
        lock.release()


def request_poll(settings: Settings) -> None:
    """Ask the instance's poller to poll now rather than at its next turn (it watches this file)."""
    (jobs_dir(settings) / POLL_REQUESTED).touch()


def poll_requested_at(settings: Settings) -> float:
    """When a poll was last asked for (0 if never), in unix seconds."""
    try:
        return (jobs_dir(settings) / POLL_REQUESTED).stat().st_mtime
    except OSError:
        return 0.0
