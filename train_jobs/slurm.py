"""The Slurm launcher: writes ``RUN_DIR/job.sbatch``, submits it with ``sbatch --parsable``, follows
the job with ``squeue``, then ``scontrol`` (recently ended jobs) and ``sacct`` (where accounting
exists), and cancels with ``scancel``. How to point it at a real cluster: docs/slurm.md.

The batch script runs ``train_jobs.wrap`` around ``srun`` (one task per GPU; the trainer reads its
rank from SLURM_* variables), so the exit status lands in ``RUN_DIR/exit.json``: the run folder must
be on a filesystem the compute nodes share with the studio.
"""

from __future__ import annotations

import logging
import shlex
import subprocess

from annotations.models import TrainRun
from cftclip_core.errors import CftClipError
from train_jobs import states
from train_jobs.commands import split_command
from train_jobs.launchers import PROJECT_ROOT, BackendStatus, Launched, LaunchSpec, job_environment
from train_jobs.runfiles import SBATCH_SCRIPT
from train_jobs.settings import SlurmSettings

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_S = 30
NO_SUCH_JOB = ("Invalid job id", "accounting storage is disabled")  # answers that mean "no record of it"
PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED",
           "STOPPED", "RESIZING"}
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}
# Slurm's final job states -> (run state, why), for jobs that ended without writing exit.json.
FINAL: dict[str, tuple[str, str]] = {
    "COMPLETED": (states.SUCCEEDED, ""),
    "CANCELLED": (states.CANCELLED, "cancelled in Slurm (scancel)"),
    "FAILED": (states.FAILED, "Slurm reports the job failed"),
    "TIMEOUT": (states.FAILED, "stopped at its Slurm time limit (raise CFTCLIP_SLURM_TIME)"),
    "PREEMPTED": (states.FAILED, "preempted by Slurm for a higher-priority job; Resume continues it from its last "
                                 "checkpoint"),
    "NODE_FAIL": (states.LOST, "its Slurm node failed"),
    "BOOT_FAIL": (states.FAILED, "its Slurm node failed to boot"),
    "OUT_OF_MEMORY": (states.FAILED, "ran out of memory on the node (raise CFTCLIP_SLURM_MEM_PER_GPU)"),
    "DEADLINE": (states.FAILED, "missed its Slurm deadline"),
    "REVOKED": (states.FAILED, "revoked by Slurm (federation)"),
}


class SlurmError(CftClipError):
    """A Slurm command failed (not installed, cluster unreachable, submission refused)."""


class SlurmLauncher:
    name = "slurm"

    def __init__(self, settings: SlurmSettings) -> None:
        self.settings = settings

    def script(self, spec: LaunchSpec) -> str:
        s = self.settings
        options = [f"--job-name=cftclip-run-{spec.run_id}", f"--output={spec.log_path}", "--open-mode=append",
                   f"--chdir={PROJECT_ROOT}", f"--ntasks={max(1, spec.n_gpus)}"]
        if spec.n_gpus:
            options.append(f"--gpus-per-task={s.gpu_type + ':' if s.gpu_type else ''}1")
            if s.mem_per_gpu:
                options.append(f"--mem-per-gpu={s.mem_per_gpu}")
        for flag, value in (("partition", s.partition), ("account", s.account), ("qos", s.qos),
                            ("time", s.time_limit), ("cpus-per-task", s.cpus_per_task or "")):
            if value:
                options.append(f"--{flag}={value}")
        options += list(s.extra)
        module, args = split_command(spec.command)
        exports = job_environment(spec.env, None)
        lines = ["#!/bin/bash", *(f"#SBATCH {option}" for option in options),
                 "# Written by the CFT-CLIP Studio (train_jobs.slurm); runs one seed of an experiment."]
        lines += [f"module load {shlex.quote(m)}" for m in s.modules]
        lines += list(s.setup)
        passed = [name for name in ("PYTHONPATH",) if name in exports]  # only when the studio itself runs with one
        lines += [f"export {name}={shlex.quote(exports[name])}"
                  for name in (*passed, "PYTHONUNBUFFERED", *sorted(spec.env))]
        job = ["srun", "--kill-on-bad-exit=1", s.python, "-m", module, *args]
        lines.append(shlex.join(["exec", s.python, "-m", "train_jobs.wrap", str(spec.run_dir), "--", *job]))
        return "\n".join(lines) + "\n"

    def launch(self, spec: LaunchSpec) -> Launched:
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        path = spec.run_dir / SBATCH_SCRIPT
        path.write_text(self.script(spec), encoding="utf-8")
        out = _run(["sbatch", "--parsable", str(path)], "submit the job")
        job_id = out.strip().split(";")[0]  # "ID" or "ID;CLUSTER"
        if not job_id.isdigit():
            raise SlurmError(f"sbatch answered {out.strip()!r} instead of a job id; check {path} and the cluster.")
        log.info("Run %d submitted to Slurm as job %s", spec.run_id, job_id)
        return Launched(["sbatch", "--parsable", str(path)], slurm_job_id=job_id)

    def status(self, run: TrainRun) -> BackendStatus:
        job = run.slurm_job_id
        if job is None:
            return BackendStatus(alive=None)
        squeue = _query(["squeue", "-h", "-j", job, "-o", "%T|%N|%r"])
        if squeue is None:
            return BackendStatus(alive=None, reason="Slurm does not answer (squeue failed)")
        if squeue:
            state, node, why = (squeue.splitlines()[0].split("|") + ["", ""])[:3]
            return _live(state, node or None, why)
        record = _scontrol(job) or _sacct(job)
        if record is None:
            return BackendStatus(alive=False, reason=f"Slurm no longer knows job {job} (it ended long ago, and there "
                                                     "is no accounting to ask)")
        state, exit_code, node = record
        if state in PENDING or state in RUNNING:
            return _live(state, node, "")
        run_state, why = FINAL.get(state, (states.FAILED, f"Slurm state {state}"))
        return BackendStatus(alive=False, final_state=run_state, exit_code=exit_code, reason=why, host=node)

    def stop(self, run: TrainRun) -> bool:
        """``scancel``: Slurm sends SIGTERM to every process of the job, and SIGKILL after its KillWait."""
        if run.slurm_job_id is None:
            return False
        _run(["scancel", run.slurm_job_id], "cancel the job")
        return True

    def kill(self, run: TrainRun) -> bool:
        if run.slurm_job_id is None:
            return False
        _run(["scancel", "--signal=KILL", "--full", run.slurm_job_id], "kill the job")
        return True


