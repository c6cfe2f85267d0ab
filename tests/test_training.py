"""Trainer: config checks, freezing by name, schedules, a short real run, early stopping, determinism."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import CLIPConfig, CLIPModel

from cftclip_core import training
from cftclip_core.errors import ConfigError
from cftclip_core.formats import Table, read_table
from cftclip_core.images import PixelCache
from cftclip_core.loss import build_loss
from cftclip_core.models import load_model
from cftclip_core.synthetic import WorldConfig, generate_dataset
from cftclip_core.training import (
    Collate,
    ContrastiveTrainingSet,
    TrainConfig,
    batch_loss,
    freeze,
    lr_factor,
    train,
)


@pytest.fixture(scope="module")
def synthetic_tables(tmp_path_factory: pytest.TempPathFactory) -> tuple[Table, Table]:
    csv = generate_dataset(tmp_path_factory.mktemp("syn") / "data", 64, WorldConfig(image_size=64), seed=0)
    table = read_table(csv)
    train_records = [r for r in table.records if r.split == "train"]
    val_records = [r for r in table.records if r.split != "train"]
    return (Table(train_records, table.base_dir, table.source), Table(val_records, table.base_dir, table.source))


def small_config(model_dir: Path, **changes: object) -> TrainConfig:
    base = dict(model=str(model_dir), batch_size=8, max_steps=8, val_every_steps=4, freeze_text_layers=1,
                precision="fp32", device="cpu", lr=1e-3)
    base.update(changes)
    return TrainConfig(**base)  # type: ignore[arg-type]


# --- config ----------------------------------------------------------------------------------------
def test_defaults_are_the_papers() -> None:
    c = TrainConfig()
    assert (c.model, c.loss, c.temperature, c.lr, c.batch_size, c.max_epochs) == (
        "openai/clip-vit-large-patch14", "cft", 0.05, 1e-4, 128, 20)
    assert (c.patience, c.freeze_text_layers, c.freeze_vision_layers, c.val_every_steps) == (5, 11, 0, 160)
    c.validate(text_layers=12, vision_layers=24)


@pytest.mark.parametrize(
    ("changes", "field_name"),
    [
        ({"lr": 0.0}, "lr"),
        ({"batch_size": 1}, "batch_size"),
        ({"patience": 0}, "patience"),
        ({"loss": "triplet"}, "loss"),
        ({"schedule": "linear"}, "schedule"),
        ({"precision": "fp16"}, "precision"),
        ({"text_field": "body"}, "text_field"),
        ({"freeze_text_layers": 13}, "freeze_text_layers"),
        ({"freeze_vision_layers": -1}, "freeze_vision_layers"),
    ],
)
def test_validate_names_the_bad_field(changes: dict, field_name: str) -> None:
    config = TrainConfig(**changes)
    with pytest.raises(ConfigError, match=rf"(?<!\.){field_name}="):
        config.validate(text_layers=12, vision_layers=24)


def test_freeze_count_beyond_the_model_is_refused_by_train(tiny_model_dir: Path, synthetic_tables, tmp_path: Path) -> None:
    config = small_config(tiny_model_dir, freeze_text_layers=11)  # the tiny model has 2 text layers
    with pytest.raises(ConfigError, match="only 2 layers"):
        train(config, *synthetic_tables, tmp_path / "run")


# --- freezing --------------------------------------------------------------------------------------
def test_freeze_by_name_leaves_last_text_layer_projection_and_vision_training() -> None:
    config = CLIPConfig(
        text_config=dict(vocab_size=100, hidden_size=16, intermediate_size=32, num_hidden_layers=12,
                         num_attention_heads=2, max_position_embeddings=16, projection_dim=8),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=16, projection_dim=8),
        projection_dim=8,
    )
    model = CLIPModel(config)
    report = freeze(model, TrainConfig(freeze_text_layers=11))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    text_trainable = {n.split(".")[1] if n.startswith("text_model.") else n for n in trainable
                      if n.startswith(("text_model.", "text_projection"))}
    assert text_trainable == {"encoder", "final_layer_norm", "text_projection.weight"}
    assert all(n.startswith("text_model.encoder.layers.11.") for n in trainable if "text_model.encoder" in n)
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith(("vision_model.", "visual_")))
    assert "logit_scale" in trainable
    assert report.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert report.frozen > 0 and report.frozen + report.trainable == sum(p.numel() for p in model.parameters())

    freeze(model, TrainConfig(freeze_text_layers=0, freeze_vision_layers=1))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("vision_model.embeddings", "vision_model.pre_layrnorm",
                                        "vision_model.encoder.layers.0.")) for n in frozen)


# --- schedules -------------------------------------------------------------------------------------
def test_periodic_schedule_climbs_back_while_cosine_decays_once() -> None:
    periodic, cosine = TrainConfig(schedule="periodic"), TrainConfig(schedule="cosine")
    total = 400
    assert [round(lr_factor(periodic, s, total), 6) for s in (0, 50, 100, 150, 200)] == [1.0, 0.5, 0.0, 0.5, 1.0]
    values = [lr_factor(cosine, s, total) for s in (0, 100, 200, 300, 400)]
    assert values[0] == 1.0 and values[-1] == pytest.approx(0.0, abs=1e-12)
    assert values[2] == pytest.approx(0.5) and all(a > b for a, b in zip(values, values[1:]))
    assert lr_factor(TrainConfig(schedule="constant"), 250, total) == 1.0
    warm = TrainConfig(schedule="cosine", warmup_steps=4)
    assert [lr_factor(warm, s, 104) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(warm, 54, 104) == pytest.approx(0.5)


def test_periodic_schedule_matches_torch_cosine_annealing() -> None:
    """The original code's CosineAnnealingLR(T_max=100) stepped per iteration, reproduced."""
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)
    config = TrainConfig(schedule="periodic")
    for step in range(250):
        assert opt.param_groups[0]["lr"] == pytest.approx(1e-4 * lr_factor(config, step, 250), abs=1e-12)
        opt.step()
        sched.step()


