"""The results pages' queries and writes: one dataset's scores, labels and votes read into a
``cftclip_core.results.ResultsData`` (every statistic on it is computed in ``cftclip_core.results``), its data
version, one item's detail, and triage verdicts with the hard-cases export.

Scores come from stored score sets; nothing here computes an embedding. Gold follows ``annotations.review``
(a researcher's adjudication, else the annotators' majority; ties have none).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from annotations.db import write_session
from annotations.importer import get_dataset
from annotations.models import (
    TRIAGE_VERDICTS,
    GoldEvent,
    Item,
    Label,
    LabelEvent,
    Score,
    ScoreSet,
    TriageDecision,
    User,
    utcnow,
)
from annotations.review import gold_frame, labels_frame, review_item
from cftclip_core.results import REFERENCES, ResultsData, ResultsError, ScoreSetInfo, ThresholdChoice, predict

VERDICTS = {"model_wrong": "model wrong", "humans_wrong": "humans wrong", "ambiguous": "ambiguous",
            "broken_image": "broken image"}


assert tuple(VERDICTS) == TRIAGE_VERDICTS  # the database's list is the source of truth


MAX_NOTE_LENGTH = 2000


_COUNTERFACTUAL = re.compile(r"^counterfactual(_\d+)?$")



def data_version(session: Session, dataset_id: int) -> tuple[object, ...]:
    """Changes whenever anything the results pages show changes (scores, labels, gold, triage), so that
    caches keyed on it are never stale, whoever wrote (another page, an annotator, the command line)."""
    in_dataset = select(Item.id).where(Item.dataset_id == dataset_id).scalar_subquery()
    row = session.execute(select(
        select(func.count(ScoreSet.id)).where(ScoreSet.dataset_id == dataset_id).scalar_subquery(),
        select(func.max(ScoreSet.id)).where(ScoreSet.dataset_id == dataset_id).scalar_subquery(),
        select(func.count()).select_from(Item).where(Item.dataset_id == dataset_id).scalar_subquery(),
        select(func.count()).select_from(Label).where(Label.item_id.in_(in_dataset)).scalar_subquery(),
        select(func.max(LabelEvent.id)).where(LabelEvent.item_id.in_(in_dataset)).scalar_subquery(),
        select(func.max(GoldEvent.id)).where(GoldEvent.item_id.in_(in_dataset)).scalar_subquery(),
        select(func.count()).select_from(TriageDecision).where(TriageDecision.item_id.in_(in_dataset))
        .scalar_subquery(),
        select(func.max(TriageDecision.decided_at)).where(TriageDecision.item_id.in_(in_dataset)).scalar_subquery(),
    )).one()
    return tuple(row)


def _score_sets(session: Session, dataset_id: int) -> tuple[ScoreSetInfo, ...]:
    rows = session.scalars(select(ScoreSet).where(ScoreSet.dataset_id == dataset_id)
                           .order_by(ScoreSet.created_at.desc(), ScoreSet.id.desc()))
    return tuple(ScoreSetInfo(s.id, s.model_name, s.text_field, s.meaningless)
                 for s in rows)


def load_results(session: Session, dataset_id: int, reference: str = "gold") -> ResultsData:
    """Everything the results pages need about one dataset, in a handful of queries."""
    if reference not in REFERENCES:
        raise ResultsError(f"Unknown reference {reference!r}; use one of: {', '.join(REFERENCES)}.")
    get_dataset(session, dataset_id)
    items = pd.DataFrame(
        session.execute(select(Item.id, Item.external_id, Item.title, Item.summary, Item.split, Item.media_sha256,
                               Item.image_url, Item.source_label)
                        .where(Item.dataset_id == dataset_id).order_by(Item.position)).all(),
        columns=["item_id", "external_id", "title", "summary", "split", "media_sha256", "image_url", "source_label"])
    gold = gold_frame(session, dataset_id)  # the rules of gold live in annotations.review
    items = items.merge(gold[["item_id", "gold", "gold_method", "n_votes", "n_yes", "share_yes", "disagreement",
                              "flagged"]], on="item_id", how="left")
    if reference == "gold":
        items["reference"], items["reference_source"] = items["gold"], items["gold_method"]
    else:
        items["reference"] = items["source_label"].astype("Int64")
        items["reference_source"] = np.where(items["reference"].isna(), "none", "imported")
    items = items.drop(columns=["gold", "gold_method", "source_label"]).rename(
        columns={"disagreement": "annotators_disagree"})
    items["n_yes"] = items["n_yes"].fillna(0).astype(int)

    labels = labels_frame(session, dataset_id)
    annotators = tuple(sorted(labels["annotator"].unique()))
    if annotators:
        wide = labels.pivot(index="item_id", columns="annotator", values="value").astype("Int64")
        items = items.merge(wide.add_prefix("label_"), left_on="item_id", right_index=True, how="left")
    votes = labels.loc[labels["value"].notna(), ["item_id", "annotator", "value"]].astype({"value": int})

    score_sets = _score_sets(session, dataset_id)
    scores = pd.DataFrame(
        session.execute(select(Score.item_id, Score.score_set_id, Score.similarity)
                        .join(ScoreSet, ScoreSet.id == Score.score_set_id)
                        .where(ScoreSet.dataset_id == dataset_id)).all(),
        columns=["item_id", "score_set_id", "similarity"])
    wide_scores = scores.pivot(index="item_id", columns="score_set_id", values="similarity")
    for info in score_sets:
        column = wide_scores[info.id] if info.id in wide_scores.columns else pd.Series(dtype=float)
        items[info.column] = items["item_id"].map(column).astype(float)
    return ResultsData(dataset_id, reference, items.reset_index(drop=True), votes.reset_index(drop=True),
                       score_sets, annotators)



@dataclass(frozen=True)
class ItemDetail:
    item_id: int
    external_id: str
    title: str
    summary: str
    split: str | None
    media_sha256: str
    counterfactuals: tuple[str, ...]  # the counterfactual texts imported with a training item
    answers: pd.DataFrame = field(repr=False)  # each annotator's answer (review.review_item)


def item_detail(session: Session, item_id: int) -> ItemDetail:
    item, answers = review_item(session, item_id)
    extra = item.extra or {}
    counterfactuals = tuple(str(extra[k]) for k in sorted(extra) if _COUNTERFACTUAL.match(k)
                            and isinstance(extra[k], str) and extra[k].strip())
    return ItemDetail(item.id, item.external_id, item.title, item.summary, item.split, item.media_sha256,
                      counterfactuals, answers)



def triage_decisions(session: Session, score_set_id: int) -> pd.DataFrame:
    """The current verdicts on one score set's disagreements: ``item_id, verdict, note, decided_by, decided_at``."""
    rows = session.execute(
        select(TriageDecision.item_id, TriageDecision.verdict, TriageDecision.note, User.username,
               TriageDecision.decided_at)
        .outerjoin(User, User.id == TriageDecision.decided_by)
        .where(TriageDecision.score_set_id == score_set_id)).all()
    return pd.DataFrame(rows, columns=["item_id", "verdict", "note", "decided_by", "decided_at"])


