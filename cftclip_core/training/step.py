"""One training step's forward pass, as one module DDP can wrap, and the validation loss."""

from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

from cftclip_core.distributed import Ranks
from cftclip_core.errors import DataError
from cftclip_core.images import normalize
from cftclip_core.loss import ContrastiveLoss
from cftclip_core.models import LoadedModel
from cftclip_core.training.data import Batch


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
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
    with autocast(precision, loaded.device):
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
