"""The stage-1 training batches, as the trainer draws them, and their false negatives.

A false negative is an in-batch caption that truthfully describes another item's image: same person and
same context (the verb and the preposition cannot be seen). Plain contrastive training pushes such a
caption away from the image although it is right; the few-contexts world has many of them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from torch.utils.data import DistributedSampler

from cftclip_core.formats import Record


def training_batches(n_items: int, batch_size: int, seed: int, steps: int) -> list[list[int]]:
    """The dataset indices of the first ``steps`` batches of one training process: the trainer's
    ``DistributedSampler(shuffle=True, seed=seed, drop_last=True)``, epoch after epoch, in batches of
    ``batch_size`` with the last incomplete one dropped."""
    sampler = DistributedSampler(range(n_items), num_replicas=1, rank=0, shuffle=True, seed=seed, drop_last=True)
    batches: list[list[int]] = []
    epoch = 0
    while len(batches) < steps:
        sampler.set_epoch(epoch)
        order = list(sampler)
        batches += [order[k:k + batch_size] for k in range(0, len(order) - batch_size + 1, batch_size)]
        epoch += 1
    return batches[:steps]


@dataclass(frozen=True)
class FalseNegatives:
    batches: int
    negatives: int  # in-batch caption negatives in all (each item: batch size - 1)
    false_negatives: int  # of those, captions that truthfully describe the item's image
    per_item: float  # false negatives per item and batch
    share: float  # false_negatives / negatives

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _truth(record: Record) -> tuple[str, ...]:
    e = record.extra
    return (str(e["person"]), str(e["background"]), str(e["object"]), str(e["colour"]))


def count_false_negatives(records: Sequence[Record], batches: Sequence[Sequence[int]]) -> FalseNegatives:
    """False negatives of ``batches`` (indices into ``records``, the training positives)."""
    items = negatives = false = 0
    for batch in batches:
        counts = Counter(_truth(records[i]) for i in batch)
        items += len(batch)
        negatives += len(batch) * (len(batch) - 1)
        false += sum(n * (n - 1) for n in counts.values())
    return FalseNegatives(len(batches), negatives, false, false / items if items else 0.0,
                          false / negatives if negatives else 0.0)
