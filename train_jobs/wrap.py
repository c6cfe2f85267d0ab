"""Run a job and record how it ended: ``python -m train_jobs.wrap RUN_DIR -- COMMAND...``.

Every launcher starts jobs through this wrapper, so a job that ends while the app is down still
leaves its exit status in ``RUN_DIR/exit.json`` for the reconciler. The wrapper survives SIGTERM
(a cancel reaches the whole process group, or the whole Slurm job, so the job got it too) and waits
for the job's clean stop; SIGKILL ends it with the job, and then no exit file is written (the
reconciler reports such a run as lost, or as cancelled when a cancel was asked for).
Exit status: the job's, 128 + N if it died of signal N, 127 if it could not be started.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from train_jobs.runfiles import write_exit

EXIT_NOT_STARTED = 127


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m train_jobs.wrap RUN_DIR -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    run_dir, command = Path(args[0]), args[2:]
    terminated = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal terminated
        terminated = True  # the job received it too; wait for its clean stop

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        child = subprocess.Popen(command)
    except OSError as exc:
        print(f"error: cannot start {command[0]!r}: {exc}", file=sys.stderr, flush=True)
        code = EXIT_NOT_STARTED
    else:
        status = child.wait()
        code = 128 - status if status < 0 else status
    try:
        write_exit(run_dir, code, cancel_seen=terminated)
    except OSError as exc:  # e.g. a full disk: the reconciler will report the run as lost
        print(f"error: cannot record the exit status {code} in {run_dir}: {exc}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
