"""Evaluating one model on a rendered world's held-out images.

Text side (the pairs): each test image with its caption (label 1) and the same caption naming another
person (label 0): ROC-AUC, and F1 at the threshold that maximises F1 on the validation pairs. The
16-way name accuracy: the caption with every person's name, the highest similarity must name the person
drawn. Context AUC (a diagnostic): the anonymous caption with the image's context versus another context.

Image side (what the paper's label 0 means: the picture does not show the person named): each test
caption with its own image (label 1) against (a) an image of another person in the same context, and
(b) an image of the same context with nobody in it; a ROC-AUC for each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cftclip_core import metrics
from cftclip_core.errors import DataError
from cftclip_core.evaluation import evaluate_scores, score_table
from cftclip_core.formats import Record
from cftclip_core.images import PixelCache
from cftclip_core.models import LoadedModel
from cftclip_core.proof.cache import WorldData, image_id, named
from cftclip_core.scoring import ScoreItem, ScoreOptions, score_pairs
from cftclip_core.specs.proof import CONTEXT_NEGATIVE_SEED, ProofSettings
from cftclip_core.synthetic import Context, anonymize, swap_name


@dataclass(frozen=True)
class Evaluation:
    scores: pd.DataFrame  # the scores file of the validation and test pairs
    report: dict[str, Any]  # evaluation.evaluate_scores: test metrics at the validation-tuned threshold
    name_accuracy: float
    context_auc: float
    image_auc_person: float
    image_auc_empty: float

    def summary(self) -> dict[str, Any]:
        values = self.report["metrics"]
        return {"roc_auc": values["roc_auc"]["value"], "f1": values["f1"]["value"],
                "name_accuracy": self.name_accuracy, "context_auc": self.context_auc,
                "image_auc_person": self.image_auc_person, "image_auc_empty": self.image_auc_empty,
                "threshold": self.report["threshold"]["value"], "n_test_images": self.report["n"] // 2}


def _other_context_caption(text: str, record: Record, other: Context) -> str:
    """``text`` (an anonymous caption of ``record``) describing the context ``other`` instead."""
    e = record.extra
    swapped = text.replace(f"{e['colour']} {e['object']}", f"{other.colour} {other.object}")
    swapped = swapped.replace(f"the {e['background']}", f"the {other.background}")
    if swapped == text:
        raise DataError(f"The caption of item '{record.id}' does not name its context as the synthetic world "
                        "writes it; regenerate the dataset with this version.")
    return swapped


def _auc(scores: np.ndarray, labels: list[int]) -> float:
    return metrics.compute_metrics(scores, labels, 0.0).roc_auc


def evaluate_model(loaded: LoadedModel, data: WorldData, settings: ProofSettings, cache: Path) -> Evaluation:
    """Every measure of the module docstring, for one model."""
    field_name = settings.text_field
    scoring = {"pixel_cache": PixelCache(cache / "pixels", loaded.preprocess),
               "options": ScoreOptions(batch_size=256, precision="fp32", decode_workers=1)}
    scores, _ = score_table(loaded, data.pairs("val", "test"), field_name, **scoring)
    report = evaluate_scores(scores, "f1-optimal", test_split="test", n_bootstrap=1000, source="eval/scores.csv")

    def similarities(items: list[ScoreItem]) -> np.ndarray:
        return score_pairs(loaded, items, **scoring).similarities.astype(np.float64)

    positives = data.positives("test").records
    names = data.world.names
    name_items = [ScoreItem(f"{r.id}:{k}", data.rows.image_path(r), swap_name(r.text(field_name), named(r), name))
                  for r in positives for k, name in enumerate(names)]
    chosen = similarities(name_items).reshape(len(positives), len(names)).argmax(axis=1)
    name_accuracy = float(np.mean([names[k] == r.extra["person"] for k, r in zip(chosen, positives)]))

    rng = np.random.default_rng(CONTEXT_NEGATIVE_SEED)
    contexts = data.world.contexts
    context_items = []
    for r in positives:
        text = anonymize(r.text(field_name), named(r))
        own = contexts.index(Context(r.extra["background"], r.extra["object"], r.extra["colour"]))
        other = contexts[(own + 1 + int(rng.integers(len(contexts) - 1))) % len(contexts)]
        path = data.rows.image_path(r)
        context_items += [ScoreItem(f"{r.id}:own", path, text),
                          ScoreItem(f"{r.id}:other", path, _other_context_caption(text, r, other))]
    context_auc = _auc(similarities(context_items), [1, 0] * len(positives))

    image_items = []
    for r in positives:
        negatives = data.image_negatives.get(image_id(r))
        if negatives is None:
            raise DataError(f"Test image '{image_id(r)}' has no image-side negatives in {data.rows.base_dir}; render "
                            "the world again with this version.")
        text = r.text(field_name)
        image_items += [ScoreItem(f"{r.id}:own", data.rows.image_path(r), text),
                        ScoreItem(f"{r.id}:person", data.rows.base_dir / negatives["other_image"], text),
                        ScoreItem(f"{r.id}:empty", data.rows.base_dir / negatives["empty_image"], text)]
    image = similarities(image_items).reshape(len(positives), 3)
    own, person, empty = image[:, 0], image[:, 1], image[:, 2]
    labels = [1] * len(positives) + [0] * len(positives)
    return Evaluation(scores, report, name_accuracy, context_auc,
                      image_auc_person=_auc(np.concatenate([own, person]), labels),
                      image_auc_empty=_auc(np.concatenate([own, empty]), labels))