def record_triage(factory: sessionmaker[Session], item_id: int, score_set_id: int, verdict: str, note: str,
                  researcher_id: int, threshold: ThresholdChoice) -> None:
    """Record (or replace) the verdict on one item's model/human disagreement for one score set, with the
    threshold in force (a disagreement is one only at a given threshold)."""
    note = (note or "").strip()
    if threshold.value is None:
        raise ResultsError("No threshold is in force, so there is no disagreement to judge; choose a threshold first.")
    if verdict not in TRIAGE_VERDICTS:
        raise ResultsError(f"A verdict is one of {', '.join(VERDICTS.values())}; got {verdict!r}.")
    if len(note) > MAX_NOTE_LENGTH:
        raise ResultsError(f"The note is {len(note)} characters long; keep it under {MAX_NOTE_LENGTH}.")
    with write_session(factory) as session:
        item, score_set = session.get(Item, item_id), session.get(ScoreSet, score_set_id)
        if item is None or score_set is None:
            raise ResultsError(f"No {'item' if item is None else 'score set'} with id "
                               f"{item_id if item is None else score_set_id}; it may have been deleted. Reload the page.")
        if item.dataset_id != score_set.dataset_id:
            raise ResultsError(f"Item {item_id} is not in the dataset score set #{score_set_id} scored; "
                               "pick the item from that score set's queue.")
        values = {"verdict": verdict, "note": note, "decided_by": researcher_id, "decided_at": utcnow(),
                  "threshold": threshold.value, "threshold_strategy": threshold.strategy}
        stmt = _dialect_insert(session.get_bind().dialect.name)(TriageDecision).values(
            item_id=item_id, score_set_id=score_set_id, **values)
        # One statement: two researchers deciding the same item at once cannot collide on the primary key.
        session.execute(stmt.on_conflict_do_update(index_elements=[TriageDecision.item_id, TriageDecision.score_set_id],
                                                   set_=values))


def _dialect_insert(dialect: str) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise ResultsError(f"Triage supports SQLite and PostgreSQL databases, not {dialect}; change CFTCLIP_DATABASE_URL.")
    return insert


def hard_cases(session: Session, dataset_id: int) -> pd.DataFrame:
    """Every triaged disagreement of a dataset, for a hard-cases evaluation set: the item (texts, image),
    the score set and its similarity, the threshold in force then and what the model said at it, the
    verdict with its note, who decided and when."""
    get_dataset(session, dataset_id)
    rows = session.execute(
        select(Item.external_id, Item.image_url, Item.media_sha256, Item.title, Item.summary, Item.split,
               ScoreSet.id, ScoreSet.model_name, ScoreSet.text_field, Score.similarity, TriageDecision.threshold,
               TriageDecision.threshold_strategy, TriageDecision.verdict, TriageDecision.note, User.username,
               TriageDecision.decided_at)
        .join(Item, Item.id == TriageDecision.item_id)
        .join(ScoreSet, ScoreSet.id == TriageDecision.score_set_id)
        .outerjoin(Score, (Score.item_id == TriageDecision.item_id) & (Score.score_set_id == TriageDecision.score_set_id))
        .outerjoin(User, User.id == TriageDecision.decided_by)
        .where(Item.dataset_id == dataset_id)
        .order_by(Item.position, ScoreSet.id)).all()
    frame = pd.DataFrame(rows, columns=["id", "image_url", "media_sha256", "title", "summary", "split",
                                        "score_set_id", "model", "text_field", "similarity", "threshold",
                                        "threshold_strategy", "verdict", "note", "decided_by", "decided_at"])
    frame.insert(1, "image", frame["image_url"].fillna("media/" + frame["media_sha256"]))
    for column in ("similarity", "threshold"):
        frame[column] = pd.to_numeric(frame[column])
    frame.insert(frame.columns.get_loc("threshold_strategy") + 1, "prediction",
                 predict(frame["similarity"], frame["threshold"]))
    return frame.drop(columns=["image_url", "media_sha256"])

