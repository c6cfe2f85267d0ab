"""The one-click demo: the pre-registered synthetic proof (``python -m cftclip_core.proof``, protocol in
docs/synthetic-proof.md) as experiments, one per world and arm of the grid, each run once per seed (each
run covers every stage-0 dose), so that a newcomer watches the real comparison come in on a CPU.

Experiments are created world by world, arms in the proof's order (zero-shot, clip, i2t, cft, ...): the
queue launches runs in creation order, so the ``many`` world's comparisons come in first, and the first
runs (one per seed) train the stage-0 models that the later arms of their seed reuse.
All or nothing: if one experiment cannot be created, those made before it are removed again (a run a
concurrent poll already launched is cancelled instead).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from annotations.db import write_session
from annotations.models import Experiment, TrainRun
from annotations.settings import Settings
from cftclip_core.errors import CftClipError
from cftclip_core.specs.proof import PREREGISTERED_SEEDS, WORLDS
from train_jobs import states
from train_jobs.experiments import ExperimentError, create_proof_experiment
from train_jobs.reconcile import cancel_run

DEMO_NAME = "Synthetic proof"


def proof_grid() -> list[tuple[str, str]]:
    """Every (world, arm) of the pre-registered proof, in the order the demo queues them."""
    return [(world, arm) for world, spec in WORLDS.items() for arm in spec.arms]


def create_proof_demo(
    factory: sessionmaker[Session],
    settings: Settings,
    *,
    seeds: Sequence[int] = PREREGISTERED_SEEDS,
    user_id: int | None = None,
) -> list[Experiment]:
    """One proof experiment per (world, arm) on this machine's CPU, named 'Synthetic proof N: ...'."""
    with factory() as session:
        number = next(n for n in range(1, 10_000) if session.scalar(
            select(Experiment.id).where(Experiment.name.startswith(f"{DEMO_NAME} {n}: ", autoescape=True))) is None)
    made: list[Experiment] = []
    try:
        for world, arm in proof_grid():
            made.append(create_proof_experiment(
                factory, settings, name=f"{DEMO_NAME} {number}: {world} world, {arm}", world=world, arm=arm,
                seeds=seeds, user_id=user_id))
    except BaseException as exc:
        if not made:
            raise
        _remove(factory, made, user_id)
        if isinstance(exc, CftClipError):
            raise ExperimentError(f"{exc} The demo's experiments created before it were removed again (a run "
                                  "already started is cancelled instead).") from exc
        raise
    return made


def latest_demo(session: Session) -> list[tuple[Experiment, list[TrainRun]]]:
    """The experiments of the most recent demo ('Synthetic proof N: ...' with the largest N), in creation order,
    each with its runs; empty before any demo."""
    pattern = re.compile(rf"{re.escape(DEMO_NAME)} (\d+): ")
    demos: dict[int, list[Experiment]] = {}
    for experiment in session.scalars(select(Experiment).where(Experiment.kind == "proof",
                                                               Experiment.name.startswith(f"{DEMO_NAME} ", autoescape=True))
                                      .order_by(Experiment.id)):
        match = pattern.match(experiment.name)
        if match:
            demos.setdefault(int(match.group(1)), []).append(experiment)
    if not demos:
        return []
    return [(experiment, list(session.scalars(select(TrainRun).where(TrainRun.experiment_id == experiment.id)
                                              .order_by(TrainRun.id))))
            for experiment in demos[max(demos)]]


def _remove(factory: sessionmaker[Session], experiments: list[Experiment], user_id: int | None) -> None:
    """Delete the experiments' queued runs, then each experiment left without runs, with its folder."""
    launched: list[int] = []
    removed: list[Experiment] = []
    with write_session(factory) as session:
        for experiment in experiments:
            session.execute(delete(TrainRun).where(TrainRun.experiment_id == experiment.id,
                                                   TrainRun.state == states.QUEUED))
            left = list(session.scalars(select(TrainRun.id).where(TrainRun.experiment_id == experiment.id)))
            if left:
                launched += left
            else:
                session.execute(delete(Experiment).where(Experiment.id == experiment.id))
                removed.append(experiment)
    for experiment in removed:
        shutil.rmtree(experiment.folder, ignore_errors=True)
    for run_id in launched:
        cancel_run(factory, run_id, user_id)
