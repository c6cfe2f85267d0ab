"""How much work a proof grid is, how long it should take here, and how far it has got (torch-free).

``Pace`` is measured on this machine by ``python -m cftclip_core.proof calibrate`` (seconds per training
step of each loss, per embedded image and text, per process start). Work is counted in steps: the
stage-0 steps of each (world, seed, data seed) and the stage-1 steps of each trained run and dose.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cftclip_core.specs.proof import ARMS, ProofSettings, RunKey

VALIDATION_PASSES = 2  # a validation embeds the validation images and texts once each; counted twice for the loss


@dataclass(frozen=True)
class Pace:
    """Seconds on this machine, one thread per process."""

    step: Mapping[str, float]  # per training step, by arm (the stage-0 step is the 'clip' step)
    image: float  # embedding one image (evaluation)
    text: float  # embedding one text (evaluation)
    start: float  # starting a run process (imports, loading)

    def to_dict(self) -> dict[str, object]:
        return {"step": dict(self.step), "image": self.image, "text": self.text, "start": self.start}

    @classmethod
    def from_dict(cls, values: Mapping[str, object]) -> Pace:
        step = values["step"]
        assert isinstance(step, Mapping)
        return cls({str(k): float(v) for k, v in step.items()}, float(values["image"]),  # type: ignore[arg-type]
                   float(values["text"]), float(values["start"]))  # type: ignore[arg-type]


def stage0_keys(runs: Sequence[RunKey]) -> list[tuple[str, int, int]]:
    """The stage-0 runs a grid needs: one per (world, seed, data seed)."""
    return list(dict.fromkeys((r.world, r.seed, r.data_seed) for r in runs))


def run_steps(run: RunKey, settings: ProofSettings) -> int:
    """Stage-1 steps of one run (all doses); 0 for an arm that is not trained."""
    return len(settings.stage0_steps) * settings.steps if ARMS[run.arm].loss else 0


def total_steps(runs: Sequence[RunKey], settings: ProofSettings) -> int:
    return len(stage0_keys(runs)) * settings.stage0_total + sum(run_steps(r, settings) for r in runs)


def _epochs(steps: int, settings: ProofSettings) -> int:
    return math.ceil(steps / max(1, settings.train_items // settings.batch_size))


def evaluation_seconds(settings: ProofSettings, pace: Pace, n_names: int = 16) -> float:
    """One model's evaluation: validation and test pairs, the name choice, the context and image sides."""
    images = settings.val_items + 3 * settings.test_items
    texts = 2 * settings.val_items + (2 + n_names + 2) * settings.test_items
    return images * pace.image + texts * pace.text


def _validation_seconds(settings: ProofSettings, pace: Pace, validations: int) -> float:
    return validations * VALIDATION_PASSES * settings.val_items * (pace.image + pace.text)


def run_seconds(run: RunKey, settings: ProofSettings, pace: Pace) -> float:
    """One run's stage 1 and evaluations at every dose (its stage 0 not included)."""
    doses = len(settings.stage0_steps)
    seconds = pace.start + doses * evaluation_seconds(settings, pace)
    if ARMS[run.arm].loss:
        per_dose = settings.steps * pace.step[run.arm] + _validation_seconds(settings, pace, _epochs(settings.steps,
                                                                                                    settings))
        seconds += doses * per_dose
    return seconds


def stage0_seconds(settings: ProofSettings, pace: Pace) -> float:
    total = settings.stage0_total
    return total * pace.step["clip"] + _validation_seconds(settings, pace, _epochs(total, settings))


def grid_seconds(runs: Sequence[RunKey], settings: ProofSettings, pace: Pace) -> float:
    """Single-process seconds for the whole grid."""
    return (len(stage0_keys(runs)) * stage0_seconds(settings, pace)
            + sum(run_seconds(r, settings, pace) for r in runs))


def effective_slots(job_slots: int, cpu_count: int | None) -> int:
    """Runs that truly run at once: the job slots, at most one per CPU core (each run uses one thread)."""
    return max(1, min(job_slots, cpu_count or job_slots))


def eta_before_launch(runs: Sequence[RunKey], settings: ProofSettings, pace: Pace, slots: int) -> float:
    """Wall seconds for the grid on ``slots`` parallel runs."""
    return grid_seconds(runs, settings, pace) / max(1, slots)


@dataclass(frozen=True)
class RunState:
    """What the queue knows of one run of the grid."""

    run: RunKey
    finished: bool  # succeeded, failed or cancelled: no more work will be done
    succeeded: bool
    step: int  # the steps its heartbeat reports (stage 0 included when this run trained it)


@dataclass(frozen=True)
class Progress:
    runs_done: int
    runs_total: int
    steps_done: int
    steps_total: int
    eta_seconds: float | None  # wall seconds left; None when nothing is left to estimate from

    @property
    def fraction(self) -> float:
        return self.steps_done / self.steps_total if self.steps_total else 1.0


MIN_OBSERVED = 0.05  # below this share of the steps done, the calibrated pace beats the observed one


def progress(states: Sequence[RunState], settings: ProofSettings, pace: Pace | None, slots: int,
             elapsed: float | None) -> Progress:
    """Overall progress of a grid. Steps done: what each run's heartbeat reports (the run that trains a
    stage 0 counts its steps, so the sum reaches ``total_steps`` exactly). The ETA extrapolates the
    observed pace (``elapsed`` wall seconds since the first run started) once ``MIN_OBSERVED`` of the
    steps are done; before that it uses the calibrated ``pace`` on ``slots`` parallel runs."""
    total = total_steps([s.run for s in states], settings)
    done = min(total, sum(max(s.step, run_steps(s.run, settings) if s.succeeded else 0) for s in states))
    if states and all(s.succeeded for s in states):
        done = total  # a run's heartbeat may be gone: a grid that succeeded did every step
    left = total - done
    eta: float | None = None
    if all(s.finished for s in states):
        eta = 0.0
    elif elapsed is not None and elapsed > 0 and total and done / total >= MIN_OBSERVED:
        eta = elapsed * left / done
    elif pace is not None and total:
        eta = eta_before_launch([s.run for s in states], settings, pace, slots) * left / total
    return Progress(sum(s.finished for s in states), len(states), done, total, eta)
