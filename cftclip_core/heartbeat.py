"""``heartbeat.json`` in a run folder: proof of life for whoever watches the run (the app's jobs).

Rewritten atomically (write + rename, so a reader never sees half a file) at every phase change and at
most every ``interval`` seconds otherwise. A background thread also rewrites it every ``interval``
seconds while the process lives, so a long model load or evaluation does not look like a dead run; a
watcher treats a heartbeat older than a few intervals as a process that died without saying so.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

HEARTBEAT_FILE = "heartbeat.json"
PHASES = ("loading", "training", "evaluating", "scoring", "done", "stopped", "failed")
FINAL_PHASES = ("done", "stopped", "failed")


class Heartbeat:
    def __init__(self, run_dir: Path, *, interval: float = 5.0, enabled: bool = True) -> None:
        self.path = Path(run_dir) / HEARTBEAT_FILE
        self.interval = interval
        self.enabled = enabled
        self.state: dict[str, Any] = {"phase": "loading", "step": 0, "total_steps": 0, "samples_per_s": None}
        self._last = 0.0
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def beat(self, *, force: bool = False, **fields: Any) -> None:
        """Update fields (phase, step, total_steps, samples_per_s) and write if due or forced."""
        phase = fields.get("phase", self.state["phase"])
        if phase not in PHASES:
            raise ValueError(f"unknown heartbeat phase {phase!r}")
        with self._lock:
            force = force or phase != self.state["phase"]
            self.state.update(fields)
            now = time.time()
            if self.enabled and (force or now - self._last >= self.interval):
                self._last = now
                self._write(now)
        if phase in FINAL_PHASES:
            self._stopped.set()

    def start(self) -> Heartbeat:
        """Write now, then keep writing every ``interval`` seconds until a final phase."""
        self.beat(force=True)
        if self.enabled:
            threading.Thread(target=self._keep_alive, name="heartbeat", daemon=True).start()
        return self

    def _keep_alive(self) -> None:
        while not self._stopped.wait(self.interval):
            self.beat(force=True)

    def _write(self, now: float) -> None:
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
