"""The proof's tiny CLIP and the trainer configurations of its two stages."""

from __future__ import annotations

import math
from functools import reduce
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

from cftclip_core.images import PreprocessConfig
from cftclip_core.models import TINY_TOKENIZER_DIR, LoadedModel
from cftclip_core.specs.proof import PROOF_VERSION, ArmSpec, ProofSettings
from cftclip_core.training import TrainConfig


def proof_model_config(tokenizer: CLIPTokenizer, image_size: int) -> CLIPConfig:
    """The prototype's tiny CLIP (about 0.6M parameters): a 2-layer text and a 3-layer vision tower."""
    return CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=32, projection_dim=64,
            # pad, eos and unk share one id in the trained tokenizer; pooling reads the first eos position
            # only when eos_token_id is that id.
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
        ),
        vision_config=dict(
            hidden_size=96, intermediate_size=384, num_hidden_layers=3, num_attention_heads=3,
            image_size=image_size, patch_size=8, projection_dim=64,
        ),
        projection_dim=64,
    )


def initial_model(settings: ProofSettings, seed: int) -> LoadedModel:
    """A freshly initialised tiny CLIP with the product's shipped tokenizer (which knows every world word)."""
    tokenizer = CLIPTokenizer.from_pretrained(TINY_TOKENIZER_DIR)
    torch.manual_seed(seed)
    model = CLIPModel(proof_model_config(tokenizer, settings.image_size)).to(settings.device)
    size = settings.image_size
    return LoadedModel(name="proof-initial", fingerprint=f"proof-initial-v{PROOF_VERSION}-seed{seed}", model=model,
                       tokenizer=tokenizer, preprocess=PreprocessConfig(size=size, crop=size), is_tiny=False)


def _common(settings: ProofSettings, cache: Path, seed: int, steps: int) -> dict[str, Any]:
    return dict(batch_size=settings.batch_size, max_epochs=steps, max_steps=steps, warmup_steps=settings.warmup_steps,
                weight_decay=settings.weight_decay, grad_clip=settings.grad_clip, freeze_text_layers=0,
                freeze_vision_layers=0, seed=seed, precision="fp32", text_field=settings.text_field,
                device=settings.device, pixel_cache_dir=str(cache / "pixels"), temperature=settings.temperature)


def stage0_config(settings: ProofSettings, cache: Path, seed: int) -> TrainConfig:
    """One constant-learning-rate run (after the warm-up) with the plain CLIP loss, saved at every dose and
    validated at every dose (and at each epoch end, as the trainer does); it never stops early."""
    total = settings.stage0_total
    every = reduce(math.gcd, settings.stage0_steps)
    return TrainConfig(model="proof-initial", loss="clip", lr=settings.stage0_lr, schedule="constant",
                       val_every_steps=every, patience=total, snapshot_steps=settings.stage0_steps,
                       **_common(settings, cache, seed, total))


def stage1_config(settings: ProofSettings, cache: Path, arm: ArmSpec, seed: int, model: str) -> TrainConfig:
    """Every trained arm: warm-up then cosine decay, the same batches for every arm of a seed; validation at
    each epoch end keeps the best model (``best/``) and never stops the run early."""
    assert arm.loss is not None
    return TrainConfig(model=model, loss=arm.loss, lr=settings.lr, schedule="cosine", val_every_steps=settings.steps,
                       patience=settings.steps, counterfactuals_per_text=max(1, arm.swaps),
                       **_common(settings, cache, seed, settings.steps))
