"""What researchers do with the labels: agreement, the review queue, gold labels, and export.

Gold is the majority vote by default; a researcher can settle an item (ties, disagreements, flags)
with a reason, which overrides the majority and is kept with its history in ``gold_events``.
Control items (``annotations.control``) do not change the gold: their known answers only measure
each annotator's accuracy. Annotators' own labels are never changed here.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from annotations.db import write_session
from annotations.importer import export_dataset, get_dataset
from annotations.models import GoldEvent, GoldLabel, Item, Label, User, utcnow
from annotations.settings import Settings
from cftclip_core import agreement
from cftclip_core.errors import CftClipError

MAX_REASON_LENGTH = 2000


class ReviewError(CftClipError):
    """A gold decision that cannot be recorded as asked."""


@dataclass
class ReviewSummary:
    report: agreement.AgreementReport
    annotators: pd.DataFrame  # one row per annotator: counts, speed, agreement with the others' majority
    streaks: pd.DataFrame  # runs of suspiciously fast votes
    n_items: int


def labels_frame(session: Session, dataset_id: int) -> pd.DataFrame:
    """Every current label of a dataset (skips included, value NaN), with the annotator's name."""
    rows = session.execute(
        select(Label.item_id, Item.external_id, User.username, Label.value, Label.reasons, Label.note,
               Label.flagged, Label.seconds_spent, Label.updated_at)
        .join(Item, Item.id == Label.item_id)
        .join(User, User.id == Label.user_id)
        .where(Item.dataset_id == dataset_id)
        .order_by(Label.updated_at)
    ).all()
    columns = ["item_id", "external_id", "annotator", "value", "reasons", "note", "flagged", "seconds", "at"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["value"] = frame["value"].astype("Int64")
    return frame


def votes_of(labels: pd.DataFrame) -> pd.DataFrame:
    """The yes/no votes (skips left out) in the shape the agreement statistics take."""
    votes = labels[labels["value"].notna()]
    return pd.DataFrame({"item_id": votes["item_id"], "annotator_id": votes["annotator"],
                         "value": votes["value"].astype(int)})


def review_summary(session: Session, dataset_id: int) -> ReviewSummary:
    get_dataset(session, dataset_id)
    labels = labels_frame(session, dataset_id)
    votes = votes_of(labels)
    speed = (labels.dropna(subset=["seconds"]).groupby("annotator")["seconds"].median()
             .rename("median_seconds").reset_index().rename(columns={"annotator": "annotator_id"}))
    annotators = agreement.annotator_stats(votes).merge(speed, on="annotator_id", how="left")
    events = labels[labels["value"].notna()].rename(columns={"annotator": "annotator_id"})
    n_items = session.query(Item).filter(Item.dataset_id == dataset_id).count()
    return ReviewSummary(agreement.agreement_report(votes), annotators, agreement.fast_streaks(events), n_items)


def gold_frame(session: Session, dataset_id: int) -> pd.DataFrame:
    """Per item: the vote counts, the majority, any researcher decision, and the gold in force."""
    items = pd.DataFrame(
        session.execute(select(Item.id, Item.external_id, Item.position).where(Item.dataset_id == dataset_id)
                        .order_by(Item.position)).all(),
        columns=["item_id", "external_id", "position"],
    )
    labels = labels_frame(session, dataset_id)
    majority = agreement.majority_vote(votes_of(labels)) if labels["value"].notna().any() else pd.DataFrame(
        columns=["item_id", "n_votes", "n_yes", "n_no", "share_yes", "majority", "tie"])
    flags = labels.groupby("item_id")["flagged"].any().rename("flagged").reset_index()
    decided = pd.DataFrame(
        session.execute(select(GoldLabel.item_id, GoldLabel.value, GoldLabel.reason, User.username)
                        .join(Item, Item.id == GoldLabel.item_id)
                        .outerjoin(User, User.id == GoldLabel.decided_by)
                        .where(Item.dataset_id == dataset_id)).all(),
        columns=["item_id", "adjudicated", "gold_reason", "decided_by"],
    )
    frame = items.merge(majority, on="item_id", how="left").merge(flags, on="item_id", how="left")
    frame = frame.merge(decided, on="item_id", how="left")
    frame["n_votes"] = frame["n_votes"].fillna(0).astype(int)
    frame["flagged"] = frame["flagged"].fillna(False).astype(bool)
    frame["majority"] = frame["majority"].astype("Int64")
    frame["adjudicated"] = frame["adjudicated"].astype("Int64")
    frame["gold"] = frame["adjudicated"].fillna(frame["majority"]).astype("Int64")
    frame["gold_method"] = "none"
    frame.loc[frame["majority"].notna(), "gold_method"] = "majority"
    frame.loc[frame["tie"].fillna(False).astype(bool), "gold_method"] = "tie"
    frame.loc[frame["adjudicated"].notna(), "gold_method"] = "adjudicated"
    frame["disagreement"] = (frame["n_yes"].fillna(0) > 0) & (frame["n_no"].fillna(0) > 0)
    return frame


def review_queue(session: Session, dataset_id: int, *, include_settled: bool = False) -> pd.DataFrame:
    """Items a researcher should look at (disagreement or a flag) that are not settled yet, in dataset
    order; with ``include_settled`` the settled ones too, after them (``decided`` tells them apart)."""
    gold = gold_frame(session, dataset_id)
    queue = gold[gold["disagreement"] | gold["flagged"]].copy()
    queue["decided"] = queue["adjudicated"].notna()
    if not include_settled:
        queue = queue[~queue["decided"]]
    return queue.sort_values(["decided", "position"]).reset_index(drop=True)


def review_item(session: Session, item_id: int) -> tuple[Item, pd.DataFrame]:
    """An item and each annotator's answer for it (for researchers only)."""
    item = session.get(Item, item_id)
    if item is None:
        raise ReviewError(f"No item with id {item_id}; it may have been deleted with its dataset.")
    rows = session.execute(
        select(User.username, Label.value, Label.reasons, Label.note, Label.flagged, Label.seconds_spent)
        .join(User, User.id == Label.user_id).where(Label.item_id == item_id).order_by(User.username)
    ).all()
    frame = pd.DataFrame(rows, columns=["annotator", "value", "reasons", "note", "flagged", "seconds"])
    frame["value"] = frame["value"].astype("Int64")
    return item, frame


def set_gold(factory: sessionmaker[Session], item_id: int, value: int | None, reason: str, researcher_id: int) -> None:
    """Settle an item's gold label (``value`` None withdraws a decision, back to the majority)."""
    reason = (reason or "").strip()
    if value not in (0, 1, None):
        raise ReviewError(f"A gold label is 0 or 1, not {value!r}.")
    if not reason:
        raise ReviewError("Say why you settle this item (e.g. 'face visible in the background'); a reason is required.")
    if len(reason) > MAX_REASON_LENGTH:
        raise ReviewError(f"The reason is {len(reason)} characters long; keep it under {MAX_REASON_LENGTH}.")
    with write_session(factory) as session:
        if session.get(Item, item_id) is None:
            raise ReviewError(f"No item with id {item_id}; it may have been deleted with its dataset.")
        current = session.get(GoldLabel, item_id)
        previous = current.value if current else None
        if value is None and current is None:
            return  # no decision to withdraw: nothing changes, nothing to log
        if value is None:
            session.delete(current)
        elif current is None:
            session.add(GoldLabel(item_id=item_id, value=value, method="adjudicated", reason=reason,
                                  decided_by=researcher_id, decided_at=utcnow()))
        else:
            current.value, current.reason, current.decided_by, current.decided_at = value, reason, researcher_id, utcnow()
        session.add(GoldEvent(item_id=item_id, value=value, previous_value=previous, reason=reason,
                              decided_by=researcher_id, at=utcnow()))


def export_table(session: Session, dataset_id: int) -> pd.DataFrame:
    """The dataset in NewsTT layout: ``label`` is the gold label, plus every annotator's label and
    how the gold was decided. Images are given by URL when imported from one, else by content hash."""
    gold = gold_frame(session, dataset_id)
    labels = labels_frame(session, dataset_id)
    wide = labels.pivot(index="item_id", columns="annotator", values="value") if not labels.empty else None
    items = pd.DataFrame(
        session.execute(select(Item.id, Item.external_id, Item.image_url, Item.media_sha256, Item.title, Item.summary,
                               Item.split, Item.source_label).where(Item.dataset_id == dataset_id)
                        .order_by(Item.position)).all(),
        columns=["item_id", "id", "image_url", "media_sha256", "title", "summary", "split", "source_label"],
    )
    table = items.merge(gold[["item_id", "gold", "gold_method", "gold_reason", "n_votes", "n_yes", "flagged"]],
                        on="item_id", how="left")
    table["image"] = table["image_url"].fillna("media/" + table["media_sha256"])
    table["label"] = table["gold"]
    table["source_label"] = table["source_label"].astype("Int64")
    table["n_yes"] = table["n_yes"].fillna(0).astype(int)
    columns = ["id", "image", "title", "summary", "label", "split", "gold_method", "gold_reason", "n_votes", "n_yes",
               "flagged", "source_label"]
    table = table.set_index("item_id")[columns]
    if wide is not None:
        table = table.join(wide.add_prefix("label_").astype("Int64"))
    return table.reset_index(drop=True)


def export_labels(session: Session, dataset_id: int, path: str | Path, media: Settings | None = None) -> Path:
    """Write the labelled dataset (gold as ``label``, every annotator's label as ``label_<name>``)
    as CSV or JSONL with its images in ``images/`` beside it."""
    table = export_table(session, dataset_id)
    extra = table.drop(columns=["id", "image", "title", "summary", "label", "split"]).to_dict("records")
    by_external = dict(zip(table["id"], extra))
    gold = dict(zip(table["id"], table["label"]))
    return export_dataset(session, dataset_id, path, media, extra_by_id=by_external, label_by_id=gold)


def export_archive(session: Session, dataset_id: int, settings: Settings) -> bytes:
    """The labelled dataset as one ZIP: ``labels.csv`` (as ``export_labels`` writes it) and its images
    in ``images/``. Built in a scratch folder of the instance's cache."""
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.cache_dir, prefix="export-") as scratch:
        folder = Path(scratch)
        export_labels(session, dataset_id, folder / "labels.csv", settings)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(folder.rglob("*")):
                if file.is_file():
                    archive.write(file, file.relative_to(folder).as_posix())
    return buffer.getvalue()
