"""``all``: every run of a grid as its own ``run`` process, N at a time, skipping finished runs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cftclip_core.errors import ConfigError
from cftclip_core.proof.cache import prepare_world
from cftclip_core.proof.report import write_results
from cftclip_core.proof.run_files import finished_metrics, run_dir_for
from cftclip_core.specs.proof import ProofSettings, RunKey, is_int

logger = logging.getLogger(__name__)


def run_command(run: RunKey, run_dir: Path, cache: Path, settings: ProofSettings) -> list[str]:
    return [sys.executable, "-m", "cftclip_core.proof", "run", "--world", run.world, "--arm", run.arm,
            "--seed", str(run.seed), "--data-seed", str(run.data_seed), "--out", str(run_dir), "--cache", str(cache),
            *settings.to_args()]


def run_all(out: Path, runs: Sequence[RunKey], settings: ProofSettings, *, jobs: int = 1,
            cache: Path | None = None) -> list[str]:
    """Every run as its own process (one CPU thread each), ``jobs`` at a time; returns the runs that failed.
    Finished runs under ``out`` are kept; results.csv, table.md and the figure are written at the end."""
    if not is_int(jobs) or jobs < 1:
        raise ConfigError(f"--jobs {jobs!r} is not valid; use a positive number of parallel runs.")
    settings.validate()
    out = out.resolve()
    cache = (cache or out / "cache").resolve()
    for world, data_seed in dict.fromkeys((r.world, r.data_seed) for r in runs):
        prepare_world(cache, world, settings, data_seed)
    todo = [r for r in runs if finished_metrics(run_dir_for(out, r)) is None]
    logger.info("%d runs to do, %d already finished; %d at a time", len(todo), len(runs) - len(todo), jobs)
    started = time.perf_counter()
    failed: list[str] = []
    done = 0
    done_lock = threading.Lock()
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}

    def launch(run: RunKey) -> None:
        nonlocal done
        run_dir = run_dir_for(out, run)
        run_dir.mkdir(parents=True, exist_ok=True)
        run_started = time.perf_counter()
        with (run_dir / "run.log").open("a", encoding="utf-8") as log_file:
            code = subprocess.run(run_command(run, run_dir, cache, settings), stdout=log_file,
                                  stderr=subprocess.STDOUT, env=env, check=False).returncode
        result = finished_metrics(run_dir)
        with done_lock:
            done += 1
            label = f"[{done}/{len(todo)}] {run.describe()}"
            if code != 0 or result is None:
                failed.append(f"{run.describe()} (exit {code}; see {run_dir / 'run.log'})")
                logger.error("%s failed with exit status %d; see %s", label, code, run_dir / "run.log")
            else:
                elapsed = time.perf_counter() - started
                logger.info("%s: ROC-AUC %.3f, name accuracy %.3f (%.0f s; %.0f s in all, about %.0f s left)",
                            label, result["roc_auc"], result["name_accuracy"], time.perf_counter() - run_started,
                            elapsed, elapsed * (len(todo) - done) / done)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(launch, run) for run in todo]:
            future.result()
    write_results(out)
    return failed
