"""What the app (pages and ``studio``) uses of ``train_jobs``; everything else in the package is internal.

The queue moves by the instance's ``Poller`` (the app starts one; ``request_poll`` asks it for a poll now,
``alive_poller`` says who polls); pages only read and act. Training: ``create_experiment`` /
``create_proof_demo`` from a form (``latest_demo`` for its progress), ``training_experiments`` + ``experiment_runs`` and the view functions
(summaries, curves, ETA, headline) for the live view, ``log_tail`` for a run's log, ``cancel_run``,
``resume_run`` and ``delete_experiment`` from buttons, ``discover_gpus`` to show the machine; seeds compared
with ``seed_metrics``, ``seed_summary`` and ``paired_comparison`` (``run_metrics``: a run's metrics as every page
computes them; ``finished_experiments``: those the Seeds page preselects). Scoring: ``queue_scoring`` and
``score_jobs``.
"""

from train_jobs.comparison import (
    finished_experiments,
    metric_names,
    paired_comparison,
    run_metrics,
    seed_metrics,
    seed_summary,
)
from train_jobs.demo import create_proof_demo, latest_demo
from train_jobs.experiments import (
    DEFAULT_SEEDS,
    ExperimentError,
    ExperimentRequest,
    create_experiment,
    create_proof_experiment,
    delete_experiment,
    experiment_runs,
    list_experiments,
)
from train_jobs.gpus import GpuInventory, discover_gpus
from train_jobs.locks import request_poll
from train_jobs.poller import Poller, PollerStatus, alive_poller
from train_jobs.reconcile import CancelResult, PollReport, cancel_run, default_launchers, poll
from train_jobs.results import import_results, results_row
from train_jobs.resume import can_resume, resume_run
from train_jobs.runfiles import log_tail
from train_jobs.scoring import ScoreJob, ScoreRequest, queue_scoring, score_jobs
from train_jobs.settings import JobSettings, SlurmSettings
from train_jobs.states import ACTIVE, FINAL, SUCCEEDED
from train_jobs.views import (
    RECENT_STEPS,
    Curves,
    as_text,
    counterfactual_command,
    counterfactual_recipes,
    counterfactuals_per_item,
    describe,
    eta_seconds,
    experiment_curves,
    experiment_summaries,
    finished_runs,
    form_defaults,
    format_duration,
    headline,
    log_stamp,
    own_checkpoints,
    parse_seeds,
    progress,
    proof_comparison,
    read_curves,
    samples_per_second,
    slurm_available,
    split_overlaps,
    training_experiments,
    typed_values,
    unique_name,
)

__all__ = [
    "ACTIVE", "DEFAULT_SEEDS", "RECENT_STEPS", "FINAL", "SUCCEEDED", "CancelResult", "Curves", "ExperimentError", "ExperimentRequest",
    "GpuInventory", "JobSettings", "PollReport", "Poller", "PollerStatus", "ScoreJob", "ScoreRequest", "SlurmSettings",
    "alive_poller", "as_text", "can_resume", "cancel_run", "counterfactual_command", "counterfactual_recipes",
    "counterfactuals_per_item", "create_experiment",
    "create_proof_demo", "create_proof_experiment", "default_launchers", "delete_experiment", "describe",
    "discover_gpus", "eta_seconds", "experiment_curves", "experiment_runs", "experiment_summaries", "finished_experiments",
    "finished_runs", "form_defaults",
    "format_duration", "headline", "import_results", "list_experiments", "log_stamp", "log_tail", "metric_names",
    "own_checkpoints", "paired_comparison", "parse_seeds", "poll", "progress", "proof_comparison", "latest_demo",
    "queue_scoring", "read_curves", "samples_per_second", "request_poll", "results_row", "resume_run", "run_metrics", "score_jobs", "seed_metrics",
    "seed_summary", "slurm_available", "split_overlaps", "training_experiments", "typed_values", "unique_name",
]
