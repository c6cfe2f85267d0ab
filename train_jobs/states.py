"""The run state machine, and what a job's exit status means.

queued -> starting -> running -> succeeded | failed | cancelled | lost
failed | cancelled -> queued: resumed from the run's last checkpoint (``train_jobs.resume``)

``starting``: handed to a backend (process spawned, or pending in Slurm), no sign of work yet.
``running``: the process works (a heartbeat was seen, or Slurm says RUNNING).
``lost``: the studio lost track of it (process gone without an exit status, heartbeat stale, node
failure). Late evidence can still settle a lost run: an exit status file written after all, or a
fresh heartbeat (a slow phase, a suspended process) that puts it back to running.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

from annotations.models import RUN_STATES, TrainRun, utcnow

QUEUED, STARTING, RUNNING, SUCCEEDED, FAILED, CANCELLED, LOST = RUN_STATES
ACTIVE = (QUEUED, STARTING, RUNNING)  # the studio still expects something from these
LAUNCHED = (STARTING, RUNNING)  # a process or a Slurm job exists (or should)
FINAL = (SUCCEEDED, FAILED, CANCELLED)  # ended: nothing moves them but a researcher's resume
RESUMABLE = (FAILED, CANCELLED)

TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({STARTING, FAILED, CANCELLED}),
    STARTING: frozenset({RUNNING, SUCCEEDED, FAILED, CANCELLED, LOST}),
    RUNNING: frozenset({SUCCEEDED, FAILED, CANCELLED, LOST}),
    LOST: frozenset({RUNNING, SUCCEEDED, FAILED, CANCELLED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset({QUEUED}),
    CANCELLED: frozenset({QUEUED}),
}

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_USER_ERROR = 2  # the trainer refused its config or data; nothing was trained
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143: stopped by SIGTERM after saving RUN_DIR/last
EXIT_KILLED = 128 + signal.SIGKILL  # 137


def can_move(old: str, new: str) -> bool:
    return new in TRANSITIONS[old]


def move(run: TrainRun, new: str, reason: str = "") -> None:
    """Put ``run`` in state ``new`` (a bug if the state machine does not allow it); stamps the end time."""
    if not can_move(run.state, new):
        raise ValueError(f"run {run.id}: {run.state} -> {new} is not a valid transition")
    run.state, run.reason = new, reason
    if new in FINAL or new == LOST:
        run.finished_at = utcnow()


@dataclass(frozen=True)
class Outcome:
    state: str
    reason: str


def outcome_of_exit(exit_code: int, *, cancel_requested: bool) -> Outcome:
    """The final state for a job that ended with ``exit_code`` (128 + N for death by signal N)."""
    if exit_code == EXIT_OK:
        return Outcome(SUCCEEDED, "")
    if exit_code == EXIT_TERMINATED:
        why = "cancelled" if cancel_requested else "stopped by SIGTERM without a cancel from the studio (a scheduler " \
                                                   "time limit or preemption?)"
        return Outcome(CANCELLED, f"{why}; the last checkpoint (RUN_DIR/last) is kept (a training run: Resume "
                                  "continues it)")
    if exit_code == EXIT_USER_ERROR:
        return Outcome(FAILED, "the job refused its configuration or data before training (see the log's last lines)")
    if exit_code == EXIT_KILLED:
        if cancel_requested:
            return Outcome(CANCELLED, "cancelled: killed with SIGKILL after it did not stop within the grace period; "
                                      "no resumable checkpoint")
        return Outcome(FAILED, "killed with SIGKILL (by the kernel when memory ran out, or by a person); "
                               "see the log and the system log")
    if exit_code > 128:
        return Outcome(FAILED, f"killed by signal {_signal_name(exit_code - 128)}")
    return Outcome(FAILED, f"exited with status {exit_code} (a crash; see the log's last lines)")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
