"""The proof's aggregation and tests (cftclip_core.proof.results, .report) on hand-made run folders: the
primary contrasts average the per-dose differences, Holm adjusts them together, the rank tests and the
verdict follow, and the report holds every block."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from cftclip_core import metrics
from cftclip_core.errors import DataError
from cftclip_core.proof.cli import main
from cftclip_core.proof.report import verdict
from cftclip_core.proof.results import (
    collect_results,
    contrast,
    holm,
    primary_contrasts,
    read_results_csv,
    sign_test_p,
)
from cftclip_core.proof.run_files import run_dir_for
from cftclip_core.specs.proof import METRICS, ProofSettings, RunKey

SETTINGS = ProofSettings(stage0_steps=(10, 20))
SEEDS = (100, 101, 102, 103, 104, 105)


def fake_run(root: Path, run: RunKey, aucs: dict[int, float], settings: ProofSettings = SETTINGS,
             fn_share: float | None = None) -> None:
    folder = run_dir_for(root, run)
    folder.mkdir(parents=True)
    doses = [{"dose": dose, "stage0_val_loss": 1.0 + run.seed / 1000 - dose / 100, "threshold": 0.1, "steps": 300,
              "best_step": 300, **{name: auc - k * 0.01 for k, (name, _) in enumerate(METRICS)}}
             for dose, auc in aucs.items()]
    result = {"world": run.world, "arm": run.arm, "seed": run.seed, "data_seed": run.data_seed,
              "settings": settings.result_key(), "doses": doses, "seconds": {"doses": 60.0}, "cpu_seconds": 30.0,
              "roc_auc": float(np.mean(list(aucs.values())))}
    if fn_share is not None:
        result["false_negatives"] = {"per_item": fn_share * 63, "share": fn_share}
    (folder / "metrics.json").write_text(json.dumps(result))


@pytest.fixture
def grid_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for k, seed in enumerate(SEEDS):
        base = 0.7 + rng.normal(0, 0.02)
        arms = {"clip": (base, base + 0.01), "i2t": (base - 0.02, base - 0.03),
                "cft": (base + 0.03 + 0.005 * k, base + 0.01 * (k % 3)), "cft-m3": (base + 0.04, base + 0.02),
                "zero-shot": (0.5, 0.5)}
        for arm, (a10, a20) in arms.items():
            fake_run(tmp_path, RunKey("many", arm, seed, seed), {10: a10, 20: a20}, fn_share=0.0005)
        for arm in ("clip", "cft"):
            fake_run(tmp_path, RunKey("few", arm, seed, seed), {10: base, 20: base - 0.01 * (arm == "cft")},
                     fn_share=0.01)
    return tmp_path


def per_seed_mean(root: Path, world: str, arm: str, name: str = "roc_auc") -> np.ndarray:
    frame = collect_results(root).doses
    rows = frame[(frame["world"] == world) & (frame["arm"] == arm)]
    return rows.groupby("seed")[name].mean().loc[list(SEEDS)].to_numpy()


def test_primary_contrasts_average_doses_then_test_paired_over_seeds_with_holm(grid_dir: Path) -> None:
    found = primary_contrasts(collect_results(grid_dir).doses)
    assert [(c.a, c.b, c.world, c.dose) for c in found] == [("cft", "i2t", "many", None), ("cft", "clip", "many", None)]
    raw = []
    for c in found:
        a, b = per_seed_mean(grid_dir, "many", c.a), per_seed_mean(grid_dir, "many", c.b)
        expected = metrics.paired_seed_test(a, b)
        assert (c.test.mean_diff, c.test.ci_low, c.test.ci_high, c.test.p_value) == pytest.approx(
            (expected.mean_diff, expected.ci_low, expected.ci_high, expected.p_value))
        assert c.seeds == SEEDS and c.diffs == pytest.approx(tuple(a - b))
        assert c.p_wilcoxon == pytest.approx(stats.wilcoxon(a - b).pvalue)
        wins = int(((a - b) > 0).sum())
        assert c.test.wins_a == wins and c.p_sign == pytest.approx(stats.binomtest(wins, 6).pvalue)
        raw.append(c.test.p_value)
    small, large = sorted(raw)
    assert sorted(c.p_holm for c in found) == pytest.approx([2 * small, max(2 * small, large)])


def test_holm_adjusts_step_down_and_keeps_the_input_order() -> None:
    assert holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])
    assert holm([0.5, 0.01]) == pytest.approx([0.5, 0.02])
    adjusted = holm([math.nan, 0.02])
    assert math.isnan(adjusted[0]) and adjusted[1] == pytest.approx(0.04)
    assert math.isnan(sign_test_p([0.0, 0.0]))


def test_verdict_claims_a_win_only_when_holm_p_is_small_and_the_difference_positive(grid_dir: Path) -> None:
    c = primary_contrasts(collect_results(grid_dir).doses)[0]
    assert verdict(dataclass_replace(c, p_holm=0.01)) == "cft higher than i2t, significant after Holm"
    assert verdict(dataclass_replace(c, p_holm=0.2)).startswith("no significant difference")
    lower = dataclass_replace(c, p_holm=0.01, test=dataclass_replace(c.test, mean_diff=-0.1))
    assert verdict(lower) == "cft lower than i2t, significant after Holm"


def dataclass_replace(obj, **changes):  # noqa: ANN001, ANN003, ANN201
    import dataclasses

    return dataclasses.replace(obj, **changes)


def test_a_contrast_at_one_dose_uses_that_dose_only(grid_dir: Path) -> None:
    frame = collect_results(grid_dir).doses
    at_20 = contrast(frame, "many", "cft", "clip", dose=20)
    rows = frame[frame["dose"] == 20].set_index(["world", "arm", "seed"])["roc_auc"]
    expected = [rows[("many", "cft", s)] - rows[("many", "clip", s)] for s in SEEDS]
    assert at_20 is not None and at_20.diffs == pytest.approx(tuple(expected))
    assert contrast(frame, "few", "cft", "i2t") is None  # no i2t in that world


def test_table_writes_every_block_and_the_figure(grid_dir: Path) -> None:
    assert main(["table", str(grid_dir)]) == 0
    table = (grid_dir / "table.md").read_text()
    blocks = ["## Primary (pre-registered)", "## Secondary", "## Every arm and dose", "## Dose-response",
              "## False negatives", "## Compute"]
    assert [table.index(b) for b in blocks] == sorted(table.index(b) for b in blocks)  # primary first
    c = primary_contrasts(collect_results(grid_dir).doses)[1]
    assert f"| cft − clip | 6 | {c.test.mean_diff:+.3f} | [{c.test.ci_low:+.3f}, {c.test.ci_high:+.3f}] |" in table
    assert "| many · 20 | cft-m3 − cft | 6 |" in table and "| few · mean | cft − clip | 6 |" in table
    assert "| few | 6 | 0.630 ± 0.000 | 1.000 ± 0.000 % |" in table  # false negatives per item, share
    assert "| many | 30 | 0.25 |" in table  # compute: 30 runs x 30 CPU seconds
    assert "--stage0-steps 10,20" in table and "--seeds 100-105" in table
    results = collect_results(grid_dir).doses
    assert len(results) == 6 * 7 * 2
    assert (grid_dir / "results.csv").read_text().count("\n") == len(results) + 1
    assert (grid_dir / "dose-response.svg").read_text().startswith("<svg")


def test_duplicate_runs_and_mixed_settings_are_refused(tmp_path: Path) -> None:
    run = RunKey("many", "cft", 100, 100)
    fake_run(tmp_path / "a", run, {10: 0.8, 20: 0.8})
    fake_run(tmp_path / "a" / "copy", run, {10: 0.8, 20: 0.8})
    with pytest.raises(DataError, match="Two finished runs of many cft seed 100"):
        collect_results(tmp_path / "a")
    fake_run(tmp_path / "b", run, {10: 0.8, 20: 0.8})
    fake_run(tmp_path / "b", RunKey("many", "clip", 100, 100), {10: 0.8}, ProofSettings(stage0_steps=(10,)))
    with pytest.raises(DataError, match="different settings"):
        collect_results(tmp_path / "b")


def test_results_csv_reads_back_to_the_same_primary_contrasts(grid_dir: Path) -> None:
    assert main(["table", str(grid_dir)]) == 0
    again = primary_contrasts(read_results_csv(grid_dir / "results.csv"))
    first = primary_contrasts(collect_results(grid_dir).doses)
    assert [(c.label, c.diffs, c.p_holm) for c in again] == [(c.label, pytest.approx(c.diffs), pytest.approx(c.p_holm))
                                                            for c in first]
    (grid_dir / "broken.csv").write_text("world,arm\nmany,cft\n")
    with pytest.raises(DataError, match="lacks column"):
        read_results_csv(grid_dir / "broken.csv")
