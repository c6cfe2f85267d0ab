"""What the app (pages, ``studio``) uses; everything else in ``train_jobs`` is internal.

The queue moves by the instance's ``Poller`` (the app starts one; ``request_poll`` asks it for a poll now,
``alive_poller`` says who polls); pages only read and act. Typical Train page flow: ``create_experiment`` /
``create_proof_experiment`` from a form, ``list_experiments`` + ``experiment_runs`` for the tables,
``log_tail`` for a run's log, ``cancel_run``, ``resume_run`` and ``delete_experiment`` from buttons,
``discover_gpus`` to show the machine, ``create_proof_demo`` for the one-click demo. ``train_jobs.views``
computes what the page draws.
"""

from train_jobs.demo import create_proof_demo
from train_jobs.experiments import (
    DEFAULT_SEEDS, ExperimentError, ExperimentRequest, create_experiment, create_proof_experiment, delete_experiment,
    experiment_runs, list_experiments,
)
from train_jobs.gpus import GpuInventory, discover_gpus
from train_jobs.locks import request_poll
from train_jobs.poller import Poller, PollerStatus, alive_poller
from train_jobs.reconcile import CancelResult, PollReport, cancel_run, default_launchers, poll
from train_jobs.results import import_results, results_row
from train_jobs.resume import can_resume, resume_run
from train_jobs.runfiles import log_tail
from train_jobs.settings import JobSettings, SlurmSettings
from train_jobs.states import ACTIVE, FINAL

__all__ = [
    "ACTIVE", "DEFAULT_SEEDS", "FINAL", "CancelResult", "ExperimentError", "ExperimentRequest", "GpuInventory",
    "JobSettings", "PollReport", "Poller", "PollerStatus", "SlurmSettings", "alive_poller", "can_resume",
    "cancel_run", "create_experiment", "create_proof_demo", "create_proof_experiment", "default_launchers",
    "delete_experiment", "discover_gpus", "experiment_runs", "import_results", "list_experiments", "log_tail", "poll",
    "request_poll", "results_row", "resume_run",
]
