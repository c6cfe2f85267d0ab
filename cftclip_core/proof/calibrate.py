"""Measuring this machine's pace for the proof (``python -m cftclip_core.proof calibrate``): a few
training steps of each arm's loss on a real batch of the proof model, and the cost of embedding images
and texts, on one thread. ``plan`` turns the pace into an ETA for a grid."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from cftclip_core.formats import read_table
from cftclip_core.images import PixelCache
from cftclip_core.loss import build_loss
from cftclip_core.models import LoadedModel
from cftclip_core.proof.model import initial_model
from cftclip_core.proof.plan import Pace
from cftclip_core.scoring import ScoreItem, ScoreOptions, score_pairs
from cftclip_core.specs.proof import ARMS, ProofSettings, world_config
from cftclip_core.synthetic import generate_dataset
from cftclip_core.training import Collate, ContrastiveTrainingSet, batch_loss

EMBED_ITEMS = 256  # images (and texts) embedded to time the evaluation


def _seconds_per_step(loaded: LoadedModel, arm: str, table_path: Path, pixels: PixelCache,
                      settings: ProofSettings, steps: int) -> float:
    spec = ARMS[arm]
    assert spec.loss is not None
    loss_fn = build_loss(spec.loss, temperature=settings.temperature)
    dataset = ContrastiveTrainingSet(read_table(table_path), pixels, text_field=settings.text_field,
                                     needs_counterfactuals=loss_fn.uses_counterfactuals, per_text=max(1, spec.swaps))
    batch = Collate(loaded)([dataset[i] for i in range(settings.batch_size)])
    params = [p for p in loaded.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    loaded.model.logit_scale.requires_grad_(loss_fn.learns_scale)
    timings = []
    for _ in range(steps + 1):  # the first step warms up and is not counted
        started = time.perf_counter()
        loss = batch_loss(loaded, loss_fn, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        timings.append(time.perf_counter() - started)
    return sum(timings[1:]) / steps


def measure_pace(settings: ProofSettings, *, steps: int = 4, start_seconds: float = 0.0) -> Pace:
    """Seconds per training step of every trained arm, per embedded image and text; ``start_seconds``: what
    starting a run process costs (the caller measures its own imports)."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="proof-calibrate-") as tmp:
        folder = Path(tmp)
        items = max(settings.batch_size, EMBED_ITEMS)
        csv_path = generate_dataset(folder / "world", items, world_config("many", settings, 0),
                                    split_fractions=(1.0, 0.0, 0.0), negative_fraction=0.0)
        loaded = initial_model(settings, seed=0)
        pixels = PixelCache(folder / "pixels", loaded.preprocess)
        per_step = {arm: _seconds_per_step(loaded, arm, csv_path, pixels, settings, steps)
                    for arm, spec in ARMS.items() if spec.loss}
        table = read_table(csv_path)
        images = [table.image_path(r) for r in table.records][:EMBED_ITEMS]
        texts = [r.text(settings.text_field) for r in table.records][:EMBED_ITEMS]
        options = {"pixel_cache": pixels, "options": ScoreOptions(batch_size=256, precision="fp32", decode_workers=1)}
        loaded.model.eval()

        def timed(pairs: list[ScoreItem]) -> float:
            started = time.perf_counter()
            score_pairs(loaded, pairs, **options)
            return time.perf_counter() - started

        timed([ScoreItem(str(k), path, texts[0]) for k, path in enumerate(images)])  # fills the pixel cache, as runs do
        image = timed([ScoreItem(str(k), path, texts[0]) for k, path in enumerate(images)]) / len(images)
        text = timed([ScoreItem(str(k), images[0], t) for k, t in enumerate(dict.fromkeys(texts))]) / len(
            set(texts))
    return Pace(per_step, image, text, start_seconds)

