"""The proof's report: results.csv (one row per run and dose), table.md (the primary block first) and the
dose-response figure (dose-response.svg: each contrast against the stage-0 validation loss)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import altair as alt
import pandas as pd

from cftclip_core import metrics
from cftclip_core.proof.results import (
    Contrast,
    Results,
    collect_results,
    contrast,
    primary_contrasts,
)
from cftclip_core.specs.proof import (
    ALPHA,
    ARMS,
    METRICS,
    PRIMARY_CONTRASTS,
    PRIMARY_WORLD,
    SECONDARY_CONTRASTS,
    WORLDS,
    ProofSettings,
)
from cftclip_core.specs.seeds import format_seeds

logger = logging.getLogger(__name__)

FIGURE = "dose-response.svg"
LABELS = dict(METRICS)


def _p(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2g}"


def _ci(c: Contrast) -> str:
    t = c.test
    return "n/a" if math.isnan(t.ci_low) else f"[{t.ci_low:+.3f}, {t.ci_high:+.3f}]"


def verdict(c: Contrast) -> str:
    """What the primary test says, in words."""
    p = c.p_holm if c.p_holm is not None else c.test.p_value
    if math.isnan(p) or p >= ALPHA:
        return f"no significant difference (α = {ALPHA})"
    return f"{c.a} {'higher' if c.test.mean_diff > 0 else 'lower'} than {c.b}, significant after Holm"


def _mean_std(values: pd.Series) -> str:
    summary = metrics.aggregate_seeds(values.to_numpy(float))
    return f"{summary.mean:.3f}" if math.isnan(summary.std) else f"{summary.mean:.3f} ± {summary.std:.3f}"


def rerun_command(results: Results) -> str:
    frame = results.doses
    worlds = ",".join(map(str, frame["world"].cat.categories))
    seeds = format_seeds(sorted(set(frame["seed"])))
    fixed = sorted(set(frame["data_seed"]))
    data = f" --data-seed {fixed[0]}" if len(fixed) == 1 and set(frame["seed"]) != set(fixed) else ""
    extra = " ".join(results.settings.to_args())
    return (f"python -m cftclip_core.proof all --out DIR --worlds {worlds} --seeds {seeds}{data}"
            + (f" {extra}" if extra else ""))


def _contrast_row(c: Contrast, *, first: str) -> str:
    t = c.test
    return (f"| {first} | {c.label} | {t.n} | {t.mean_diff:+.3f} | {_ci(c)} | {t.wins_a}/{t.n} | {_p(t.p_value)} "
            f"| {_p(c.p_wilcoxon)} | {_p(c.p_sign)} |")


def primary_block(results: Results) -> list[str]:
    lines = [f"## Primary (pre-registered): world `{PRIMARY_WORLD}`, test ROC-AUC on name-swap pairs",
             "", ("Per seed: the mean over the doses "
                  f"({', '.join(map(str, results.settings.stage0_steps))} stage-0 steps) of the per-dose difference. "
                  f"Paired t-test over seeds, Holm-corrected across the {len(PRIMARY_CONTRASTS)} contrasts, "
                  f"α = {ALPHA}; two-sided."), "",
             ("| contrast | seeds | mean Δ | 95% t-interval | seeds won | paired t p | Holm p | Wilcoxon p | sign p "
              "| verdict |"), "|---|---|---|---|---|---|---|---|---|---|"]
    found = primary_contrasts(results.doses)
    for c in found:
        t = c.test
        lines.append(f"| {c.label} | {t.n} | {t.mean_diff:+.3f} | {_ci(c)} | {t.wins_a}/{t.n} | {_p(t.p_value)} | "
                     f"{_p(c.p_holm)} | {_p(c.p_wilcoxon)} | {_p(c.p_sign)} | {verdict(c)} |")
    if not found:
        lines.append("| (no seed has both arms in the primary world yet) |||||||||| ")
    return lines + [""]


def secondary_block(results: Results) -> list[str]:
    frame, doses = results.doses, results.settings.stage0_steps
    lines = ["## Secondary (no multiplicity correction)", "",
             "### Contrasts on ROC-AUC, per dose and as the mean over doses", "",
             ("| world · dose | contrast | seeds | mean Δ | 95% t-interval | seeds won | paired t p | Wilcoxon p "
              "| sign p |"), "|---|---|---|---|---|---|---|---|---|"]
    pairs = [*PRIMARY_CONTRASTS, *SECONDARY_CONTRASTS]
    for world in frame["world"].cat.categories:
        for a, b in pairs:
            for dose in (None, *doses):
                c = contrast(frame, str(world), a, b, dose=dose)
                if c is not None:
                    lines.append(_contrast_row(c, first=f"{world} · {'mean' if dose is None else dose}"))
    lines += ["", "### Every metric, mean over doses (mean Δ [95% t-interval], seeds won)", "",
              "| world | contrast | " + " | ".join(label for _, label in METRICS) + " |",
              "|---|---|" + "---|" * len(METRICS)]
    for world in frame["world"].cat.categories:
        for a, b in pairs:
            found = [contrast(frame, str(world), a, b, metric=name) for name, _ in METRICS]
            if found[0] is None:
                continue
            cells = [f"{c.test.mean_diff:+.3f} {_ci(c)}, {c.test.wins_a}/{c.test.n}" if c else "n/a" for c in found]
            lines.append(f"| {world} | {a} − {b} | " + " | ".join(cells) + " |")
    return lines + [""]


def arms_block(results: Results) -> list[str]:
    frame = results.doses
    lines = ["## Every arm and dose (mean ± sd over seeds)", "",
             "| world | arm | dose | seeds | stage-0 val loss | " + " | ".join(label for _, label in METRICS) + " |",
             "|---|---|---|---|---|" + "---|" * len(METRICS)]
    for (world, arm, dose), rows in frame.groupby(["world", "arm", "dose"], observed=True, sort=True):
        cells = [_mean_std(rows[name]) for name, _ in METRICS]
        lines.append(f"| {world} | {arm} | {dose} | {len(rows)} | {_mean_std(rows['stage0_val_loss'])} | "
                     + " | ".join(cells) + " |")
    return lines + [""]


def dose_response(frame: pd.DataFrame) -> pd.DataFrame:
    """Per world, seed and dose: the stage-0 validation loss and each primary contrast on ROC-AUC."""
    rows = []
    for world in frame["world"].cat.categories:
        in_world = frame[frame["world"] == world]
        for (seed, data_seed, dose), group in in_world.groupby(["seed", "data_seed", "dose"], sort=True):
            auc = dict(zip(group["arm"].astype(str), group["roc_auc"]))
            for a, b in PRIMARY_CONTRASTS:
                if a in auc and b in auc:
                    rows.append({"world": str(world), "seed": seed, "data_seed": data_seed, "dose": dose,
                                 "stage0_val_loss": float(group["stage0_val_loss"].iloc[0]),
                                 "contrast": f"{a} − {b}", "delta": auc[a] - auc[b]})
    return pd.DataFrame(rows, columns=["world", "seed", "data_seed", "dose", "stage0_val_loss", "contrast", "delta"])


def dose_response_block(results: Results) -> list[str]:
    table = dose_response(results.doses)
    lines = ["## Dose-response: primary contrasts against the stage-0 validation loss", "",
             f"Figure: `{FIGURE}`. One row per world, seed and dose; Δ is test ROC-AUC.", "",
             "| world | seed | dose | stage-0 val loss | " + " | ".join(f"Δ {a} − {b}" for a, b in PRIMARY_CONTRASTS)
             + " |", "|---|---|---|---|" + "---|" * len(PRIMARY_CONTRASTS)]
    if table.empty:
        return lines + [""]
    wide = table.pivot_table(index=["world", "seed", "dose", "stage0_val_loss"], columns="contrast", values="delta",
                             sort=False)
    for (world, seed, dose, loss), row in wide.iterrows():
        cells = [f"{row.get(f'{a} − {b}', math.nan):+.3f}" for a, b in PRIMARY_CONTRASTS]
        lines.append(f"| {world} | {seed} | {dose} | {loss:.3f} | " + " | ".join(cells) + " |")
    for (world, label), group in table.groupby(["world", "contrast"], sort=False):
        if len(group) > 2:
            rho = group["stage0_val_loss"].corr(group["delta"], method="spearman")
            lines.append(f"\nSpearman correlation of Δ {label} with the stage-0 validation loss, {world}: "
                         f"{rho:+.2f} over {len(group)} points (descriptive; points of one seed are not independent).")
    return lines + [""]


def false_negatives_block(results: Results) -> list[str]:
    runs = results.runs.dropna(subset=["fn_share"])
    lines = ["## False negatives in the stage-1 batches", "",
             ("In-batch captions that truthfully describe the image (same person, same context), over the "
              f"{results.settings.steps} stage-1 batches of each seed (the same for every arm of a seed)."), "",
             "| world | seeds | per item and batch | share of in-batch caption negatives |", "|---|---|---|---|"]
    for world, rows in runs.groupby("world", observed=True):
        per_seed = rows.drop_duplicates(["seed", "data_seed"])
        lines.append(f"| {world} | {len(per_seed)} | {_mean_std(per_seed['fn_per_item'])} | "
                     f"{_mean_std(per_seed['fn_share'] * 100)} % |")
    return lines + [""]


def compute_block(results: Results) -> list[str]:
    runs = results.runs
    lines = ["## Compute", "", "| world | runs | process CPU hours | run wall hours (sum) |", "|---|---|---|---|"]
    for world, rows in runs.groupby("world", observed=True):
        lines.append(f"| {world} | {len(rows)} | {rows['cpu_seconds'].sum() / 3600:.2f} | "
                     f"{rows['seconds'].sum() / 3600:.2f} |")
    lines.append(f"| all | {len(runs)} | {runs['cpu_seconds'].sum() / 3600:.2f} | {runs['seconds'].sum() / 3600:.2f} |")
    return lines + [""]


def format_table(results: Results) -> str:
    settings: ProofSettings = results.settings
    frame = results.doses
    seeds = sorted(set(frame["seed"]))
    head = ["# Synthetic proof: results", "",
            f"Settings: `{settings.result_key()}`", "",
            f"Runs: {len(results.runs)} (seeds {format_seeds(seeds)}; arms per world: "
            + "; ".join(f"{w}: {', '.join(map(str, frame[frame['world'] == w]['arm'].unique()))}"
                        for w in frame["world"].cat.categories) + ")", "",
            f"Rerun: `{rerun_command(results)}`", ""]
    worlds = [f"- `{w}`: {WORLDS[str(w)].description}" for w in frame["world"].cat.categories]
    arms = [f"- `{a}`: {ARMS[str(a)].description}" for a in frame["arm"].cat.categories]
    return "\n".join([*head, *primary_block(results), *secondary_block(results), *arms_block(results),
                      *dose_response_block(results), *false_negatives_block(results), *compute_block(results),
                      "## Worlds and arms", "", *worlds, *arms, ""])


def dose_response_chart(frame: pd.DataFrame) -> alt.FacetChart:
    table = dose_response(frame)
    points = alt.Chart().mark_point(filled=True, size=60).encode(
        x=alt.X("stage0_val_loss:Q", title="stage-0 validation loss", scale=alt.Scale(zero=False)),
        y=alt.Y("delta:Q", title="Δ test ROC-AUC (name swap)"),
        color=alt.Color("contrast:N", title="contrast"),
        shape=alt.Shape("dose:O", title="stage-0 steps"),
        tooltip=["world:N", "seed:O", "dose:O", "contrast:N", alt.Tooltip("delta:Q", format="+.3f")])
    zero = alt.Chart().mark_rule(color="grey", strokeDash=[4, 4]).encode(y=alt.datum(0))
    worlds = [w for w in WORLDS if w in set(table["world"])]
    return alt.layer(points, zero, data=table).facet(column=alt.Column("world:N", title=None, sort=worlds)).properties(
        title="Primary contrasts against how far stage 0 got").resolve_scale(x="independent")


def write_results(root: Path) -> tuple[Path, Path, Path]:
    """Write ROOT/results.csv, ROOT/table.md and ROOT/dose-response.svg from the finished runs under ROOT."""
    results = collect_results(root)
    csv_path, md_path, figure_path = root / "results.csv", root / "table.md", root / FIGURE
    results.doses.to_csv(csv_path, index=False)
    md_path.write_text(format_table(results), encoding="utf-8")
    dose_response_chart(results.doses).save(str(figure_path))
    logger.info("Wrote %s (%d runs, %d rows), %s and %s", csv_path, len(results.runs), len(results.doses), md_path,
                figure_path)
    return csv_path, md_path, figure_path