# --- data ------------------------------------------------------------------------------------------
def test_training_set_swaps_world_names_for_synthetic_data(tiny_model, synthetic_tables, tmp_path: Path) -> None:
    train_table, _ = synthetic_tables
    data = ContrastiveTrainingSet(train_table, PixelCache(tmp_path / "px", tiny_model.preprocess), seed=0)
    assert len(data) == len(train_table) and data.skipped == 0
    crop, text, cfs = data[0]
    named = train_table.records[0].extra["named_person"]
    assert crop.dtype.name == "uint8" and crop.shape == (224, 224, 3)
    assert named in text and len(cfs) == 1 and named not in cfs[0] and cfs[0] != text
    batch = Collate(tiny_model)([data[i] for i in range(4)])
    assert batch.pixels.shape == (4, 224, 224, 3) and batch.cf_input_ids.shape[0] == 4
    long_item = (crop, "word " * 200, ("other " * 200,))
    assert Collate(tiny_model)([long_item, long_item]).input_ids.shape[1] == tiny_model.max_text_tokens


# --- a short real run ------------------------------------------------------------------------------
def test_short_run_writes_logs_metrics_and_a_loadable_best_model(tiny_model_dir, synthetic_tables, tmp_path) -> None:
    train_table, val_table = synthetic_tables
    config = small_config(tiny_model_dir)
    seen: list[dict] = []
    result = train(config, train_table, val_table, tmp_path / "run", log=seen.append)

    out = tmp_path / "run"
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    lines = [r for r in records if "loss" in r]
    assert [r["step"] for r in lines] == list(range(1, 9)) and result.steps == 8
    assert [r["step"] for r in records if "val_loss" in r] == [4, 6, 8]  # validations are logged too
    assert lines[0]["total_steps"] == 8
    assert {"step", "epoch", "loss", "lr", "data_time", "step_time", "samples_per_s"} <= set(lines[0])
    assert lines[0]["lr"] == pytest.approx(1e-3) and lines[-1]["lr"] < lines[0]["lr"]  # cosine decay
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["step"] for h in metrics["history"]] == [4, 6, 8]  # every 4 steps and at the epoch end (6)
    assert metrics["best_val_loss"] == pytest.approx(result.best_val_loss)
    assert metrics["best_val_loss"] == min(h["val_loss"] for h in metrics["history"])
    assert json.loads((out / "config.json").read_text())["lr"] == 1e-3
    assert seen and result.best_dir == out / "best" and not result.stopped_early

    # The saved model loads through the product's loader and fits a fixed batch better than the start.
    best = load_model(str(result.best_dir))
    start = load_model(str(tiny_model_dir))
    data = ContrastiveTrainingSet(train_table, PixelCache(out / "pixel-cache", start.preprocess))
    batch = Collate(start)([data[i] for i in range(8)])
    loss_fn = build_loss("cft")
    with torch.no_grad():
        before, after = float(batch_loss(start, loss_fn, batch)), float(batch_loss(best, loss_fn, batch))
    assert after < before
    assert best.preprocess == start.preprocess
    assert not list(Path.cwd().glob("checkpoint*"))  # nothing written outside out_dir


