"""Command line for training jobs: ``python -m train_jobs {poll,list,cancel,resume,gpus}``.

``poll --watch 10`` keeps the queue moving and the runs reconciled while nobody has the app open
(e.g. as a systemd service next to Streamlit). Instance folder, database and job settings come from
the environment, as for the app (``CFTCLIP_INSTANCE``, ``CFTCLIP_DATABASE_URL``, ``CFTCLIP_JOBS_PER_GPU``,
``CFTCLIP_SLURM_*``: see docs/slurm.md). User errors: one message on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from annotations.db import database_id, make_engine, session_factory, upgrade
from annotations.settings import Settings
from cftclip_core.errors import CftClipError
from train_jobs.experiments import experiment_runs, list_experiments
from train_jobs.gpus import discover_gpus
from train_jobs.reconcile import cancel_run, default_launchers, poll
from train_jobs.resume import resume_run
from train_jobs.settings import JobSettings

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train_jobs", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True)
    watch = sub.add_parser("poll", help="reconcile the runs and launch queued ones")
    watch.add_argument("--watch", type=float, default=0, metavar="SECONDS", help="repeat every SECONDS until stopped")
    sub.add_parser("list", help="experiments and their runs")
    cancel = sub.add_parser("cancel", help="cancel a run (SIGTERM; it keeps a resumable checkpoint)")
    cancel.add_argument("run_id", type=database_id)
    resume = sub.add_parser("resume", help="queue a failed or cancelled run again, from its last checkpoint")
    resume.add_argument("run_id", type=database_id)
    sub.add_parser("gpus", help="the GPUs of this machine")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s | %(levelname)s | %(name)s | %(message)s")
    try:
        if args.command == "gpus":
            print(discover_gpus().note)
            return 0
        settings = Settings.from_env().ensure()
        upgrade(settings.database_url)
        engine = make_engine(settings.database_url)
        try:
            return _run(args, settings, session_factory(engine), JobSettings.from_env())
        finally:
            engine.dispose()
    except CftClipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


def _run(args: argparse.Namespace, settings: Settings, factory, job_settings: JobSettings) -> int:  # noqa: ANN001
    if args.command == "poll":
        while True:
            report = poll(factory, settings, job_settings)
            for line in report.changes:
                print(line, flush=True)
            for run_id in report.schedule.launched:
                print(f"run {run_id}: launched", flush=True)
            for run_id, why in report.schedule.failed.items():
                print(f"run {run_id}: failed to start: {why}", flush=True)
            if args.watch <= 0:
                return 0
            time.sleep(args.watch)
    if args.command == "cancel":
        print(cancel_run(factory, args.run_id, None, default_launchers(job_settings)).message)
        return 0
    if args.command == "resume":
        print(resume_run(factory, args.run_id, None))
        return 0
    with factory() as session:  # list
        for experiment in list_experiments(session):
            print(f"experiment {experiment.id} {experiment.name} ({experiment.kind}, {experiment.backend}, "
                  f"{experiment.gpus_per_run} GPU(s) per run) in {experiment.folder}")
            for run in experiment_runs(session, experiment.id):
                progress = f" step {run.step}/{run.total_steps}" if run.step is not None else ""
                print(f"  run {run.id} seed {run.seed}: {run.state}{progress}{' - ' + run.reason if run.reason else ''}")
    return 0
