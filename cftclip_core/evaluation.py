"""Scores files and their evaluation, shared by the ``score``/``eval`` commands and by training.

A scores file is a CSV with one row per pair: ``id, split, label, similarity, truncated`` plus the
model's name and fingerprint. ``evaluate_scores`` picks the threshold on the validation rows and
reports the metrics of DESIGN.md on the others.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cftclip_core import metrics
from cftclip_core.embedding_cache import EmbeddingCache
from cftclip_core.errors import CftClipError, DataError
from cftclip_core.formats import Record, Table, problems_message
from cftclip_core.images import PixelCache
from cftclip_core.models import LoadedModel
from cftclip_core.scoring import Progress, ScoreItem, ScoreOptions, ScoreRun, score_pairs

SCORE_COLUMNS = ["id", "split", "label", "similarity", "truncated", "image_sha256", "model", "model_fingerprint",
                 "text_field"]


def score_records(
    loaded: LoadedModel,
    records: Sequence[Record],
    image_paths: Sequence[Path],
    text_field: str,
    *,
    cache: EmbeddingCache | None = None,
    pixel_cache: PixelCache | None = None,
    options: ScoreOptions = ScoreOptions(),
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, ScoreRun]:
    """Score each record's image against its text; the scores-file frame and the run's details."""
    items = [ScoreItem(r.id, path, r.text(text_field)) for r, path in zip(records, image_paths)]
    run = score_pairs(loaded, items, cache=cache, pixel_cache=pixel_cache, options=options, progress=progress)
    frame = pd.DataFrame({
        "id": run.keys,
        "split": [r.split for r in records],
        "label": pd.array([r.label for r in records], dtype="Int64"),
        "similarity": run.similarities,
        "truncated": run.truncated,
        "image_sha256": run.image_sha256,
        "model": loaded.name,
        "model_fingerprint": loaded.fingerprint,
        "text_field": text_field,
    })
    return frame, run


def score_table(loaded: LoadedModel, table: Table, text_field: str, **kwargs: Any) -> tuple[pd.DataFrame, ScoreRun]:
    """``score_records`` over a table whose images are local files."""
    return score_records(loaded, table.records, [table.image_path(r) for r in table.records], text_field, **kwargs)


def read_scores(path: Path) -> pd.DataFrame:
    """A scores file, with ``label`` (0, 1 or empty) and ``similarity`` (finite) checked."""
    if not path.is_file():
        raise CftClipError(f"No scores file at '{path}': write one with `python -m cftclip_core score`.")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise CftClipError(f"Cannot read '{path}' as a UTF-8 CSV scores file ({exc}); write it with 'score'.") from None
    missing = {"id", "similarity", "label", "split"} - set(frame.columns)
    if missing:
        raise CftClipError(f"'{path}' lacks column(s) {', '.join(sorted(missing))}; is it a scores file from 'score'?")
    label_text = frame["label"].str.strip()
    labels = pd.to_numeric(label_text, errors="coerce")
    bad_label = (label_text != "") & ~labels.isin([0, 1])
    similarity = pd.to_numeric(frame["similarity"].str.strip(), errors="coerce")
    bad_similarity = ~np.isfinite(similarity.to_numpy(dtype=float))
    problems = sorted(
        (int(row), column, f"'{value}' {reason}")
        for column, bad, reason in (("label", bad_label, "is not 0 or 1 (leave it empty if unlabelled)"),
                                    ("similarity", bad_similarity, "is not a finite number"))
        for row, value in zip(np.flatnonzero(bad) + 1, frame[column][bad])
    )
    if problems:
        raise DataError(problems_message(
            f"'{path}' has {len(problems)} bad value(s); nothing was evaluated. Correct them, or score again "
            "with `python -m cftclip_core score`.",
            [f"row {row}, column '{column}': {reason}" for row, column, reason in problems]))
    split = frame["split"].str.strip()
    frame["split"] = split.mask(split == "")
    frame["label"] = labels.astype("Int64")
    frame["similarity"] = similarity.astype(float)
    return frame


def evaluate_scores(
    scores: pd.DataFrame,
    threshold: str | float,
    *,
    val: pd.DataFrame | None = None,
    val_split: str = "val",
    test_split: str | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    source: str = "the scores",
    threshold_from: str | None = None,
) -> dict[str, Any]:
    """The evaluation report as a JSON-ready dict.

    The threshold comes from ``val`` or, without it, from the rows whose split is ``val_split``;
    the metrics from the remaining rows (only those of ``test_split`` if given). ``threshold_from``
    names that source in the report (``train-val``: the training run's validation pairs; ``eval-val``:
    the evaluated table's own 'val' rows).
    """
    if val is not None:
        test, where = scores, "no rows in the validation scores given"
    else:
        is_val = scores["split"] == val_split
        val, test = scores[is_val], scores[~is_val]
        where = f"no rows with split '{val_split}' in {source}"
    if val.empty and isinstance(threshold, str):
        raise CftClipError(
            f"The {threshold} threshold needs validation scores, but there are {where}; give validation "
            "scores (--val FILE or --val-split NAME), or a number as the threshold."
        )
    if test_split is not None:
        test = test[test["split"] == test_split]
    if test.empty:
        raise CftClipError("No rows to evaluate: check the test split and the split column of the scores.")
    if test["label"].isna().any():
        raise CftClipError(
            f"{int(test['label'].isna().sum())} evaluated row(s) have no label; label them or choose "
            "labelled rows with the test split."
        )
    val_labels = None if val["label"].isna().any() else val["label"].to_numpy(dtype=int)
    chosen = metrics.choose_threshold(threshold, val["similarity"].to_numpy(float), val_labels)
    report = metrics.evaluate(test["similarity"].to_numpy(float), test["label"].to_numpy(dtype=int), chosen,
                              n_bootstrap=n_bootstrap, seed=seed)
    return {"scores": source, "n_validation": int(len(val)), "threshold_from": threshold_from, **report.to_dict()}


def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (a temporary file renamed over the target): a reader, such as the jobs'
    reconciler, never sees half a file, and a full disk leaves the previous file in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_evaluable(table: Table, source: str) -> None:
    """Refuse, before any training, an evaluation table without a single label."""
    if not any(r.label is not None for r in table.records):
        raise DataError(f"The evaluation table {source} has no labels (column 'label' empty or missing), so no "
                        "metric can be computed; label it (e.g. in the app's Annotate page) or leave out --eval.")


def evaluate_checkpoint(
    model_dir: Path,
    table: Table,
    out_dir: Path,
    *,
    text_field: str,
    threshold: str | float,
    threshold_from: str | None = None,
    val_table: Table | None = None,
    device: str | None = None,
    precision: str = "fp32",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Score ``table`` with the model in ``model_dir``; write ``scores.csv`` and ``metrics.json`` in ``out_dir``.

    ``threshold_from`` says where the threshold is chosen: ``train-val`` scores ``val_table`` (the training
    run's validation pairs: the original code's val-median is the median score of those matched pairs),
    ``eval-val`` uses ``table``'s own 'val' rows (labelled, e.g. for f1-optimal); None for a fixed number.
    Metrics cover the labelled rows outside the 'val' split; every row is scored, in ``precision`` (fp32
    unless bf16 is asked for).
    """
    from cftclip_core.models import load_model  # heavy; only evaluation needs it here

    check_threshold_source(table, threshold, threshold_from, val_table)
    loaded = load_model(str(model_dir), device=device)
    options = ScoreOptions(precision=precision)
    frame, _ = score_table(loaded, table, text_field, options=options)
    out_dir.mkdir(parents=True, exist_ok=True)
    scores_path = out_dir / "scores.csv"
    frame.to_csv(scores_path, index=False)
    labelled = frame[frame["label"].notna() & (frame["split"] != "val")]
    if threshold_from == "train-val":
        val, _ = score_table(loaded, val_table, text_field, options=options)  # type: ignore[arg-type]
        report = evaluate_scores(labelled, threshold, val=val, n_bootstrap=n_bootstrap, seed=seed,
                                 source=str(scores_path), threshold_from=threshold_from)
    else:
        scored = frame[(frame["split"] == "val") | (frame["label"].notna())]
        report = evaluate_scores(scored, threshold, n_bootstrap=n_bootstrap, seed=seed, source=str(scores_path),
                                 threshold_from=threshold_from)
    report["precision"] = precision
    write_json(out_dir / "metrics.json", report)
    return report


def check_threshold_source(table: Table, threshold: str | float, threshold_from: str | None,
                           val_table: Table | None) -> None:
    """Refuse, before any training or scoring, a threshold whose source cannot give it."""
    if not isinstance(threshold, str):
        return
    if threshold_from == "eval-val" and not any(r.split == "val" for r in table.records):
        raise DataError(f"threshold_from='eval-val' takes the {threshold} threshold from the evaluation table's 'val' "
                        "rows, but it has none; use threshold_from='train-val' (the training run's validation pairs) "
                        "or give the evaluation table 'val' rows.")
    if threshold_from == "train-val":
        if val_table is None:
            raise DataError("threshold_from='train-val' needs the training run's validation table.")
        if threshold == "f1-optimal" and not any(r.label is not None for r in val_table.records):
            raise DataError("The f1-optimal threshold needs labelled validation pairs, but the training run's "
                            "validation table has no labels; use threshold_from='eval-val' (the evaluation table's "
                            "labelled 'val' rows) or the val-median threshold.")
