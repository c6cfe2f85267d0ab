"""Setting a run up: check the config, load the model, build the data, optimiser and schedule, and write the
run's record (``config.json``: the config, the resolved precision and devices, what the run trains on and
the rules that chose it, and the counterfactuals' recipe)."""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, SequentialSampler

from cftclip_core.counterfactuals import TokenWindow
from cftclip_core.distributed import Ranks, device_for, init_process_group, ranks_from_environment
from cftclip_core.errors import ConfigError, DataError
from cftclip_core.evaluation import write_json
from cftclip_core.formats import Table
from cftclip_core.heartbeat import Heartbeat
from cftclip_core.images import PixelCache
from cftclip_core.instance import instance_dir
from cftclip_core.loss import ContrastiveLoss, build_loss
from cftclip_core.models import LoadedModel, load_model
from cftclip_core.scoring import resolve_precision
from cftclip_core.specs.training import TrainConfig
from cftclip_core.training.checkpoint import LAST_DIR, load_trainer_state
from cftclip_core.training.data import Collate, ContrastiveTrainingSet, counterfactual_recipe
from cftclip_core.training.freezing import FreezeReport, freeze, lr_factor
from cftclip_core.training.step import FeatureModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    best_dir: Path
    best_val_loss: float
    steps: int
    stopped_early: bool
    interrupted: bool = False  # stopped on request; ``last_dir`` holds a resumable checkpoint
    last_dir: Path | None = None
    data: dict[str, Any] = field(default_factory=dict)  # what trained: config.json's "data" (items, left out, cut)


@dataclass
class _RunState:
    step: int = 0
    best_loss: float = math.inf
    best_step: int = 0
    bad: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        return {"best_step": self.best_step, "best_val_loss": self.best_loss, "steps": self.step,
                "stopped_early": self.stopped_early, "history": self.history}


