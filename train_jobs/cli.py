"""Command line for training and scoring jobs: ``python -m train_jobs {poll,list,cancel,resume,gpus}``.

``poll --watch 10`` is the instance's poller on a headless server (e.g. a systemd service): it keeps the
queue moving while no app runs, and waits quietly while the app's own poller holds the instance
(``train_jobs.poller``), taking over when the app stops. ``list`` settles the runs before listing them. Instance folder, database and job settings come from
the environment, as for the app (``CFTCLIP_INSTANCE``, ``CFTCLIP_DATABASE_URL``, ``CFTCLIP_JOBS_PER_GPU``,
``CFTCLIP_SLURM_*``: see docs/slurm.md). User errors: one message on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from annotations.db import database_id, make_engine, session_factory, upgrade
from annotations.settings import Settings
from cftclip_core.errors import CftClipError
from train_jobs.experiments import experiment_runs, list_experiments
from train_jobs.gpus import discover_gpus
from train_jobs.poller import Poller, PollerStatus, alive_poller
from train_jobs.reconcile import PollReport, cancel_run, default_launchers, poll, refresh
from train_jobs.resume import resume_run
from train_jobs.settings import JobSettings

EXIT_USER_ERROR = 2
NO_EXPERIMENTS = ("No experiments yet. Create one in the app (streamlit run app.py): the Train page queues training "
                  "runs, the Articles page scoring jobs. Runs of `python -m cftclip_core train` are not queued and "
                  "do not show here.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train_jobs",
        description="Run and inspect the instance's queue of training and scoring jobs: poll it, list the "
                    "experiments, cancel or resume a run, list the GPUs.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True)
    watch = sub.add_parser("poll", help="reconcile the runs and launch queued ones")
    watch.add_argument("--watch", type=float, default=0, metavar="SECONDS",
                       help="be the instance's poller: poll every SECONDS until stopped (Ctrl-C)")
    sub.add_parser("list", help="experiments and their runs (settled first), and who polls the queue")
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
        if args.watch <= 0:
            _print_report(poll(factory, settings, job_settings))
            return 0
        poller = Poller(settings, owner="the command line", interval_s=args.watch, job_settings=job_settings,
                        factory=factory, on_report=_print_report, on_waiting=_print_waiting)
        try:
            poller.run()
        except KeyboardInterrupt:
            pass
        return 0
    if args.command == "cancel":
        print(cancel_run(factory, args.run_id, None, default_launchers(job_settings)).message)
        return 0
    if args.command == "resume":
        print(resume_run(factory, args.run_id, None))
        return 0
    refresh(factory, settings, job_settings)  # list: what ended meanwhile is settled first
    with factory() as session:
        experiments = list_experiments(session)
        if not experiments:
            print(NO_EXPERIMENTS)
        for experiment in experiments:
            print(f"experiment {experiment.id} {experiment.name} ({experiment.kind}, {experiment.backend}, "
                  f"{experiment.gpus_per_run} GPU(s) per run) in {experiment.folder}")
            for run in experiment_runs(session, experiment.id):
                progress = f" step {run.step}/{run.total_steps}" if run.step is not None else ""
                print(f"  run {run.id} seed {run.seed}: {run.state}{progress}{' - ' + run.reason if run.reason else ''}")
    poller = alive_poller(settings)
    print(f"queue polled by {poller.describe()}" if poller else "no poller is running for this instance: queued "
          "runs wait. Start the app, or run `python -m train_jobs poll --watch 15`.")
    return 0


def _print_report(report: PollReport) -> None:
    for line in report.changes:
        print(line, flush=True)
    for run_id in report.schedule.launched:
        print(f"run {run_id}: launched", flush=True)
    for run_id, why in report.schedule.failed.items():
        print(f"run {run_id}: failed to start: {why}", flush=True)


def _print_waiting(holder: PollerStatus | None) -> None:
    who = holder.describe() if holder else "another process"
    print(f"the queue is polled by {who}; waiting to take over when it stops", flush=True)
