"""The Train page's one-click demo: the pre-registered synthetic proof (docs/synthetic-proof.md), with its
total ETA before launch and its overall progress while it runs.

The ETA comes from this machine's measured pace (``python -m cftclip_core.proof calibrate``: a few real
training steps of each arm and the cost of embedding images and texts, one thread, as the jobs run),
times the grid's steps and evaluations, over the runs that truly run at once (the ``CFTCLIP_CPU_JOBS``
slots, at most one per CPU core). The pace is kept in the instance's proof cache, so it is measured
once per machine (again on request). ``demo_section`` is what the page calls.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from annotations.models import Experiment, TrainRun, User, utcnow
from annotations.settings import Settings
from cftclip_core.errors import CftClipError
from cftclip_core.proof.plan import (
    Pace,
    Progress,
    RunState,
    effective_slots,
    eta_before_launch,
    progress,
    stage0_keys,
    total_steps,
)
from cftclip_core.proof.report import verdict
from cftclip_core.proof.results import primary_contrasts, read_results_csv
from cftclip_core.specs.proof import (
    ARMS,
    PREREGISTERED_SEEDS,
    WORLDS,
    ProofSettings,
    RunKey,
    grid,
)
from cftclip_core.specs.seeds import format_seeds, parse_seeds
from studio.common import show_error
from studio.instance import Studio
from studio.job_widgets import remember_outcome, show_outcome
from studio.tables import format_timestamp, show_table
from studio.train_form import CHOSEN
from train_jobs import api

SHIPPED_RESULTS = Path(__file__).resolve().parents[1] / "docs" / "proof" / "results.csv"  # the pre-registered run
PACE_FILE = "pace.json"  # in the instance's proof cache (where the demo's runs keep their cache too)
CALIBRATE_TIMEOUT_S = 300
LIVE_SECONDS = 5
OUTCOME = "proof_demo_outcome"  # the buttons' outcome, shown on the next run of the page


class CalibrationError(CftClipError):
    """The machine's pace could not be measured."""


@dataclass(frozen=True)
class MeasuredPace:
    pace: Pace
    measured_at: str  # ISO time
    cpu_count: int | None


def pace_file(settings: Settings) -> Path:
    return settings.cache_dir / "proof" / PACE_FILE


def read_pace(settings: Settings) -> MeasuredPace | None:
    """The pace measured earlier on this machine, or None (never measured, or unreadable)."""
    try:
        saved = json.loads(pace_file(settings).read_text(encoding="utf-8"))
        measured = MeasuredPace(Pace.from_dict(saved["pace"]), str(saved["measured_at"]), saved.get("cpu_count"))
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        return None
    trained = {arm for arm, spec in ARMS.items() if spec.loss}
    return measured if trained <= set(measured.pace.step) else None  # measured before an arm was added


def measure_pace(settings: Settings) -> MeasuredPace:
    """Run ``python -m cftclip_core.proof calibrate`` as a job would (one thread) and keep its answer."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    try:
        done = subprocess.run([sys.executable, "-m", "cftclip_core.proof", "calibrate"], capture_output=True,
                              text=True, env=env, timeout=CALIBRATE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise CalibrationError(f"Measuring this machine took over {CALIBRATE_TIMEOUT_S} s; it is too busy. Try "
                               "again later.") from None
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise CalibrationError(f"Measuring this machine failed (exit {done.returncode}): {tail}")
    measured = MeasuredPace(Pace.from_dict(json.loads(done.stdout.strip().splitlines()[-1])),
                            utcnow().isoformat(timespec="seconds"), os.cpu_count())
    path = pace_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pace": measured.pace.to_dict(), "measured_at": measured.measured_at,
                                "cpu_count": measured.cpu_count}), encoding="utf-8")
    return measured


def run_states(demo: Sequence[tuple[Experiment, Sequence[TrainRun]]]) -> list[RunState]:
    """The demo's runs as the plan counts them."""
    return [RunState(RunKey(str(e.config["world"]), str(e.config["arm"]), r.seed, r.seed),
                     finished=r.state in api.FINAL, succeeded=r.state == api.SUCCEEDED, step=r.step or 0)
            for e, runs in demo for r in runs]


def elapsed_seconds(demo: Sequence[tuple[Experiment, Sequence[TrainRun]]]) -> float | None:
    """Wall seconds since the demo's first run started (None before one has)."""
    started = [r.started_at for _, runs in demo for r in runs if r.started_at is not None]
    return (utcnow() - min(started)).total_seconds() if started else None


def describe_progress(done: Progress) -> str:
    eta = api.format_duration(done.eta_seconds)
    return (f"Runs {done.runs_done}/{done.runs_total} finished · steps {done.steps_done:,}/{done.steps_total:,} · "
            f"about {eta} left")


def _slots(job_settings: api.JobSettings) -> int:
    return effective_slots(job_settings.cpu_jobs, os.cpu_count())


