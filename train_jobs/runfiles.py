"""What a run folder holds, and reading it safely while the job may be writing.

The trainer's files follow the run folder contract (``python -m cftclip_core train --out RUN_DIR``):
heartbeat.json, log.jsonl, metrics.json, best/, last/, eval/; a scoring job's
(``python -m cftclip_core.score_job --out RUN_DIR``): heartbeat.json, scores.csv, score.json. The studio adds its own:
``job.log`` (the job's stdout and stderr), ``exit.json`` (written by ``train_jobs.wrap`` when the
job ends) and, for Slurm, ``job.sbatch``. Imports only the standard library (the wrapper uses it).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HEARTBEAT = "heartbeat.json"
EXIT = "exit.json"
JOB_LOG = "job.log"
SBATCH_SCRIPT = "job.sbatch"
METRICS = "metrics.json"
EVAL_METRICS = "eval/metrics.json"
EVAL_SCORES = "eval/scores.csv"
SCORES = "scores.csv"  # a scoring job's: key, similarity, truncated
SCORE_SUMMARY = "score.json"  # a scoring job's: model, fingerprint, text field, counts (written last)
BEST = "best"
LAST = "last"
DISK_FULL_MARKERS = ("No space left on device", "Disk quota exceeded")
ATTEMPT_MARKER = "=== cftclip-studio:"  # starts a line the studio writes into job.log when a run is resumed


@dataclass(frozen=True)
class Heartbeat:
    time: float  # unix seconds
    pid: int | None
    phase: str
    step: int | None
    total_steps: int | None
    samples_per_s: float | None


@dataclass(frozen=True)
class ExitRecord:
    exit_code: int  # 128 + N when the job died of signal N
    finished_at: float
    cancel_seen: bool  # the wrapper itself received SIGTERM (a cancel, or the scheduler)


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or None if it is missing or not (yet) complete JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def read_heartbeat(run_dir: Path) -> Heartbeat | None:
    data = read_json(Path(run_dir) / HEARTBEAT)
    if not isinstance(data, dict) or not isinstance(data.get("time"), (int, float)):
        return None
    return Heartbeat(
        time=float(data["time"]),
        pid=_int_or_none(data.get("pid")),
        phase=str(data.get("phase") or ""),
        step=_int_or_none(data.get("step")),
        total_steps=_int_or_none(data.get("total_steps")),
        samples_per_s=float(data["samples_per_s"]) if isinstance(data.get("samples_per_s"), (int, float)) else None,
    )


def read_exit(run_dir: Path) -> ExitRecord | None:
    data = read_json(Path(run_dir) / EXIT)
    if not isinstance(data, dict) or not isinstance(data.get("exit_code"), int):
        return None
    return ExitRecord(int(data["exit_code"]), float(data.get("finished_at") or 0.0), bool(data.get("cancel_seen")))


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON so that readers see the old file or the new one, never half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_exit(run_dir: Path, exit_code: int, *, cancel_seen: bool) -> None:
    write_json_atomic(Path(run_dir) / EXIT, {"exit_code": exit_code, "finished_at": time.time(),
                                             "cancel_seen": cancel_seen})


def log_tail(path: str | Path, max_bytes: int = 16_000) -> str:
    """The end of a log file (whole lines where possible); empty if there is none yet."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if size > max_bytes and "\n" in text:
        text = text[text.index("\n") + 1:]
    return text


def last_error_line(path: str | Path) -> str:
    """The most telling line at the end of a job's log (of its latest attempt, when it was resumed): an
    ``error:`` line or the last traceback line."""
    tail = log_tail(path, 8_000)
    if ATTEMPT_MARKER in tail:  # resumed: only the lines after the studio's marker are this attempt's
        tail = tail[tail.rfind(ATTEMPT_MARKER):].partition("\n")[2]
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:") or "Error" in line.split(":")[0] or any(m in line for m in DISK_FULL_MARKERS):
            return line[:500]
    return lines[-1][:500] if lines else ""


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
