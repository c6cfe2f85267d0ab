"""``heartbeat.json`` in a run folder: proof of life for whoever watches the run (the app's jobs).

Rewritten atomically (write + rename, so a reader never sees half a file) at every phase change and at
most every ``interval`` seconds otherwise; a watcher treats a heartbeat older than a few intervals as
a run that died without saying so.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

HEARTBEAT_FILE = "heartbeat.json"
PHASES = ("loading", "training", "evaluating", "done", "stopped", "failed")


class Heartbeat:
    def __init__(self, run_dir: Path, *, interval: float = 5.0, enabled: bool = True) -> None:
        self.path = Path(run_dir) / HEARTBEAT_FILE
        self.interval = interval
        self.enabled = enabled
        self.state: dict[str, Any] = {"phase": "loading", "step": 0, "total_steps": 0, "samples_per_s": None}
        self._last = 0.0

    def beat(self, *, force: bool = False, **fields: Any) -> None:
        """Update fields (phase, step, total_steps, samples_per_s) and write if due or forced."""
        if fields.get("phase", self.state["phase"]) not in PHASES:
            raise ValueError(f"unknown heartbeat phase {fields['phase']!r}")
        force = force or fields.get("phase", self.state["phase"]) != self.state["phase"]
        self.state.update(fields)
        now = time.time()
        if not self.enabled or not (force or now - self._last >= self.interval):
            return
        self._last = now
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"time": now, "pid": os.getpid(), **self.state}), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError:  # a full disk must not kill training over a heartbeat; the watcher sees it go stale
            tmp.unlink(missing_ok=True)


def read_heartbeat(run_dir: Path) -> dict[str, Any] | None:
    """The last heartbeat written in ``run_dir``, or None if there is none (yet) or it is unreadable."""
    try:
        return json.loads((Path(run_dir) / HEARTBEAT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