def _live(state: str, node: str | None, why: str) -> BackendStatus:
    if state in PENDING:
        why = why or "no reason given"
        return BackendStatus(alive=True, pending=True, reason=f"waiting in Slurm ({state.lower()}: {why})")
    return BackendStatus(alive=True, host=node)


def _scontrol(job: str) -> tuple[str, int | None, str | None] | None:
    out = _query(["scontrol", "show", "job", "-o", job])
    if not out:
        return None
    fields = dict(part.split("=", 1) for part in out.split() if "=" in part)
    return fields.get("JobState", ""), _exit_code(fields.get("ExitCode", "")), _node(fields.get("NodeList"))


def _sacct(job: str) -> tuple[str, int | None, str | None] | None:
    out = _query(["sacct", "-j", job, "-X", "-n", "-P", "-o", "State,ExitCode,NodeList"])
    if not out:
        return None
    state, exit_code, node = (out.splitlines()[0].split("|") + ["", ""])[:3]
    return state.split()[0] if state else "", _exit_code(exit_code), _node(node)


def _exit_code(text: str) -> int | None:
    """Slurm's ``CODE:SIGNAL`` as one status (128 + SIGNAL when a signal ended it)."""
    code, _, sig = text.partition(":")
    if not code.isdigit():
        return None
    return 128 + int(sig) if sig.isdigit() and int(sig) else int(code)


def _node(text: str | None) -> str | None:
    return text if text and text not in ("(null)", "None assigned") else None


def _run(argv: list[str], what: str) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except FileNotFoundError:
        raise SlurmError(f"Cannot {what}: '{argv[0]}' is not installed here. Run the studio on a Slurm login node, "
                         "or choose the local backend.") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"Cannot {what}: '{argv[0]}' did not answer within {COMMAND_TIMEOUT_S} s; is slurmctld "
                         "reachable? Try again later.") from None
    if done.returncode != 0:
        raise SlurmError(f"Cannot {what}: {shlex.join(argv)} failed: {(done.stderr or done.stdout).strip()[:500]}")
    return done.stdout


def _query(argv: list[str]) -> str | None:
    """A query's output; '' when Slurm does not know the job (or keeps no accounting); None when the
    command failed in a way that says nothing about the job (missing, controller unreachable)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("%s failed: %s", argv[0], exc)
        return None
    if done.returncode == 0:
        return done.stdout.strip()
    if any(text in done.stderr for text in NO_SUCH_JOB):
        return ""
    log.warning("%s failed: %s", shlex.join(argv), done.stderr.strip()[:300])
    return None