def test_snapshots_are_the_weights_of_one_run_at_each_listed_step(tiny_model_dir, synthetic_tables, tmp_path) -> None:
    """One constant-LR run with snapshots equals separate shorter runs of the same run (the proof's stage-0 doses)."""
    config = small_config(tiny_model_dir, schedule="constant", snapshot_steps=(3, 6), max_steps=6)
    train(config, *synthetic_tables, tmp_path / "long")
    train(small_config(tiny_model_dir, schedule="constant", max_steps=3), *synthetic_tables, tmp_path / "short")
    snapshots = tmp_path / "long" / training.SNAPSHOTS_DIR
    assert sorted(p.name for p in snapshots.iterdir()) == ["step-3", "step-6"]
    at_3 = load_model(str(snapshots / "step-3")).model.state_dict()
    short = load_model(str(tmp_path / "short" / "best")).model.state_dict()  # validated once, at its step 3
    assert all(torch.equal(at_3[k], short[k]) for k in at_3)
    at_6 = load_model(str(snapshots / "step-6")).model.state_dict()
    assert any(not torch.equal(at_3[k], at_6[k]) for k in at_3)
    with pytest.raises(ConfigError, match=r"snapshot_steps="):
        TrainConfig(snapshot_steps=(0,)).validate()


def test_early_stopping_when_validation_cannot_improve(tiny_model_dir, synthetic_tables, tmp_path, monkeypatch) -> None:
    values = iter([1.0, 1.5, 2.0, 2.5, 3.0])
    monkeypatch.setattr(training.loop, "validation_loss", lambda *args: next(values))
    config = small_config(tiny_model_dir, max_steps=None, val_every_steps=1, patience=1, max_epochs=5)
    result = train(config, *synthetic_tables, tmp_path / "run")
    assert result.stopped_early and result.steps == 2 and result.best_val_loss == 1.0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["best_step"] == 1 and metrics["stopped_early"] is True
    assert (tmp_path / "run" / "best" / "config.json").is_file()


def test_same_seed_same_first_step_loss(tiny_model_dir, synthetic_tables, tmp_path) -> None:
    def first_loss(seed: int, name: str) -> float:
        config = small_config(tiny_model_dir, max_steps=1, seed=seed)
        train(config, *synthetic_tables, tmp_path / name)
        return json.loads((tmp_path / name / "log.jsonl").read_text().splitlines()[0])["loss"]

    a, b, c = first_loss(0, "a"), first_loss(0, "b"), first_loss(1, "c")
    assert a == b and math.isfinite(a)
    assert c != a  # another seed draws another batch


def test_bf16_autocast_step_and_shared_pixel_cache(tiny_model_dir, synthetic_tables, tmp_path) -> None:
    shared = tmp_path / "pixels"
    result = train(small_config(tiny_model_dir, max_steps=1, precision="bf16", pixel_cache_dir=str(shared)),
                   *synthetic_tables, tmp_path / "run")
    line = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert math.isfinite(line["loss"]) and math.isfinite(result.best_val_loss)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["resolved_precision"] == "bf16"
    assert len(list(shared.rglob("*.npy"))) == 8 + len(synthetic_tables[1])  # one training batch + validation
    assert not (tmp_path / "run" / "pixel-cache").exists()


def test_batch_size_larger_than_data_is_a_clear_error(tiny_model_dir, synthetic_tables, tmp_path) -> None:
    from cftclip_core.errors import DataError

    with pytest.raises(DataError, match="lower batch_size"):
        train(small_config(tiny_model_dir, batch_size=512), *synthetic_tables, tmp_path / "run")


# --- which items train -------------------------------------------------------------------------------
def _with_counterfactuals(table: Table, every: int = 2) -> Table:
    """The table with a counterfactual column, empty for every other item (as for texts without a PERSON)."""
    import dataclasses

    records = [dataclasses.replace(r, extra={**r.extra, "counterfactual": f"Nobody {i} waves" if i % every == 0
                                              else None, "cf_recipe": "offline: test recipe"})
               for i, r in enumerate(table.records)]
    return Table(records, table.base_dir, None)