def _estimate(runs: list[RunKey], measured: MeasuredPace | None, job_settings: api.JobSettings) -> str:
    settings = ProofSettings()
    size = (f"{len(runs)} runs ({len(runs) // max(1, len({r.seed for r in runs}))} per seed), "
            f"{len(stage0_keys(runs))} stage-0 runs, {total_steps(runs, settings):,} training steps and "
            f"{len(runs) * len(settings.stage0_steps)} evaluated models")
    if measured is None:
        return f"{size}. Measure this machine first to see how long it will take."
    slots = _slots(job_settings)
    eta = eta_before_launch(runs, settings, measured.pace, slots)
    pace = measured.pace
    return (f"{size}. **Estimated {api.format_duration(eta)}** with {slots} run(s) at a time "
            f"(`CFTCLIP_CPU_JOBS={job_settings.cpu_jobs}`, {os.cpu_count()} CPU cores), at this machine's pace "
            f"measured {format_timestamp(measured.measured_at)} UTC: {pace.step['clip']:.2f} s per plain step, {pace.step['cft']:.2f} s per "
            f"cft step, {pace.step['cft-m3']:.2f} s per cft-m3 step. Other work on the machine slows it down.")


def shipped_result(path: Path = SHIPPED_RESULTS) -> pd.DataFrame | None:
    """The pre-registered experiment's primary result, computed from its results.csv (None before it exists):
    per primary contrast the mean difference, its 95% t-interval, seeds won, Holm-adjusted p and the verdict."""
    if not path.is_file():
        return None
    rows = []
    for c in primary_contrasts(read_results_csv(path)):
        rows.append({"contrast": f"{c.label} ({c.world} world, ROC-AUC)", "mean Δ": round(c.test.mean_diff, 3),
                     "95% t-interval": f"[{c.test.ci_low:+.3f}, {c.test.ci_high:+.3f}]",
                     "seeds won": f"{c.test.wins_a}/{c.test.n}", "Holm p": float(f"{c.p_holm:.2g}"),
                     "verdict": verdict(c)})
    return pd.DataFrame(rows)


def _measure(settings: Settings) -> None:
    try:
        measure_pace(settings)
    except CftClipError as exc:
        remember_outcome(OUTCOME, exc)


def _launch(app: Studio, user_id: int | None) -> None:
    try:
        seeds = parse_seeds(st.session_state["demo_seeds"], what="Seeds")
        made = api.create_proof_demo(app.sessions, app.settings, seeds=seeds, user_id=user_id)
    except CftClipError as exc:
        remember_outcome(OUTCOME, exc)
        return
    api.request_poll(app.settings)
    st.session_state[CHOSEN] = made[0].id
    remember_outcome(OUTCOME, f"The synthetic proof is queued: {len(made)} experiments of {len(seeds)} run(s) each.")


@st.fragment(run_every=LIVE_SECONDS)
def _live_progress(app: Studio, job_settings: api.JobSettings) -> None:
    with app.sessions() as session:
        demo = api.latest_demo(session)
    if not demo:
        return
    measured = read_pace(app.settings)
    done = progress(run_states(demo), ProofSettings(), measured.pace if measured else None, _slots(job_settings),
                    elapsed_seconds(demo))
    name = demo[0][0].name.split(":")[0]
    st.progress(done.fraction, text=f"{name}: {describe_progress(done)}")


def demo_section(app: Studio, user: User) -> None:
    """The demo section: what it runs, the ETA before launch, the launch, and the latest demo's progress.
    Launching shows the demo's first experiment in the page's live view."""
    job_settings = api.JobSettings.from_env()  # the page has checked it already
    worlds = "; ".join(f"{w} ({spec.description.split(':')[0]}): {', '.join(spec.arms)}" for w, spec in WORLDS.items())
    doses = ", ".join(f"{d:,}" for d in ProofSettings().stage0_steps)
    st.markdown(f"A tiny CLIP learns a synthetic news world (fictional people drawn as distinct figures, texts naming "
                f"them) on this machine's CPU. The demo runs the **pre-registered** proof of docs/synthetic-proof.md: "
                f"worlds and arms {worlds}; each arm from stage-0 doses of {doses} steps; one run per world, arm and "
                f"seed. Does counterfactual training (cft) teach names better than the same loss without "
                f"counterfactuals (i2t) and than plain contrastive training (clip)?")
    result = shipped_result()
    if result is None:
        st.caption("The pre-registered run has no results in docs/proof/ yet.")
    else:
        st.markdown("**The pre-registered result** (seeds 100–105, docs/synthetic-proof.md), as its results.csv says:")
        show_table(result)
    left, right = st.columns([1, 3], vertical_alignment="bottom")
    left.text_input("Seeds", format_seeds(PREREGISTERED_SEEDS), key="demo_seeds",
                    help="The pre-registered seeds are 100-105; other seeds run the same grid but are not the "
                         "pre-registered experiment.")
    measured = read_pace(app.settings)
    try:
        runs = grid(seeds=parse_seeds(st.session_state["demo_seeds"], what="Seeds"))
    except CftClipError as exc:
        show_error(exc)
        runs = []
    if runs:
        st.markdown(_estimate(runs, measured, job_settings))
    right.button("Measure this machine" if measured is None else "Measure again", icon=":material/speed:",
                 key="demo_measure", on_click=_measure, args=(app.settings,),
                 help="A few real training steps of each arm, one thread, as the jobs run (about 20 s).")
    st.button("Launch the synthetic proof", icon=":material/science:", key="train_demo", on_click=_launch,
              args=(app, user.id), disabled=measured is None or not runs,
              help="Measure this machine first, to see how long it takes." if measured is None else None)
    show_outcome(OUTCOME)
    _live_progress(app, job_settings)
