"""``train()``: set a run up (``setup_run``), then loop (``run_loop``) over the batches until the run ends.

``train(config, train_table, val_table, out_dir)`` runs AdamW with the chosen schedule, validates every
``val_every_steps`` steps and at each epoch end, stops early on the mean validation loss, and keeps the
best model as a ``save_pretrained`` folder in ``out_dir/best`` (never the working directory: the
original code wrote ``checkpoint.pt`` there, so parallel runs overwrote each other).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader

from cftclip_core.distributed import Ranks
from cftclip_core.errors import TrainingError
from cftclip_core.evaluation import write_json
from cftclip_core.formats import Table
from cftclip_core.heartbeat import Heartbeat
from cftclip_core.models import LoadedModel
from cftclip_core.specs.training import TrainConfig
from cftclip_core.training.checkpoint import LAST_DIR, SNAPSHOTS_DIR, save_model, save_trainer_state
from cftclip_core.training.data import Batch
from cftclip_core.training.setup import Run, TrainResult, setup_run
from cftclip_core.training.step import autocast, validation_loss

logger = logging.getLogger(__name__)


def train(
    config: TrainConfig,
    train_table: Table,
    val_table: Table,
    out_dir: str | Path,
    *,
    model: LoadedModel | None = None,
    log: Callable[[dict[str, Any]], None] | None = None,
    stop: Callable[[], bool] | None = None,
    resume: bool = False,
    ranks: Ranks | None = None,
    heartbeat: Heartbeat | None = None,
) -> TrainResult:
    """Fine-tune and keep the best model (lowest mean validation loss) in ``out_dir/best``.

    ``log`` receives each per-step record (also written to ``out_dir/log.jsonl``) and each validation.
    ``model`` is trained in place; without it ``config.model`` is loaded.
    ``stop`` is asked after every step; when it says True the run saves ``out_dir/last`` (model, optimiser,
    schedule, step and RNG states), writes its metrics and returns with ``interrupted=True``.
    ``resume=True`` continues from ``out_dir/last`` at the saved step (only the fields in
    ``RESUME_MAY_CHANGE`` may differ from the interrupted run's config).
    ``ranks``: this process's place in a multi-process run (default: from torchrun's or Slurm's
    environment). ``config.batch_size`` is the global batch, split evenly over the processes; only
    rank 0 writes files.
    """
    run = setup_run(config, train_table, val_table, out_dir, model=model, resume=resume, ranks=ranks,
                heartbeat=heartbeat)
    return run_loop(run, log=log, stop=stop)


# --- the loop ------------------------------------------------------------------------------------------
def run_loop(run: Run, *, log: Callable[[dict[str, Any]], None] | None = None,
         stop: Callable[[], bool] | None = None) -> TrainResult:
    """Train from ``run``'s state to the end: max_epochs, max_steps, early stopping, or a stop request."""
    config, out, ranks, state = run.config, run.out, run.ranks, run.state
    emit = log or (lambda record: None)
    run.beat.beat(phase="training", step=state.step, total_steps=run.total_steps)
    run.loaded.model.train()
    log_path = out / "log.jsonl" if ranks.is_main else Path(os.devnull)
    with log_path.open("a" if run.resumed else "w", encoding="utf-8") as log_file:
        for epoch in range(run.start_epoch, config.max_epochs):
            run.sampler.set_epoch(epoch)
            skip = run.skip_batches if epoch == run.start_epoch else 0
            batches = _timed(run.train_loader)
            for _ in range(skip):
                next(batches, None)  # the batches the interrupted run already trained on
            for batch_in_epoch, (batch, data_time) in enumerate(batches, start=1 + skip):
                started = time.perf_counter()
                loss = _step_loss(run, batch)
                stop_now, bad_loss = _agree(ranks, stop is not None and stop(), not bool(torch.isfinite(loss)))
                if bad_loss:  # before backward: the weights are still the last good ones
                    last = _save_last(run, epoch, batch_in_epoch - 1)
                    run.beat.beat(phase="failed")
                    raise TrainingError(
                        f"The training loss became {loss.item()} at step {state.step + 1}; training stopped. The "
                        f"best model so far is in {out / 'best'} and the weights before this step in {last}. "
                        "Lower lr, set grad_clip, or use precision='fp32', and start a new run."
                    )
                lr = _update(run, loss)
                step_time = time.perf_counter() - started
                record = {"step": state.step, "epoch": epoch, "loss": _mean_over_ranks(ranks, loss), "lr": lr,
                          "data_time": data_time, "step_time": step_time, "total_steps": run.total_steps,
                          "samples_per_s": config.batch_size / max(step_time + data_time, 1e-9)}
                _write(ranks, log_file, record, emit)
                run.beat.beat(step=state.step, samples_per_s=record["samples_per_s"])
                if state.step in config.snapshot_steps and ranks.is_main:
                    save_model(run.loaded, out / SNAPSHOTS_DIR / f"step-{state.step}")
                if state.step % config.val_every_steps == 0 and _validate(run, epoch, log_file, emit):
                    state.stopped_early = True
                    break
                if config.max_steps is not None and state.step >= config.max_steps:
                    break
                if stop_now:
                    last = _save_last(run, epoch, batch_in_epoch)
                    run.beat.beat(phase="stopped")
                    logger.info("Stopped on request after step %d; resumable checkpoint in %s", state.step, last)
                    return TrainResult(out / "best", state.best_loss, state.step, False, interrupted=True,
                                       last_dir=last, data=run.data)
            if state.stopped_early:
                break
            if not state.history or state.history[-1]["step"] != state.step:  # epoch end (or max_steps)
                if _validate(run, epoch, log_file, emit):
                    state.stopped_early = True
                    break
            if config.max_steps is not None and state.step >= config.max_steps:
                break
    if ranks.is_main:
        write_json(out / "metrics.json", state.metrics())
    _barrier(ranks)
    logger.info("Training stopped after %d steps (%s); best validation loss %.4f at step %d", state.step,
                "early stop" if state.stopped_early else "end of run", state.best_loss, state.best_step)
    return TrainResult(out / "best", state.best_loss, state.step, state.stopped_early, data=run.data)