@dataclass
class Run:
    """Everything ``setup_run`` prepares and ``run_loop`` uses."""

    config: TrainConfig
    out: Path
    ranks: Ranks
    device: torch.device
    precision: str
    loaded: LoadedModel
    loss_fn: ContrastiveLoss
    val_loss_fn: ContrastiveLoss
    step_model: nn.Module
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: DistributedSampler
    train_loader: DataLoader
    val_loader: DataLoader
    total_steps: int
    beat: Heartbeat
    data: dict[str, Any]
    state: _RunState = field(default_factory=_RunState)
    start_epoch: int = 0
    skip_batches: int = 0
    resumed: bool = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup_run(
    config: TrainConfig,
    train_table: Table,
    val_table: Table,
    out_dir: str | Path,
    *,
    model: LoadedModel | None = None,
    resume: bool = False,
    ranks: Ranks | None = None,
    heartbeat: Heartbeat | None = None,
) -> Run:
    """Check the config, load the model, build the data, optimiser and schedule, and write ``config.json``
    (with what the run trains on: item counts and the rules, and the counterfactuals' recipe)."""
    config.validate()
    ranks = ranks or ranks_from_environment()
    if config.batch_size % ranks.world_size:
        raise ConfigError(f"batch_size={config.batch_size} is the global batch and must divide evenly "
                          f"over the {ranks.world_size} processes; use a multiple of {ranks.world_size}.")
    out = Path(out_dir)
    if ranks.is_main:
        out.mkdir(parents=True, exist_ok=True)
    saved = load_trainer_state(out, config) if resume else None
    seed_everything(config.seed)
    device = model.device if model is not None and config.device is None else device_for(ranks, config.device)
    init_process_group(ranks, device)
    if saved is not None:
        model = load_model(str(out / LAST_DIR), device=device)
    loaded = model or load_model(config.model, cache_dir=instance_dir() / "models", device=device)
    loaded.model.to(device)
    text_cfg, vision_cfg = loaded.model.config.text_config, loaded.model.config.vision_config
    config.validate(text_layers=text_cfg.num_hidden_layers, vision_layers=vision_cfg.num_hidden_layers)
    precision = resolve_precision(config.precision, device)
    loss_fn = build_loss(config.loss, temperature=config.temperature, rank=ranks.rank, world_size=ranks.world_size)
    val_loss_fn = build_loss(config.loss, temperature=config.temperature)  # each rank scores whole val batches
    report = freeze(loaded.model, config)
    loaded.model.logit_scale.requires_grad_(loss_fn.learns_scale)  # DDP refuses trainable parameters left unused
    checkpointing = config.gradient_checkpointing if config.gradient_checkpointing is not None else (
        device.type == "cuda")
    if checkpointing:
        loaded.model.activation_checkpointing_enable({"use_reentrant": False})

    cache = PixelCache(Path(config.pixel_cache_dir) if config.pixel_cache_dir else out / "pixel-cache",
                       loaded.preprocess)
    window = TokenWindow.of(loaded)

    def make_set(table: Table) -> ContrastiveTrainingSet:
        return ContrastiveTrainingSet(
            table, cache, text_field=config.text_field, needs_counterfactuals=loss_fn.uses_counterfactuals,
            per_text=config.counterfactuals_per_text, seed=config.seed, item_subset=config.item_subset,
            window=window, long_texts=config.long_texts)

    train_set, val_set = make_set(train_table), make_set(val_table)
    if len(train_set) < config.batch_size:
        raise DataError(
            f"The training set has {len(train_set)} usable items, fewer than batch_size={config.batch_size}; "
            f"lower batch_size or add data (left out: {_dropped_words(train_set)})."
        )
    collate = Collate(loaded)
    # The same sampler with one process or many: a seeded shuffle per epoch, split across ranks, so the
    # global batches (and a resumed run's order) are the same whatever the number of processes.
    sampler = DistributedSampler(train_set, num_replicas=ranks.world_size, rank=ranks.rank, shuffle=True,
                                 seed=config.seed, drop_last=True)
    train_loader = DataLoader(train_set, batch_size=config.batch_size // ranks.world_size, sampler=sampler,
                              drop_last=True, collate_fn=collate, num_workers=config.num_workers,
                              worker_init_fn=_ignore_sigterm)
    val_batches = list(BatchSampler(SequentialSampler(val_set), config.batch_size, drop_last=False))
    val_loader = DataLoader(val_set, batch_sampler=val_batches[ranks.rank::ranks.world_size], collate_fn=collate,
                            num_workers=config.num_workers, worker_init_fn=_ignore_sigterm)
    total_steps = len(train_loader) * config.max_epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)

    features = FeatureModel(loaded, loss_fn.uses_counterfactuals)
    step_model: nn.Module = features
    if ranks.distributed:
        step_model = DistributedDataParallel(features, device_ids=[device.index] if device.type == "cuda" else None)
    params = [p for p in loaded.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(config, s, total_steps))

    record = _run_record(config, precision, device, ranks, checkpointing, report, train_set, val_set, train_table)
    if ranks.is_main:
        write_json(out / "config.json", record)
    run = Run(config, out, ranks, device, precision, loaded, loss_fn, val_loss_fn, step_model, params, optimizer,
              scheduler, sampler, train_loader, val_loader, total_steps, heartbeat or Heartbeat(out, enabled=False),
              record["data"])
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        run.state = _RunState(**saved["run_state"])
        run.start_epoch, run.skip_batches, run.resumed = saved["epoch"], saved["batch_in_epoch"], True
        random.setstate(saved["python_rng"])
        np.random.set_state(saved["numpy_rng"])
        torch.set_rng_state(saved["torch_rng"])
        logger.info("Resuming at step %d (epoch %d, batch %d)", run.state.step, run.start_epoch, run.skip_batches)
    return run


def _run_record(config: TrainConfig, precision: str, device: torch.device, ranks: Ranks, checkpointing: bool,
                report: FreezeReport, train_set: ContrastiveTrainingSet, val_set: ContrastiveTrainingSet,
                train_table: Table) -> dict[str, Any]:
    return {
        **dataclasses.asdict(config), "resolved_precision": precision, "device": str(device),
        "processes": ranks.world_size, "launcher": ranks.launcher, "gradient_checkpointing": checkpointing,
        "process_group": dist.get_backend() if dist.is_available() and dist.is_initialized() else None,
        "trainable_parameters": report.trainable, "frozen_modules": list(report.frozen_modules),
        "train_items": len(train_set), "val_items": len(val_set),
        "skipped_without_counterfactual": train_set.report.dropped.get("no_counterfactual", 0)
        + val_set.report.dropped.get("no_counterfactual", 0),
        "data": {"train": train_set.report.to_json(), "val": val_set.report.to_json()},
        "counterfactuals": counterfactual_recipe(train_table),
        "early_stopping": "a tie with the best counts as improvement" if config.ties_improve
        else "strict improvement only",
    }


def _dropped_words(data: ContrastiveTrainingSet) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in data.report.dropped.items()) or "none"




def _ignore_sigterm(worker_id: int) -> None:
    """DataLoader workers leave SIGTERM to the main process, which stops cleanly after its step (a job is
    cancelled by signalling its whole process group)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
