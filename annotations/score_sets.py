"""Score sets: one model's similarities over a dataset, stored so that pages never recompute them."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd
from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from annotations.db import write_session
from annotations.importer import get_dataset
from annotations.models import Item, Score, ScoreSet, utcnow
from cftclip_core.errors import DataError
from cftclip_core.formats import check_text_field


def store_score_set(
    factory: sessionmaker[Session],
    dataset_id: int,
    model_name: str,
    fingerprint: str,
    text_field: str,
    scores: Mapping[int, tuple[float, bool]],
    *,
    note: str = "",
    meaningless: bool = False,
) -> ScoreSet:
    """Save one model run: ``scores`` maps item id -> (similarity, text was truncated); ``meaningless``: the
    model has random weights (the tiny offline model), so the scores carry no meaning."""
    with write_session(factory) as session:
        return add_score_set(session, dataset_id, model_name, fingerprint, text_field, scores, note=note,
                             meaningless=meaningless)


def add_score_set(
    session: Session,
    dataset_id: int,
    model_name: str,
    fingerprint: str,
    text_field: str,
    scores: Mapping[int, tuple[float, bool]],
    *,
    note: str = "",
    meaningless: bool = False,
    train_run_id: int | None = None,
) -> ScoreSet:
    """``store_score_set`` inside the caller's write transaction (e.g. with a training run's results)."""
    check_text_field(text_field)
    if not scores:
        raise DataError("No scores to store: score at least one item of the dataset.")
    bad = [item_id for item_id, (similarity, _) in scores.items() if not math.isfinite(float(similarity))]
    if bad:
        raise DataError(
            f"{len(bad)} similarity value(s) are not finite numbers (e.g. item id {bad[0]}); "
            "the model produced NaN or infinity. Check the model and its inputs, then score again."
        )
    get_dataset(session, dataset_id)
    known = set(session.scalars(select(Item.id).where(Item.dataset_id == dataset_id)))
    foreign = [i for i in scores if i not in known]
    if foreign:
        raise DataError(
            f"{len(foreign)} scored item id(s) (e.g. {foreign[0]}) are not items of dataset {dataset_id}; "
            "score the items of the dataset you store the scores for."
        )
    score_set = ScoreSet(
        dataset_id=dataset_id,
        model_name=model_name,
        model_fingerprint=fingerprint,
        text_field=text_field,
        created_at=utcnow(),
        n_items=len(scores),
        n_truncated=sum(bool(t) for _, t in scores.values()),
        note=note,
        meaningless=meaningless,
        train_run_id=train_run_id,
    )
    session.add(score_set)
    session.flush()
    session.execute(
        insert(Score),
        [
            {"score_set_id": score_set.id, "item_id": item_id, "similarity": float(sim), "truncated": bool(trunc)}
            for item_id, (sim, trunc) in scores.items()
        ],
    )
    return score_set


def score_sets_for(session: Session, dataset_id: int) -> list[ScoreSet]:
    """Score sets of a dataset, newest first."""
    return list(
        session.scalars(
            select(ScoreSet).where(ScoreSet.dataset_id == dataset_id).order_by(ScoreSet.created_at.desc(), ScoreSet.id.desc())
        )
    )


def scores_frame(session: Session, score_set_id: int) -> pd.DataFrame:
    """One row per scored item, in the dataset's order, with what evaluation needs beside the score."""
    if session.get(ScoreSet, score_set_id) is None:
        raise DataError(f"No score set with id {score_set_id}; pick one from the dataset's score sets.")
    rows = session.execute(
        select(Score.item_id, Item.external_id, Score.similarity, Score.truncated, Item.split, Item.source_label)
        .join(Item, Item.id == Score.item_id)
        .where(Score.score_set_id == score_set_id)
        .order_by(Item.position)
    ).all()
    frame = pd.DataFrame(rows, columns=["item_id", "external_id", "similarity", "truncated", "split", "source_label"])
    frame["source_label"] = frame["source_label"].astype("Int64")
    frame["truncated"] = frame["truncated"].astype(bool)
    return frame


def is_meaningless(score_set: ScoreSet) -> bool:
    """True for scores of the tiny offline model, which the UI must flag wherever they appear."""
    return score_set.meaningless


def score_set_median(session: Session, score_set_id: int) -> float:
    """The median similarity of a score set: a label-free default threshold (like val-median)."""
    return float(scores_frame(session, score_set_id)["similarity"].median())