def test_ablations_train_on_the_items_cft_can_use_unless_told_otherwise(tiny_model, synthetic_tables, tmp_path) -> None:
    table = _with_counterfactuals(synthetic_tables[0])
    cache = PixelCache(tmp_path / "px", tiny_model.preprocess)
    with_cf = [r.id for r in table.records if r.extra["counterfactual"]]
    cft = ContrastiveTrainingSet(table, cache, needs_counterfactuals=True)
    clip = ContrastiveTrainingSet(table, cache, needs_counterfactuals=False)
    every = ContrastiveTrainingSet(table, cache, needs_counterfactuals=False, item_subset="all")
    assert [r.id for r in cft.records] == [r.id for r in clip.records] == with_cf
    assert clip.counterfactuals[0] == () and cft.counterfactuals[0] == ("Nobody 0 waves",)
    assert len(every) == len(table) and every.report.subset == "all"
    assert clip.report.dropped == {"no_counterfactual": len(table) - len(with_cf)}
    import shutil

    shutil.copytree(table.base_dir / "images", tmp_path / "plain" / "images")  # no world.json beside: no names
    plain = Table([r.__class__(r.id, r.image, r.title, r.summary) for r in table.records], tmp_path / "plain")
    without = ContrastiveTrainingSet(plain, cache, needs_counterfactuals=False)
    assert len(without) == len(table) and without.report.subset == "all (the data carries no counterfactuals)"


def test_long_texts_are_cut_and_counted_or_dropped_and_no_negative_equals_its_positive(
        tiny_model, synthetic_tables, tmp_path) -> None:
    import dataclasses

    from cftclip_core.counterfactuals import TokenWindow

    base = synthetic_tables[0].records
    filler = "and then the crowd waited " * 20  # far past the 77-token window
    records = [
        dataclasses.replace(base[0], extra={"counterfactual": "Dora Nim waves."}),  # fine
        dataclasses.replace(base[1], summary=filler + "Mara Velk", extra={"counterfactual": filler + "Dora Nim"}),
        dataclasses.replace(base[2], summary="Mara Velk " + filler, extra={"counterfactual": "Dora Nim " + filler}),
    ]
    table = Table(records, synthetic_tables[0].base_dir)
    cache, window = PixelCache(tmp_path / "px", tiny_model.preprocess), TokenWindow.of(tiny_model)
    cut = ContrastiveTrainingSet(table, cache, window=window, long_texts="truncate")
    assert [r.id for r in cut.records] == [base[0].id, base[2].id]
    assert cut.report.dropped == {"identical_in_window": 1} and cut.report.truncated == 1
    dropped = ContrastiveTrainingSet(table, cache, window=window, long_texts="drop")
    assert [r.id for r in dropped.records] == [base[0].id] and dropped.report.dropped == {"too_long": 2}


def test_ties_count_as_improvement_only_when_asked(tiny_model_dir, synthetic_tables, tmp_path, monkeypatch) -> None:
    def run(ties: bool) -> dict:
        values = iter([1.0, 1.0, 1.0])
        monkeypatch.setattr(training.loop, "validation_loss", lambda *args: next(values))
        config = small_config(tiny_model_dir, max_steps=3, val_every_steps=1, patience=2, ties_improve=ties)
        train(config, *synthetic_tables, tmp_path / f"ties-{ties}")
        return json.loads((tmp_path / f"ties-{ties}" / "metrics.json").read_text())

    strict, ties = run(False), run(True)
    assert (strict["best_step"], strict["stopped_early"]) == (1, True)  # 1.0, then two validations no better
    assert [h["improved"] for h in ties["history"]] == [True, True, True] and ties["best_step"] == 3


def test_the_run_record_says_what_trained_and_which_recipe_made_its_counterfactuals(
        tiny_model_dir, synthetic_tables, tmp_path) -> None:
    train_table = _with_counterfactuals(synthetic_tables[0], every=1)
    val_table = _with_counterfactuals(synthetic_tables[1], every=1)
    train(small_config(tiny_model_dir, loss="clip", max_steps=1), train_table, val_table, tmp_path / "run")
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["item_subset"] == "counterfactual" and record["data"]["train"]["used"] == len(train_table)
    assert record["counterfactuals"]["recipes"] == ["offline: test recipe"]
    assert record["early_stopping"] == "strict improvement only" and record["long_texts"] == "truncate"
    train(small_config(tiny_model_dir, max_steps=1), *synthetic_tables, tmp_path / "world")
    world = json.loads((tmp_path / "world" / "config.json").read_text())["counterfactuals"]
    assert world["recipes"] == [training.data.WORLD_SWAP]
