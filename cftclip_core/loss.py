"""Contrastive losses for fine-tuning CLIP, with and without counterfactual texts.

The paper's loss (``CounterfactualLoss``) is image-to-text InfoNCE at a fixed temperature of 0.05:
each image is scored against every original text of the (global) batch plus every counterfactual
text, and its own original text is the positive. The other losses are the arms it is compared with:
``ImageToTextLoss`` (same form, no counterfactuals), ``SymmetricCounterfactualLoss`` (adds a
text-to-image term over the originals, learned scale by default) and ``ClipLoss`` (plain CLIP).

All losses take L2-normalised features (they normalise again, which is idempotent) and compute in
float32 with log-softmax, also under bf16 autocast: at temperature 0.05 logits reach 20, where bf16
would lose about 0.1 per logit.

Multi-process training (DDP) follows open_clip's ``local_loss`` + ``gather_with_grad`` convention:
each rank gathers the features of all ranks (with gradients), scores its LOCAL images (and texts)
against ALL gathered candidates, and averages over its local samples. Then

* the mean of the rank losses equals the single-process loss on the global batch, and
* DDP's gradient averaging yields exactly the single-process parameter gradients: the gradient that
  reaches a rank's local features is ``world_size`` times the single-process one, because the
  autograd all-gather sums, over all ranks, the gradients of their losses with respect to it.

Every rank must pass the same local batch size (use ``drop_last`` in the sampler); it is checked.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from cftclip_core.errors import ConfigError, TrainingError
from cftclip_core.specs.training import DEFAULT_TEMPERATURE, LOSSES

Features = tuple[Tensor, Tensor, Tensor | None]  # image, original text, counterfactual text

MAX_LOGIT_SCALE = 100.0  # CLIP's clip on exp(logit_scale)


def gather_features(
    image: Tensor,
    text: Tensor,
    cf_text: Tensor | None = None,
    *,
    rank: int,
    world_size: int,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """All-gather features from every rank along the batch dimension, keeping gradients.

    Gathered tensors are in rank order, so ``rank * local_batch`` is where this rank's samples start.
    With ``world_size == 1`` the inputs are returned unchanged.
    """
    _check_rank(rank, world_size)
    if world_size == 1:
        return image, text, cf_text
    if not (dist.is_available() and dist.is_initialized()):
        raise TrainingError(
            f"world_size={world_size} needs a torch.distributed process group; call "
            "torch.distributed.init_process_group first (torchrun and srun set the variables it reads)."
        )
    if dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise TrainingError(
            f"The loss was built for rank {rank} of {world_size}, but this process is rank {dist.get_rank()} "
            f"of {dist.get_world_size()}; build the loss from torch.distributed.get_rank()/get_world_size()."
        )
    _check_same_sizes_everywhere(image, cf_text, world_size)
    from torch.distributed.nn.functional import all_gather  # autograd-aware: backward sums over ranks

    def gather(t: Tensor) -> Tensor:
        return torch.cat(all_gather(t.contiguous()), dim=0)

    return gather(image), gather(text), (gather(cf_text) if cf_text is not None else None)


def _check_same_sizes_everywhere(image: Tensor, cf_text: Tensor | None, world_size: int) -> None:
    local = torch.tensor([image.shape[0], 0 if cf_text is None else cf_text.shape[0]], device=image.device)
    sizes = [torch.zeros_like(local) for _ in range(world_size)]
    dist.all_gather(sizes, local)
    if any(not torch.equal(s, sizes[0]) for s in sizes):
        listed = ", ".join(f"rank {r}: {int(s[0])} pairs, {int(s[1])} counterfactuals" for r, s in enumerate(sizes))
        raise TrainingError(
            f"Ranks passed different batch sizes ({listed}); gathering needs equal local batches. "
            "Use drop_last=True in the DistributedSampler/DataLoader."
        )


def _check_rank(rank: int, world_size: int) -> None:
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ConfigError(f"world_size={world_size!r} is not valid; use a positive integer (1 without DDP).")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ConfigError(f"rank={rank!r} is not valid for world_size={world_size}; use 0 to {world_size - 1}.")


def _check_temperature(temperature: float) -> float:
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(
            f"temperature={temperature!r} is not valid; use a positive number such as 0.05 (the paper's)."
        )
    return value


class ContrastiveLoss(nn.Module):
    """Shared steps: check shapes, normalise in float32, gather across ranks, cross-entropy.

    ``forward(image, text, cf_text=None, logit_scale=None)`` has the same signature for every loss so a
    trainer can call any of them; ``uses_counterfactuals`` and ``learns_scale`` say what to pass.
    ``logit_scale`` is the model's learned log inverse temperature (``CLIPModel.logit_scale``); the
    scale used is ``exp(logit_scale)`` clipped at 100 as in CLIP.
    """

    uses_counterfactuals: ClassVar[bool] = False
    learns_scale: bool = False

    def __init__(self, temperature: float | None = DEFAULT_TEMPERATURE, *, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        _check_rank(rank, world_size)
        self.temperature = None if temperature is None else _check_temperature(temperature)
        self.rank = rank
        self.world_size = world_size

    def forward(
        self, image: Tensor, text: Tensor, cf_text: Tensor | None = None, logit_scale: Tensor | None = None
    ) -> Tensor:
        image, text, cf_text = self.prepare(image, text, cf_text)
        with torch.autocast(device_type=image.device.type, enabled=False):
            scale = self.scale(logit_scale)
            local: Features = (_unit(image), _unit(text), None if cf_text is None else _unit(cf_text))
            gathered = gather_features(*local, rank=self.rank, world_size=self.world_size)
            labels = self.rank * image.shape[0] + torch.arange(image.shape[0], device=image.device)
            return self.combine(local, gathered, labels, scale)

    def combine(self, local: Features, gathered: Features, labels: Tensor, scale: Tensor | float) -> Tensor:
        """The loss from this rank's features and the features of all ranks; ``labels`` index the
        positives (this rank's originals) among the gathered originals."""
        raise NotImplementedError

    def prepare(self, image: Tensor, text: Tensor, cf_text: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """Check shapes; counterfactuals of shape (B, M, d) are flattened to (B*M, d)."""
        name = type(self).__name__
        if image.ndim != 2 or text.ndim != 2:
            raise TrainingError(
                f"{name} needs image and text features of shape (batch, dim); got {tuple(image.shape)} and "
                f"{tuple(text.shape)}. Pass the projected embeddings (image_embeds, text_embeds)."
            )
        if image.shape[0] == 0:
            raise TrainingError(f"{name} got an empty batch; skip empty batches or lower the batch size.")
        if image.shape != text.shape:
            raise TrainingError(
                f"{name} needs one original text per image: image features {tuple(image.shape)} but text "
                f"features {tuple(text.shape)}. Check that the batch pairs each image with its text."
            )
        if cf_text is not None and not self.uses_counterfactuals:
            raise TrainingError(f"{name} takes no counterfactual texts; use CounterfactualLoss for them.")
        if cf_text is None and self.uses_counterfactuals:
            raise TrainingError(
                f"{name} needs counterfactual text features; generate counterfactuals for the data, or use "
                "ImageToTextLoss (no counterfactuals)."
            )
        if cf_text is None:
            return image, text, None
        batch, dim = image.shape
        if cf_text.ndim == 3 and cf_text.shape[0] == batch and cf_text.shape[2] == dim and cf_text.shape[1] > 0:
            cf_text = cf_text.reshape(-1, dim)
        if cf_text.ndim != 2 or cf_text.shape[1] != dim or cf_text.shape[0] == 0 or cf_text.shape[0] % batch:
            raise TrainingError(
                f"{name} needs M >= 1 counterfactuals per image, as (batch*M, dim) or (batch, M, dim) with "
                f"batch={batch}, dim={dim}; got {tuple(cf_text.shape)}."
            )
        return image, text, cf_text

    def scale(self, logit_scale: Tensor | None) -> Tensor | float:
        name = type(self).__name__
        if self.learns_scale:
            if logit_scale is None:
                raise TrainingError(f"{name} learns its temperature: pass the model's logit_scale parameter.")
            return logit_scale.float().exp().clamp(max=MAX_LOGIT_SCALE)
        if logit_scale is not None:
            raise TrainingError(
                f"{name} uses the fixed temperature {self.temperature}; do not pass logit_scale "
                "(or use a loss that learns it)."
            )
        assert self.temperature is not None
        return 1.0 / self.temperature


def _unit(features: Tensor) -> Tensor:
    return F.normalize(features.float(), dim=-1)


def image_to_text(image: Tensor, candidates: Tensor, labels: Tensor, scale: Tensor | float) -> Tensor:
    """Mean over images of -log softmax(scale * image @ candidates.T)[label]."""
    return F.cross_entropy(scale * image @ candidates.T, labels)


class ImageToTextLoss(ContrastiveLoss):
    """Image-to-text InfoNCE over the batch's original texts only (the loss-form control arm)."""

    def combine(self, local: Features, gathered: Features, labels: Tensor, scale: Tensor | float) -> Tensor:
        return image_to_text(local[0], gathered[1], labels, scale)


class CounterfactualLoss(ContrastiveLoss):
    """The paper's loss: image-to-text InfoNCE over [all original texts; all counterfactual texts].

    For B images with M counterfactuals each, the candidates are B originals + B*M counterfactuals;
    the positive of image i is original text i.
    """

    uses_counterfactuals = True

    def combine(self, local: Features, gathered: Features, labels: Tensor, scale: Tensor | float) -> Tensor:
        _, all_text, all_cf = gathered
        return image_to_text(local[0], torch.cat([all_text, all_cf]), labels, scale)


class SymmetricCounterfactualLoss(ContrastiveLoss):
    """Mean of the paper's image-to-text term and a text-to-image term over the original texts
    (the "cftsym" arm). Learns the scale by default; ``learn_scale=False`` uses ``temperature``."""

    uses_counterfactuals = True

    def __init__(
        self, temperature: float = DEFAULT_TEMPERATURE, *, learn_scale: bool = True, rank: int = 0, world_size: int = 1
    ) -> None:
        super().__init__(temperature, rank=rank, world_size=world_size)
        self.learns_scale = learn_scale

    def combine(self, local: Features, gathered: Features, labels: Tensor, scale: Tensor | float) -> Tensor:
        all_image, all_text, all_cf = gathered
        i2t = image_to_text(local[0], torch.cat([all_text, all_cf]), labels, scale)
        t2i = image_to_text(local[1], all_image, labels, scale)
        return (i2t + t2i) / 2


class ClipLoss(ContrastiveLoss):
    """Plain symmetric CLIP loss with the model's learned scale (the no-counterfactual baseline)."""

    learns_scale = True

    def __init__(self, *, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(None, rank=rank, world_size=world_size)

    def combine(self, local: Features, gathered: Features, labels: Tensor, scale: Tensor | float) -> Tensor:
        all_image, all_text, _ = gathered
        i2t = image_to_text(local[0], all_text, labels, scale)
        return (i2t + image_to_text(local[1], all_image, labels, scale)) / 2


def build_loss(
    name: str, *, temperature: float = DEFAULT_TEMPERATURE, rank: int = 0, world_size: int = 1
) -> ContrastiveLoss:
    """The loss of a training arm by name (see ``LOSSES``)."""
    if name == "clip":
        return ClipLoss(rank=rank, world_size=world_size)
    if name == "i2t":
        return ImageToTextLoss(temperature, rank=rank, world_size=world_size)
    if name == "cft":
        return CounterfactualLoss(temperature, rank=rank, world_size=world_size)
    if name == "cftsym":
        return SymmetricCounterfactualLoss(temperature, rank=rank, world_size=world_size)
    raise ConfigError(f"Unknown loss '{name}': choose one of {', '.join(LOSSES)}.")
