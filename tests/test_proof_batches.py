"""The proof's false-negative count (cftclip_core.proof.batches): the batches are the trainer's own, and a
false negative is an in-batch caption naming the same person in the same context."""

from __future__ import annotations

from pathlib import Path

import pytest

from cftclip_core.formats import Record
from cftclip_core.proof.batches import count_false_negatives, training_batches
from cftclip_core.proof.cache import WorldData, prepare_world
from cftclip_core.proof.model import initial_model, stage1_config
from cftclip_core.specs.proof import ARMS, ProofSettings
from cftclip_core.training import ContrastiveTrainingSet, train

SETTINGS = ProofSettings(train_items=40, val_items=4, test_items=4, image_size=32, stage0_steps=(1,), steps=7,
                         batch_size=8, warmup_steps=0)


def test_the_batches_are_the_ones_the_trainer_draws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = WorldData.load(prepare_world(tmp_path / "cache", "few", SETTINGS, 3))
    seen: list[int] = []
    original = ContrastiveTrainingSet.__getitem__

    def recording(self: ContrastiveTrainingSet, index: int):  # noqa: ANN202
        if len(self) == SETTINGS.train_items:  # the training set, not validation
            seen.append(index)
        return original(self, index)

    monkeypatch.setattr(ContrastiveTrainingSet, "__getitem__", recording)
    config = stage1_config(SETTINGS, tmp_path / "cache", ARMS["cft"], 5, "proof-initial")
    train(config, data.positives("train"), data.positives("val"), tmp_path / "run",
          model=initial_model(SETTINGS, 5))
    expected = training_batches(SETTINGS.train_items, SETTINGS.batch_size, 5, SETTINGS.steps)
    assert len(expected) == 7  # 5 batches per epoch: crosses an epoch boundary
    assert seen == [i for batch in expected for i in batch]
    assert training_batches(SETTINGS.train_items, SETTINGS.batch_size, 6, 7) != expected  # the seed matters


def record(person: str, context: str) -> Record:
    return Record(id=f"{person}-{context}", image="x.png", title="t", summary="s", label=1, split="train",
                  extra={"person": person, "background": context, "object": "car", "colour": "red"})


def test_false_negatives_are_same_person_and_same_context_pairs() -> None:
    records = [record("A", "park"), record("A", "park"), record("A", "park"), record("A", "beach"),
               record("B", "park")]
    found = count_false_negatives(records, [[0, 1, 2, 3], [1, 3, 4, 0]])
    # batch 1: three A-park items, each with 2 truthful other captions (6); batch 2: A-park x2 (2)
    assert (found.batches, found.negatives, found.false_negatives) == (2, 24, 8)
    assert found.per_item == pytest.approx(8 / 8) and found.share == pytest.approx(8 / 24)
    assert count_false_negatives(records, [[3, 4]]).false_negatives == 0
