"""Collecting finished runs and testing the pre-registered contrasts.

A contrast ``a - b`` in a world is paired by seed. Its per-seed value is the difference at one dose, or
(the primary form) the mean over the doses of the per-dose differences, so no dose is chosen after the
fact. Reported: mean and 95% t-interval, seeds won and lost, the paired t-test, the Wilcoxon
signed-rank test and the sign test (two-sided); the primary contrasts also get Holm-adjusted p-values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from cftclip_core import metrics
from cftclip_core.errors import DataError
from cftclip_core.proof.run_files import finished_metrics
from cftclip_core.specs.proof import (
    ARMS,
    METRICS,
    PRIMARY_CONTRASTS,
    PRIMARY_METRIC,
    PRIMARY_WORLD,
    WORLDS,
    ProofSettings,
)

KEY = ["world", "arm", "seed", "data_seed"]


@dataclass(frozen=True)
class Results:
    doses: pd.DataFrame  # one row per run and dose: KEY, dose, stage0_val_loss, every metric, steps, run_dir
    runs: pd.DataFrame  # one row per run: KEY, false negatives, seconds, cpu_seconds, run_dir
    settings: ProofSettings


def collect_results(root: Path) -> Results:
    """Every finished run under ``root``; refuses duplicates and runs of different settings."""
    dose_rows, run_rows, where, settings_seen = [], [], {}, {}
    for path in sorted(root.rglob("metrics.json")):
        result = finished_metrics(path.parent)
        if result is None:
            continue
        key = tuple(result[k] for k in KEY)
        if key in where:
            raise DataError(f"Two finished runs of {key[0]} {key[1]} seed {key[2]} (data seed {key[3]}): "
                            f"{where[key]} and {path.parent}; keep one of them.")
        where[key] = path.parent
        settings_seen.setdefault(json.dumps(result["settings"], sort_keys=True), path.parent)
        run_dir = str(path.parent.relative_to(root))
        fn = result.get("false_negatives") or {}
        run_rows.append({**dict(zip(KEY, key)), "fn_per_item": fn.get("per_item"), "fn_share": fn.get("share"),
                         "seconds": sum(result["seconds"].values()), "cpu_seconds": result.get("cpu_seconds"),
                         "run_dir": run_dir})
        for dose in result["doses"]:
            dose_rows.append({**dict(zip(KEY, key)), "dose": dose["dose"], "stage0_val_loss": dose["stage0_val_loss"],
                              **{name: dose[name] for name, _ in METRICS}, "threshold": dose["threshold"],
                              "steps": dose["steps"], "best_step": dose.get("best_step"), "run_dir": run_dir})
    if not dose_rows:
        raise DataError(f"No finished proof runs under {root}; run `python -m cftclip_core.proof all --out {root}` "
                        "first.")
    if len(settings_seen) > 1:
        folders = ", ".join(str(p) for p in settings_seen.values())
        raise DataError(f"The runs under {root} used different settings (e.g. {folders}); aggregate runs of one "
                        "setting only (move the others away).")
    settings = ProofSettings.from_dict(json.loads(next(iter(settings_seen))))
    return Results(_ordered(pd.DataFrame(dose_rows), ["dose"]), _ordered(pd.DataFrame(run_rows), []), settings)


def read_results_csv(path: Path) -> pd.DataFrame:
    """A results.csv written by ``table`` (one row per run and dose), ready for ``contrast``."""
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"Cannot read the proof results {path} ({exc}); write them with "
                        "`python -m cftclip_core.proof table DIR`.") from None
    missing = sorted({*KEY, "dose", PRIMARY_METRIC} - set(frame.columns))
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}; write it again with "
                        "`python -m cftclip_core.proof table DIR`.")
    return _ordered(frame, ["dose"])


def _ordered(frame: pd.DataFrame, extra: list[str]) -> pd.DataFrame:
    frame["world"] = pd.Categorical(frame["world"], [w for w in WORLDS if w in set(frame["world"])])
    frame["arm"] = pd.Categorical(frame["arm"], [a for a in ARMS if a in set(frame["arm"])])
    return frame.sort_values(["world", "arm", "seed", "data_seed", *extra]).reset_index(drop=True)


@dataclass(frozen=True)
class Contrast:
    world: str
    a: str
    b: str
    metric: str
    dose: int | None  # None: the mean over the doses of the per-dose differences
    seeds: tuple[int, ...]
    diffs: tuple[float, ...]  # per seed, a - b
    test: metrics.PairedSeedTest  # paired t-test and t-interval
    p_wilcoxon: float
    p_sign: float
    p_holm: float | None = None  # the primary contrasts only

    @property
    def label(self) -> str:
        return f"{self.a} − {self.b}"


def contrast(frame: pd.DataFrame, world: str, a: str, b: str, metric: str = PRIMARY_METRIC,
             dose: int | None = None) -> Contrast | None:
    """``a - b`` over the seeds that have both arms (at ``dose``, or at every dose both arms have in this
    world); None when no seed has both."""
    rows = frame[(frame["world"] == world) & frame["arm"].isin([a, b])]
    if dose is not None:
        rows = rows[rows["dose"] == dose]
    table = rows.pivot_table(index=["seed", "data_seed"], columns=["arm", "dose"], values=metric, observed=True)
    doses = sorted(set(rows["dose"]))
    if not doses or a not in table.columns.get_level_values(0) or b not in table.columns.get_level_values(0):
        return None
    columns_a, columns_b = [(a, d) for d in doses], [(b, d) for d in doses]
    if not set(columns_a + columns_b) <= set(table.columns):
        return None
    table = table[columns_a + columns_b].dropna()
    if table.empty:
        return None
    values_a = table[columns_a].to_numpy(float).mean(axis=1)
    values_b = table[columns_b].to_numpy(float).mean(axis=1)
    diffs = values_a - values_b
    return Contrast(world, a, b, metric, dose, tuple(int(s) for s, _ in table.index), tuple(map(float, diffs)),
                    metrics.paired_seed_test(values_a, values_b), wilcoxon_p(diffs), sign_test_p(diffs))


def wilcoxon_p(diffs: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p (exact for small samples); NaN when every difference is 0."""
    values = np.asarray(diffs, float)
    if not np.any(values != 0):
        return math.nan
    return float(stats.wilcoxon(values).pvalue)


def sign_test_p(diffs: Sequence[float]) -> float:
    """Two-sided sign test p (ties dropped); NaN without a non-zero difference."""
    values = np.asarray(diffs, float)
    wins, losses = int((values > 0).sum()), int((values < 0).sum())
    if wins + losses == 0:
        return math.nan
    return float(stats.binomtest(wins, wins + losses, 0.5).pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (NaN stays NaN and counts in m)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: (math.isnan(p_values[i]), p_values[i]))
    adjusted = [math.nan] * m
    running = 0.0
    for rank, i in enumerate(order):
        if math.isnan(p_values[i]):
            continue
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def primary_contrasts(frame: pd.DataFrame) -> list[Contrast]:
    """The pre-registered primary contrasts in the primary world, Holm-adjusted together."""
    found = [contrast(frame, PRIMARY_WORLD, a, b) for a, b in PRIMARY_CONTRASTS]
    present = [c for c in found if c is not None]
    adjusted = holm([c.test.p_value for c in present])
    return [Contrast(**{**c.__dict__, "p_holm": p}) for c, p in zip(present, adjusted)]
