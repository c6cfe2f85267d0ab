"""Fine-tuning CLIP with the paper's counterfactual loss (or a comparison loss), single process.

``train(config, train_table, val_table, out_dir)`` runs AdamW with the chosen schedule, validates every
``val_every_steps`` steps and at each epoch end, stops early on the mean validation loss, and keeps the
best model as a ``save_pretrained`` folder in ``out_dir/best`` (never the working directory: the
original code wrote ``checkpoint.pt`` there, so parallel runs overwrote each other).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, SequentialSampler
from transformers import CLIPImageProcessorPil, CLIPModel

from cftclip_core.counterfactuals import EntitySwapInfiller, KnownNamesTagger, generate_counterfactuals
from cftclip_core.distributed import Ranks, device_for, init_process_group, ranks_from_environment
from cftclip_core.errors import ConfigError, DataError, TrainingError
from cftclip_core.evaluation import write_json
from cftclip_core.heartbeat import Heartbeat
from cftclip_core.formats import Record, Table, check_text_field
from cftclip_core.images import PixelCache, load_image, normalize, sha256_file
from cftclip_core.loss import ContrastiveLoss, build_loss
from cftclip_core.instance import instance_dir
from cftclip_core.models import LoadedModel, load_model
from cftclip_core.scoring import resolve_precision
from cftclip_core.specs.training import SCHEDULES, TrainConfig  # noqa: F401 - re-exported: the trainer's config

logger = logging.getLogger(__name__)

SNAPSHOTS_DIR = "snapshots"  # models saved at TrainConfig.snapshot_steps (one run, several lengths)
LAST_DIR = "last"  # the resumable checkpoint written when a run is stopped (e.g. by SIGTERM)
TRAINER_STATE = "trainer_state.pt"  # inside LAST_DIR: optimiser, schedule, step, RNG states
RESUME_MAY_CHANGE = ("max_steps", "max_epochs", "device", "num_workers", "pixel_cache_dir", "gradient_checkpointing",
                     "snapshot_steps")
PERIODIC_T_MAX = 100  # the original code's CosineAnnealingLR(T_max=100), stepped every iteration


@dataclass(frozen=True)
class FreezeReport:
    trainable: int  # parameters (elements) that train
    frozen: int
    frozen_modules: tuple[str, ...]  # named submodules frozen


@dataclass(frozen=True)
class TrainResult:
    best_dir: Path
    best_val_loss: float
    steps: int
    stopped_early: bool
    interrupted: bool = False  # stopped on request; ``last_dir`` holds a resumable checkpoint
    last_dir: Path | None = None


# --- freezing ------------------------------------------------------------------------------------------
def freeze(model: CLIPModel, config: TrainConfig) -> FreezeReport:
    """Freeze the embeddings and the first k encoder layers of each tower, by module name.

    The original code froze by parameter index, which silently shifts when the architecture does;
    names do not. k = 0 freezes nothing in that tower.
    """
    names: list[str] = []
    for tower, k in (("text_model", config.freeze_text_layers), ("vision_model", config.freeze_vision_layers)):
        if k == 0:
            continue
        layers = getattr(model, tower).encoder.layers
        if k > len(layers):
            raise ConfigError(
                f"freeze_{tower.split('_')[0]}_layers={k} but the model's {tower} has only {len(layers)} layers; "
                f"use 0 to {len(layers)}."
            )
        names.append(f"{tower}.embeddings")
        if tower == "vision_model":
            names.append("vision_model.pre_layrnorm")  # applied right after the embeddings
        names.extend(f"{tower}.encoder.layers.{i}" for i in range(k))
    for p in model.parameters():
        p.requires_grad_(True)
    for name in names:
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    logger.info("Frozen %s: %d parameters train, %d frozen", ", ".join(names) or "nothing", trainable, frozen)
    return FreezeReport(trainable, frozen, tuple(names))


# --- schedule ------------------------------------------------------------------------------------------
def lr_factor(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning-rate multiplier for optimiser step ``step`` (0-based) of ``total_steps``."""
    if config.warmup_steps and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "periodic":  # CosineAnnealingLR's recurrence = this cosine, continued periodically
        return 0.5 * (1 + math.cos(math.pi * step / PERIODIC_T_MAX))
    span = max(1, total_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return 0.5 * (1 + math.cos(math.pi * progress))


# --- data ----------------------------------------------------------------------------------------------
Item = tuple[np.ndarray, str, tuple[str, ...]]


def table_counterfactuals(table: Table, per_text: int) -> list[tuple[str, ...]] | None:
    """Counterfactuals from the table's ``counterfactual`` (``counterfactual_2`` ...) columns, or None
    if it has none. An item whose counterfactuals are missing gets an empty tuple."""
    columns = ["counterfactual"] + [f"counterfactual_{k + 1}" for k in range(1, per_text)]
    if not table.records or "counterfactual" not in table.records[0].extra:
        return None
    result = []
    for r in table.records:
        texts = tuple(str(r.extra[c]) for c in columns if r.extra.get(c) not in (None, ""))
        result.append(texts if len(texts) == per_text else ())
    return result


def swap_counterfactuals(
    records: Sequence[Record], names: Sequence[str], *, text_field: str, per_text: int, seed: int
) -> list[tuple[str, ...]]:
    """Entity-swap counterfactuals over known names (the synthetic world's people)."""
    results = generate_counterfactuals(
        records, KnownNamesTagger(names), EntitySwapInfiller(names), text_field=text_field,
        per_text=per_text, max_tries=max(10, per_text), seed=seed,
    )
    return [r.counterfactuals for r in results]


def world_names(table: Table) -> list[str] | None:
    """The people of a synthetic dataset, if the table sits next to its ``world.json``."""
    from cftclip_core.synthetic import load_world

    if not (table.base_dir / "world.json").is_file():
        return None
    return load_world(table.base_dir).names


class ContrastiveTrainingSet(Dataset):
    """(uint8 crop, text, counterfactual texts) per item; crops come from the pixel cache.

    ``counterfactuals``: one tuple per record; None takes them from the table's columns or, for a
    synthetic dataset, swaps the world's names. Items without the needed counterfactuals are
    skipped (counted in ``skipped``) when ``needs_counterfactuals``.
    """

    def __init__(
        self,
        table: Table,
        pixel_cache: PixelCache,
        *,
        text_field: str = "summary",
        needs_counterfactuals: bool = True,
        per_text: int = 1,
        counterfactuals: Sequence[tuple[str, ...]] | None = None,
        seed: int = 0,
    ) -> None:
        check_text_field(text_field)
        records = table.records
        if needs_counterfactuals and counterfactuals is None:
            counterfactuals = table_counterfactuals(table, per_text)
            if counterfactuals is None:
                names = world_names(table)
                if names is None:
                    raise DataError(
                        f"The table {table.source or table.base_dir} has no 'counterfactual' column, and the loss "
                        "needs counterfactuals. Generate them first (python -m cftclip_core counterfactual "
                        "--data TABLE --out TABLE_CF) or choose a loss without them (clip or i2t)."
                    )
                counterfactuals = swap_counterfactuals(records, names, text_field=text_field, per_text=per_text,
                                                      seed=seed)
        if counterfactuals is not None and len(counterfactuals) != len(records):
            raise DataError(f"{len(counterfactuals)} counterfactual entries for {len(records)} records; give one each.")
        keep = [i for i in range(len(records))
                if not needs_counterfactuals or len(counterfactuals[i]) >= per_text]  # type: ignore[index]
        self.skipped = len(records) - len(keep)
        if self.skipped:
            logger.warning("%d of %d items have no counterfactual (no PERSON found?) and are skipped",
                        self.skipped, len(records))
        self.records = [records[i] for i in keep]
        self.counterfactuals = [tuple(counterfactuals[i][:per_text]) if needs_counterfactuals else ()  # type: ignore[index]
                                for i in keep]
        self.paths = [table.image_path(r) for r in self.records]
        self.hashes = [sha256_file(p) for p in self.paths]
        self.text_field = text_field
        self.cache = pixel_cache

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Item:
        path = self.paths[index]
        crop = self.cache.get_or_compute(self.hashes[index], lambda: load_image(path))
        return crop, self.records[index].text(self.text_field), self.counterfactuals[index]


@dataclass
class Batch:
    pixels: Tensor  # uint8, B x H x W x 3
    input_ids: Tensor
    attention_mask: Tensor
    cf_input_ids: Tensor | None  # (B*M) x L, counterfactuals of item i at rows i*M .. i*M+M-1
    cf_attention_mask: Tensor | None

    def __len__(self) -> int:
        return int(self.pixels.shape[0])


class Collate:
    """Stack crops and tokenise texts, truncated to the model's text window (a picklable callable)."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.tokenizer = loaded.tokenizer
        self.window = loaded.max_text_tokens

    def _tokens(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.window, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    def __call__(self, items: list[Item]) -> Batch:
        if not items:
            raise TrainingError("An empty batch reached the trainer; the training set has no usable items.")
        pixels = torch.from_numpy(np.stack([i[0] for i in items]))
        ids, mask = self._tokens([i[1] for i in items])
        cf_texts = [t for i in items for t in i[2]]
        cf_ids, cf_mask = self._tokens(cf_texts) if cf_texts else (None, None)
        return Batch(pixels, ids, mask, cf_ids, cf_mask)


# --- one step ------------------------------------------------------------------------------------------
def _autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class FeatureModel(nn.Module):
    """The three feature passes of a step as one module, so DDP can wrap it (DDP syncs gradients for
    work done inside its ``forward``)."""

    def __init__(self, loaded: LoadedModel, uses_counterfactuals: bool) -> None:
        super().__init__()
        self.model = loaded.model
        self.preprocess = loaded.preprocess
        self.uses_counterfactuals = uses_counterfactuals

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor | None]:
        device = self.model.logit_scale.device
        pixels = normalize(batch.pixels.to(device), self.preprocess)
        image = self.model.get_image_features(pixel_values=pixels).pooler_output
        text = self.model.get_text_features(input_ids=batch.input_ids.to(device),
                                            attention_mask=batch.attention_mask.to(device)).pooler_output
        cf = None
        if self.uses_counterfactuals and batch.cf_input_ids is not None:
            cf = self.model.get_text_features(input_ids=batch.cf_input_ids.to(device),
                                              attention_mask=batch.cf_attention_mask.to(device)).pooler_output
        return image, text, cf


def batch_loss(loaded: LoadedModel, loss_fn: ContrastiveLoss, batch: Batch, precision: str = "fp32") -> Tensor:
    """The loss of one batch under the model's current weights (gradients flow if enabled)."""
    with _autocast(precision, loaded.device):
        image, text, cf = FeatureModel(loaded, loss_fn.uses_counterfactuals)(batch)
        return loss_fn(image, text, cf, loaded.model.logit_scale if loss_fn.learns_scale else None)


def validation_loss(
    loaded: LoadedModel, loss_fn: ContrastiveLoss, loader: DataLoader, precision: str, ranks: Ranks | None = None
) -> float:
    """Mean loss per item over the validation set (batches weighted by their size). Under several
    processes each scores its share of the batches and the sums are added up across ranks."""
    was_training = loaded.model.training
    loaded.model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            if len(batch) < 2:  # a lone item has no negatives: its loss says nothing
                continue
            total += float(batch_loss(loaded, loss_fn, batch, precision)) * len(batch)
            count += len(batch)
    loaded.model.train(was_training)
    if ranks is not None and ranks.distributed:
        sums = torch.tensor([total, float(count)], dtype=torch.float64)
        dist.all_reduce(sums)
        total, count = float(sums[0]), int(sums[1])
    if count == 0:
        raise DataError("The validation set has fewer than 2 usable items; give it at least 2 (ideally hundreds).")
    return total / count


# --- saving --------------------------------------------------------------------------------------------
def save_model(loaded: LoadedModel, target: Path) -> Path:
    """Write model, tokenizer and preprocessing as a ``save_pretrained`` folder, atomically: a crash or a
    full disk leaves the previous folder in place, never a half-written one."""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.saving-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        loaded.model.save_pretrained(tmp)
        loaded.tokenizer.save_pretrained(tmp)
        cfg = loaded.preprocess
        CLIPImageProcessorPil(
            size={"shortest_edge": cfg.size}, do_center_crop=cfg.crop is not None,
            crop_size={"height": cfg.crop or cfg.size, "width": cfg.crop or cfg.size},
            image_mean=list(cfg.mean), image_std=list(cfg.std), resample=cfg.resample,
            rescale_factor=cfg.rescale_factor,
        ).save_pretrained(tmp)
        if loaded.is_tiny:
            (tmp / "cftclip_tiny.json").write_text(json.dumps({"note": "fine-tuned from the tiny model"}))
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# --- the loop ------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
    config.validate()
    ranks = ranks or ranks_from_environment()
    if config.batch_size % ranks.world_size:
        raise ConfigError(f"batch_size={config.batch_size} is the global batch and must divide evenly "
                          f"over the {ranks.world_size} processes; use a multiple of {ranks.world_size}.")
    out = Path(out_dir)
    beat = heartbeat or Heartbeat(out, enabled=False)
    if ranks.is_main:
        out.mkdir(parents=True, exist_ok=True)
    saved = _load_trainer_state(out, config) if resume else None
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
    make_set = _dataset_factory(config, cache, loss_fn.uses_counterfactuals)
    train_set, val_set = make_set(train_table), make_set(val_table)
    if len(train_set) < config.batch_size:
        raise DataError(
            f"The training set has {len(train_set)} usable items, fewer than batch_size={config.batch_size}; "
            "lower batch_size or add data."
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
    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * config.max_epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)

    features = FeatureModel(loaded, loss_fn.uses_counterfactuals)
    step_model: nn.Module = features
    if ranks.distributed:
        step_model = DistributedDataParallel(features, device_ids=[device.index] if device.type == "cuda" else None)
    params = [p for p in loaded.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(config, s, total_steps))

    if ranks.is_main:
        write_json(out / "config.json", {
            **dataclasses.asdict(config), "resolved_precision": precision, "device": str(device),
            "processes": ranks.world_size, "launcher": ranks.launcher, "gradient_checkpointing": checkpointing,
            "trainable_parameters": report.trainable, "frozen_modules": list(report.frozen_modules),
            "train_items": len(train_set), "val_items": len(val_set),
            "skipped_without_counterfactual": train_set.skipped + val_set.skipped})
    state = _RunState()
    start_epoch, skip_batches = 0, 0
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = _RunState(**saved["run_state"])
        start_epoch, skip_batches = saved["epoch"], saved["batch_in_epoch"]
        random.setstate(saved["python_rng"])
        np.random.set_state(saved["numpy_rng"])
        torch.set_rng_state(saved["torch_rng"])
        logger.info("Resuming at step %d (epoch %d, batch %d)", state.step, start_epoch, skip_batches)
    emit = log or (lambda record: None)
    beat.beat(phase="training", step=state.step, total_steps=total_steps)

    def step_loss(batch: Batch) -> Tensor:
        with _autocast(precision, device):
            image, text, cf = step_model(batch)
            return loss_fn(image, text, cf, loaded.model.logit_scale if loss_fn.learns_scale else None)

    def validate(step: int, epoch: int) -> bool:
        """Validate, keep the best model; True when patience has run out."""
        value = validation_loss(loaded, val_loss_fn, val_loader, precision, ranks)
        if not math.isfinite(value):
            raise TrainingError(f"The validation loss is {value} at step {step}; the best model so far is kept in "
                                f"{out / 'best'}. Lower lr or use precision='fp32'.")
        improved = value < state.best_loss
        if improved:
            state.best_loss, state.best_step, state.bad = value, step, 0
            if ranks.is_main:
                save_model(loaded, out / "best")
        else:
            state.bad += 1
        record = {"step": step, "epoch": epoch, "val_loss": value, "improved": improved}
        state.history.append(record)
        if ranks.is_main:
            emit(record)
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
            write_json(out / "metrics.json", state.metrics())
        logger.info("step %d: validation loss %.4f%s", step, value, " (best)" if improved else "")
        return state.bad >= config.patience

    def save_last(epoch: int, batch_in_epoch: int) -> Path:
        """The resumable checkpoint (rank 0 writes; every rank waits for it before going on)."""
        target = out / LAST_DIR
        if ranks.is_main:
            save_model(loaded, target)
            payload = {"config": dataclasses.asdict(config), "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(), "run_state": dataclasses.asdict(state), "epoch": epoch,
                       "batch_in_epoch": batch_in_epoch, "python_rng": random.getstate(),
                       "numpy_rng": np.random.get_state(), "torch_rng": torch.get_rng_state()}
            tmp = target / f".{TRAINER_STATE}.tmp"
            torch.save(payload, tmp)
            os.replace(tmp, target / TRAINER_STATE)
            write_json(out / "metrics.json", {**state.metrics(), "interrupted": True})
        _barrier(ranks)
        return target

    loaded.model.train()
    log_path = out / "log.jsonl" if ranks.is_main else Path(os.devnull)
    with log_path.open("a" if saved is not None else "w", encoding="utf-8") as log_file:
        for epoch in range(start_epoch, config.max_epochs):
            sampler.set_epoch(epoch)
            skip = skip_batches if epoch == start_epoch else 0
            batches = _timed(train_loader)
            for _ in range(skip):
                next(batches, None)  # the batches the interrupted run already trained on
            for batch_in_epoch, (batch, data_time) in enumerate(batches, start=1 + skip):
                started = time.perf_counter()
                loss = step_loss(batch)
                stop_now, bad_loss = _agree(ranks, stop is not None and stop(), not bool(torch.isfinite(loss)))
                if bad_loss:  # before backward: the weights are still the last good ones
                    last = save_last(epoch, batch_in_epoch - 1)
                    beat.beat(phase="failed")
                    raise TrainingError(
                        f"The training loss became {loss.item()} at step {state.step + 1}; training stopped. The "
                        f"best model so far is in {out / 'best'} and the weights before this step in {last}. "
                        "Lower lr, set grad_clip, or use precision='fp32', and start a new run."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                state.step += 1
                step_time = time.perf_counter() - started
                record = {"step": state.step, "epoch": epoch, "loss": _mean_over_ranks(ranks, loss), "lr": lr,
                          "data_time": data_time, "step_time": step_time, "total_steps": total_steps,
                          "samples_per_s": config.batch_size / max(step_time + data_time, 1e-9)}
                if ranks.is_main:
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                    emit(record)
                beat.beat(step=state.step, samples_per_s=record["samples_per_s"])
                if state.step in config.snapshot_steps and ranks.is_main:
                    save_model(loaded, out / SNAPSHOTS_DIR / f"step-{state.step}")
                if state.step % config.val_every_steps == 0 and validate(state.step, epoch):
                    state.stopped_early = True
                    break
                if config.max_steps is not None and state.step >= config.max_steps:
                    break
                if stop_now:
                    last = save_last(epoch, batch_in_epoch)
                    beat.beat(phase="stopped")
                    logger.info("Stopped on request after step %d; resumable checkpoint in %s", state.step, last)
                    return TrainResult(out / "best", state.best_loss, state.step, False, interrupted=True,
                                       last_dir=last)
            if state.stopped_early:
                break
            if not state.history or state.history[-1]["step"] != state.step:  # epoch end (or max_steps)
                if validate(state.step, epoch):
                    state.stopped_early = True
                    break
            if config.max_steps is not None and state.step >= config.max_steps:
                break
    if ranks.is_main:
        write_json(out / "metrics.json", state.metrics())
    _barrier(ranks)
    logger.info("Training stopped after %d steps (%s); best validation loss %.4f at step %d", state.step,
                "early stop" if state.stopped_early else "end of run", state.best_loss, state.best_step)
    return TrainResult(out / "best", state.best_loss, state.step, state.stopped_early)


def _ignore_sigterm(worker_id: int) -> None:
    """DataLoader workers leave SIGTERM to the main process, which stops cleanly after its step (a job is
    cancelled by signalling its whole process group)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


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


def _load_trainer_state(out: Path, config: TrainConfig) -> dict[str, Any]:
    """The state saved by an interrupted run, checked against ``config``."""
    path = out / LAST_DIR / TRAINER_STATE
    if not path.is_file():
        raise ConfigError(f"Cannot resume: {path} does not exist. Resume only a run that was stopped (SIGTERM) "
                          "in this folder, or start a new run without --resume.")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    changed = [name for name, value in saved["config"].items()
               if name not in RESUME_MAY_CHANGE and getattr(config, name, value) != value]
    if changed:
        raise ConfigError(f"Cannot resume with a changed config: {', '.join(changed)} differ from the stopped run's "
                          f"(see {out / 'config.json'}); resume with the same settings or start a new run.")
    return saved


def _dataset_factory(config: TrainConfig, cache: PixelCache, needs_cf: bool) -> Callable[[Table], ContrastiveTrainingSet]:
    def make(table: Table) -> ContrastiveTrainingSet:
        return ContrastiveTrainingSet(table, cache, text_field=config.text_field, needs_counterfactuals=needs_cf,
                                      per_text=config.counterfactuals_per_text, seed=config.seed)
    return make


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