def _step_loss(run: Run, batch: Batch) -> Tensor:
    with autocast(run.precision, run.device):
        image, text, cf = run.step_model(batch)
        return run.loss_fn(image, text, cf, run.loaded.model.logit_scale if run.loss_fn.learns_scale else None)


def _update(run: Run, loss: Tensor) -> float:
    """Backward and one optimiser step; the learning rate the step used."""
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if run.config.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(run.params, run.config.grad_clip)
    lr = run.optimizer.param_groups[0]["lr"]
    run.optimizer.step()
    run.scheduler.step()
    run.state.step += 1
    return lr


def _validate(run: Run, epoch: int, log_file: IO[str], emit: Callable[[dict[str, Any]], None]) -> bool:
    """Validate, keep the best model; True when patience has run out. A tie with the best counts as an
    improvement only with ``ties_improve`` (the original code's EarlyStopping)."""
    state, step = run.state, run.state.step
    value = validation_loss(run.loaded, run.val_loss_fn, run.val_loader, run.precision, run.ranks)
    if not math.isfinite(value):
        raise TrainingError(f"The validation loss is {value} at step {step}; the best model so far is kept in "
                            f"{run.out / 'best'}. Lower lr or use precision='fp32'.")
    improved = value < state.best_loss or (run.config.ties_improve and value == state.best_loss)
    if improved:
        state.best_loss, state.best_step, state.bad = value, step, 0
        if run.ranks.is_main:
            save_model(run.loaded, run.out / "best")
    else:
        state.bad += 1
    record = {"step": step, "epoch": epoch, "val_loss": value, "improved": improved}
    state.history.append(record)
    _write(run.ranks, log_file, record, emit)
    if run.ranks.is_main:
        write_json(run.out / "metrics.json", state.metrics())
    logger.info("step %d: validation loss %.4f%s", step, value, " (best)" if improved else "")
    return state.bad >= run.config.patience


def _write(ranks: Ranks, log_file: IO[str], record: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> None:
    if ranks.is_main:
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()
        emit(record)


def _save_last(run: Run, epoch: int, batch_in_epoch: int) -> Path:
    """The resumable checkpoint (rank 0 writes; every rank waits for it before going on)."""
    target = run.out / LAST_DIR
    if run.ranks.is_main:
        save_model(run.loaded, target)
        save_trainer_state(target, {
            "config": dataclasses.asdict(run.config), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "run_state": dataclasses.asdict(run.state), "epoch": epoch,
            "batch_in_epoch": batch_in_epoch, "python_rng": random.getstate(), "numpy_rng": np.random.get_state(),
            "torch_rng": torch.get_rng_state()})
        write_json(run.out / "metrics.json", {**run.state.metrics(), "interrupted": True})
    _barrier(run.ranks)
    return target


def _agree(ranks: Ranks, *flags: bool) -> tuple[bool, ...]:
    """Each flag, true on every rank if true on any: all ranks must stop at the same step."""
    if not ranks.distributed:
        return flags
    values = torch.tensor([float(f) for f in flags])
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in values)


def _mean_over_ranks(ranks: Ranks, loss: Tensor) -> float:
    """The global batch's loss: the mean of the ranks' local losses (see cftclip_core.loss)."""
    value = loss.detach().float().reshape(1)
    if ranks.distributed:
        dist.all_reduce(value)
        value /= ranks.world_size
    return float(value)


def _barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        dist.barrier()


def _timed(loader: DataLoader) -> Iterator[tuple[Batch, float]]:
    """Each batch with the seconds spent waiting for it."""
    iterator = iter(loader)
    while True:
        started = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            return
        yield batch, time.perf_counter() - started
