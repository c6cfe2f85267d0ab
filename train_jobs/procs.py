"""Processes of local jobs: who they are (pid + start time, so a reused pid is never mistaken for the
job), whether they still run, and signals to their process group.

A local job's launcher process is started in a new session, so its pid is also its process group id
and signals to the group reach the wrapper, the trainer and (under torchrun) every rank. Start times
come from ``/proc`` (Linux); where it is missing, only the pid is checked.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

log = logging.getLogger(__name__)

PROC = Path("/proc")


def start_token(pid: int) -> str | None:
    """The process's start time (clock ticks since boot) as text, or None if it does not exist or /proc is missing."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # Field 2 (the command name) may hold spaces and parentheses; the fields after its last ')' are fixed.
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[19]  # field 22 of proc(5): starttime


def _is_zombie(pid: int) -> bool:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] == "Z"


def reap(pid: int) -> None:
    """Collect the exit status of a finished child of this process (the app launched it), if it is one."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def is_alive(pid: int, token: str | None) -> bool:
    """True while the process ``pid`` that started at ``token`` still runs (a zombie does not)."""
    reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if _is_zombie(pid):
        return False
    if token is None or not PROC.is_dir():
        return True
    return start_token(pid) == token


def signal_group(pid: int, token: str | None, signum: int) -> bool:
    """Send ``signum`` to the process group led by ``pid`` if that process is still the job's.

    Returns False (sending nothing) when it is gone or the pid now belongs to another process.
    """
    if not is_alive(pid, token):
        return False
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        return False
    log.info("Sent %s to process group %d", signal.Signals(signum).name, pid)
    return True
