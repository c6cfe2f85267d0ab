"""Where a proof run keeps its files, and reading a finished run's metrics: torch-free, for the report and the
app as much as for the runner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cftclip_core.specs.proof import RunKey


def run_dir_for(out: Path, run: RunKey) -> Path:
    data = "" if run.data_seed == run.seed else f"-data-{run.data_seed}"
    return out / "runs" / run.world / run.arm / f"seed-{run.seed}{data}"


def finished_metrics(run_dir: Path) -> dict[str, Any] | None:
    """A finished run's metrics.json, or None."""
    return read_json_with(run_dir / "metrics.json", {"world", "arm", "seed", "data_seed", "doses"})


def read_json_with(path: Path, keys: set[str]) -> dict[str, Any] | None:
    """The JSON object in ``path`` if it holds every key in ``keys``; None if missing, unreadable or partial."""
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return result if isinstance(result, dict) and keys <= set(result) else None
