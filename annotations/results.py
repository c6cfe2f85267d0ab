"""What the results pages show: every model's similarity beside the humans' labels, ready to chart.

Scores come from stored score sets; nothing here computes an embedding. Labels are compared with a
*reference*: ``gold`` is the gold label in force as ``annotations.review`` decides it (a researcher's
adjudication, else the annotators' majority; ties have none), ``imported`` is the label column of the
imported file. Thresholds follow ``cftclip_core.metrics``: ``val-median`` (median similarity of the items
whose split is ``val``, label-free), ``f1-optimal`` (best F1 on the labelled ``val`` items) or a number.
Items are predicted 1 iff similarity > threshold. Metrics are computed on the *evaluated* items: by
default every labelled item outside the ``val`` split (all items when the dataset has no ``val`` split).

Chart data is aggregated here (histograms, curves thinned to a few hundred points), so charts stay far
below Altair's 5,000-row limit whatever the size of the dataset.
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
    TRIAGE_VERDICTS, GoldEvent, Item, Label, LabelEvent, Score, ScoreSet, TriageDecision, User, utcnow,
)
from annotations.review import gold_frame, labels_frame, review_item
from annotations.score_sets import is_meaningless
from cftclip_core import metrics
from cftclip_core.errors import CftClipError, EvaluationError

REFERENCES = {"gold": "gold (adjudicated, else the annotators' majority)", "imported": "the imported file's label"}
VALIDATION_SPLIT = "val"  # the split thresholds are tuned on, as in ``python -m cftclip_core eval``
OUTSIDE_VALIDATION = "every item outside the val split"
ALL_ITEMS = "all items"
STRATEGIES = ("val-median", "f1-optimal")
CELLS = {"TP": "model 1, reference 1", "FP": "model 1, reference 0", "FN": "model 0, reference 1",
         "TN": "model 0, reference 0"}
VERDICTS = {"model_wrong": "model wrong", "humans_wrong": "humans wrong", "ambiguous": "ambiguous",
            "broken_image": "broken image"}
assert tuple(VERDICTS) == TRIAGE_VERDICTS  # the database's list is the source of truth
MAX_NOTE_LENGTH = 2000
CURVE_POINTS = 300
HISTOGRAM_BINS = 40
_COUNTERFACTUAL = re.compile(r"^counterfactual(_\d+)?$")


class ResultsError(CftClipError):
    """A results view or a triage verdict that cannot be produced or recorded as asked."""


# --- loading ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreSetInfo:
    id: int
    model_name: str
    text_field: str
    meaningless: bool  # the tiny offline model's scores

    @property
    def column(self) -> str:
        return f"sim_{self.id}"

    @property
    def name(self) -> str:
        return f"#{self.id} {self.model_name} on {self.text_field}" + (" (tiny model: meaningless)"
                                                                        if self.meaningless else "")


@dataclass(frozen=True)
class ResultsData:
    """One dataset: an ``items`` frame with every score set's similarity and the reference label, and
    the annotators' votes.

    ``items`` columns: item_id, external_id, title, summary, split, media_sha256, image_url, reference
    (Int64, NA = none), reference_source (adjudicated, majority, tie, none or imported), n_votes, n_yes,
    share_yes, annotators_disagree, flagged, ``label_<annotator>`` per annotator and ``sim_<id>`` per score
    set (NaN where that set scored no such item). ``votes``: item_id, annotator, value (skips left out).
    """

    dataset_id: int
    reference: str
    items: pd.DataFrame = field(repr=False)
    votes: pd.DataFrame = field(repr=False)
    score_sets: tuple[ScoreSetInfo, ...]
    annotators: tuple[str, ...]

    def score_set(self, score_set_id: int) -> ScoreSetInfo:
        for info in self.score_sets:
            if info.id == score_set_id:
                return info
        raise ResultsError(f"Score set #{score_set_id} does not belong to this dataset; pick one from its list.")

    def subsets(self) -> list[str]:
        """What the metrics can be computed on: the default, all items, then each split."""
        splits = sorted(s for s in self.items["split"].dropna().unique())
        return [OUTSIDE_VALIDATION, ALL_ITEMS, *splits] if splits else [ALL_ITEMS]


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
    return tuple(ScoreSetInfo(s.id, s.model_name, s.text_field, is_meaningless(s))
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


# --- thresholds and evaluated items -------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold and where it came from; ``value`` None when the strategy cannot be applied (``note``)."""

    strategy: str
    value: float | None
    n_val: int = 0
    note: str = ""


def choose_threshold(data: ResultsData, score_set_id: int, strategy: str | float) -> ThresholdChoice:
    """The threshold of one score set under a strategy (see the module docstring)."""
    similarity = data.items[data.score_set(score_set_id).column]
    scored = similarity.notna()
    if not scored.any():
        return ThresholdChoice(str(strategy), None, note="this score set scored none of the dataset's items")
    if not isinstance(strategy, str):
        return ThresholdChoice("fixed", metrics.choose_threshold(float(strategy)).value)
    is_val = scored & (data.items["split"] == VALIDATION_SPLIT)
    if strategy == "val-median":
        if not is_val.any():
            value = float(similarity[scored].median())
            return ThresholdChoice(strategy, value, 0, f"no scored item in the '{VALIDATION_SPLIT}' split: the "
                                                       f"median of all {int(scored.sum())} scored items")
        chosen = metrics.choose_threshold(strategy, similarity[is_val].to_numpy())
        return ThresholdChoice(strategy, chosen.value, chosen.n_val)
    if strategy == "f1-optimal":
        labelled = is_val & data.items["reference"].notna()
        try:
            chosen = metrics.choose_threshold(strategy, similarity[labelled].to_numpy(),
                                              data.items.loc[labelled, "reference"].to_numpy(dtype=int))
        except EvaluationError:
            return ThresholdChoice(strategy, None, int(labelled.sum()),
                                   f"f1-optimal needs labelled items of both classes in the '{VALIDATION_SPLIT}' "
                                   "split; label some, or use val-median or your own threshold")
        return ThresholdChoice(strategy, chosen.value, chosen.n_val)
    raise ResultsError(f"Unknown threshold strategy {strategy!r}; use {', '.join(STRATEGIES)} or a number.")


def evaluated(data: ResultsData, score_set_id: int, subset: str = OUTSIDE_VALIDATION) -> pd.DataFrame:
    """The scored items of ``subset`` with their similarity (``similarity``) and reference (NA kept)."""
    items = data.items
    if subset == OUTSIDE_VALIDATION:
        keep = items["split"] != VALIDATION_SPLIT  # NaN splits compare unequal: kept
    elif subset == ALL_ITEMS:
        keep = pd.Series(True, index=items.index)
    else:
        keep = items["split"] == subset
    column = data.score_set(score_set_id).column
    frame = items[keep & items[column].notna()].copy()
    frame["similarity"] = frame[column]
    return frame


def labelled(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, 0/1 reference labels) of the items of ``frame`` that have a reference label."""
    known = frame[frame["reference"].notna()]
    return known["similarity"].to_numpy(dtype=float), known["reference"].to_numpy(dtype=int)


def predict(similarity: pd.Series, threshold: float | pd.Series) -> pd.Series:
    """The model's answer (Int64): 1 where the similarity is above the threshold, else 0; NA where either is
    missing. ``threshold`` is one number or one per row."""
    threshold = pd.Series(threshold, index=similarity.index, dtype=float)
    return (similarity > threshold).astype("Int64").mask(similarity.isna() | threshold.isna())


def with_predictions(frame: pd.DataFrame, threshold: float | None) -> pd.DataFrame:
    """``frame`` (with ``similarity``) plus ``prediction`` (Int64) and ``model_disagrees`` (model vs reference)."""
    out = frame.copy()
    out["prediction"] = predict(out["similarity"], float("nan") if threshold is None else threshold)
    out["model_disagrees"] = (out["prediction"] != out["reference"]).fillna(False).astype(bool)
    return out


# --- the Articles table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArticleFilter:
    splits: tuple[str, ...] = ()  # empty: every split
    references: tuple[int | None, ...] = ()  # 1, 0 and None (no label); empty: all
    predictions: tuple[int, ...] = ()  # empty: all
    disagreement: str = "any"  # any | annotators (they disagree) | model (model vs reference) | either | none
    flagged_only: bool = False
    text: str = ""  # case-insensitive, in the title, summary or id


DISAGREEMENTS = {"any": "no filter", "annotators": "annotators disagree", "model": "model vs reference",
                 "either": "either", "none": "no disagreement"}


def articles(data: ResultsData, score_set_id: int | None, threshold: float | None) -> pd.DataFrame:
    """Every item with the similarity of one score set (NaN without one), its prediction, and a
    ``disagreement`` marker: annotators (they disagree), model (with the reference), both, or empty."""
    frame = data.items.copy()
    frame["similarity"] = frame[data.score_set(score_set_id).column] if score_set_id is not None else float("nan")
    frame = with_predictions(frame, threshold if score_set_id is not None else None)
    frame["disagreement"] = np.select(
        [frame["annotators_disagree"] & frame["model_disagrees"], frame["annotators_disagree"],
         frame["model_disagrees"]], ["both", "annotators", "model"], "")
    return frame


def filter_articles(frame: pd.DataFrame, wanted: ArticleFilter) -> pd.DataFrame:
    """Rows of an articles frame (``with_predictions`` applied) that match every condition given."""
    keep = pd.Series(True, index=frame.index)
    if wanted.splits:
        keep &= frame["split"].isin(wanted.splits)
    if wanted.references:
        known = [v for v in wanted.references if v is not None]
        keep &= frame["reference"].isin(known).fillna(False).astype(bool) | (
            frame["reference"].isna() if None in wanted.references else False)
    if wanted.predictions:
        keep &= frame["prediction"].isin(list(wanted.predictions)).fillna(False).astype(bool)
    marker = {"annotators": frame["annotators_disagree"], "model": frame["model_disagrees"],
              "either": frame["annotators_disagree"] | frame["model_disagrees"],
              "none": ~(frame["annotators_disagree"] | frame["model_disagrees"])}.get(wanted.disagreement)
    if marker is not None:
        keep &= marker
    if wanted.flagged_only:
        keep &= frame["flagged"]
    text = wanted.text.strip().lower()
    if text:
        haystack = frame["title"].str.lower() + "\n" + frame["summary"].str.lower() + "\n" + \
            frame["external_id"].str.lower()
        keep &= haystack.str.contains(text, regex=False)
    return frame[keep]


def model_similarities(data: ResultsData, item_id: int, thresholds: dict[int, ThresholdChoice]) -> pd.DataFrame:
    """One row per score set for one item: similarity, threshold in force, prediction (for the detail view)."""
    row = data.items[data.items["item_id"] == item_id]
    if row.empty:
        raise ResultsError(f"No item with id {item_id} in this dataset; pick one from the table.")
    records = []
    for info in data.score_sets:
        similarity = row.iloc[0][info.column]
        threshold = thresholds.get(info.id, ThresholdChoice("", None)).value
        scored = not pd.isna(similarity)
        records.append({"score_set": info.name, "similarity": float(similarity) if scored else None,
                        "threshold": threshold,
                        "prediction": int(similarity > threshold) if scored and threshold is not None else None})
    return pd.DataFrame(records, columns=["score_set", "similarity", "threshold", "prediction"])


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


# --- thresholds: curves, histograms, metrics, agreement ---------------------------------------------------


def kappa_from_counts(tp: np.ndarray, fp: np.ndarray, tn: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """Cohen's kappa of two binary raters from their 2x2 table (NaN where chance agreement is 1 or n = 0)."""
    tp, fp, tn, fn = (np.asarray(x, dtype=float) for x in (tp, fp, tn, fn))
    n = tp + fp + tn + fn
    with np.errstate(divide="ignore", invalid="ignore"):
        observed = (tp + tn) / n
        expected = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / (n * n)
        kappa = (observed - expected) / (1.0 - expected)
    return np.where((n > 0) & (expected < 1.0 - 1e-12), kappa, np.nan)


def threshold_curves(scores: np.ndarray, labels: np.ndarray, max_points: int = CURVE_POINTS) -> pd.DataFrame:
    """Precision, recall, F1, accuracy, kappa vs the labels, and ROC coordinates at each threshold, thinned
    to at most ``max_points`` rows (the best-F1 row always kept). Thresholds ascending."""
    sweep = metrics.threshold_sweep(scores, labels).to_frame()
    n_pos, n_neg = int(labels.sum()), int(labels.size - labels.sum())
    sweep["kappa"] = kappa_from_counts(sweep["tp"], sweep["fp"], sweep["tn"], sweep["fn"])
    sweep["tpr"] = sweep["tp"] / n_pos if n_pos else np.nan
    sweep["fpr"] = sweep["fp"] / n_neg if n_neg else np.nan
    keep = np.unique(np.r_[np.linspace(0, len(sweep) - 1, min(max_points, len(sweep))).round().astype(int),
                           int(sweep["f1"].to_numpy().argmax())])
    return sweep.iloc[keep].reset_index(drop=True)


def label_name(value: object) -> str:
    return "unlabelled" if pd.isna(value) else f"{int(value)}"


def similarity_histogram(frame: pd.DataFrame, bins: int = HISTOGRAM_BINS) -> pd.DataFrame:
    """Counts of items per similarity bin and reference label (1, 0, unlabelled): ``bin_start, bin_end,
    reference, count``; the same bins for every label."""
    values = frame["similarity"].to_numpy(dtype=float)
    if values.size == 0:
        return pd.DataFrame(columns=["bin_start", "bin_end", "reference", "count"])
    low, high = float(values.min()), float(values.max())
    edges = np.linspace(low, high if high > low else low + 1e-6, bins + 1)
    parts = []
    for name, group in frame.groupby(frame["reference"].map(label_name), sort=True):
        counts, _ = np.histogram(group["similarity"].to_numpy(dtype=float), bins=edges)
        parts.append(pd.DataFrame({"bin_start": edges[:-1], "bin_end": edges[1:], "reference": name,
                                   "count": counts}))
    return pd.concat(parts, ignore_index=True)


def metrics_at(scores: np.ndarray, labels: np.ndarray, thresholds: dict[str, float]) -> pd.DataFrame:
    """One row per named threshold: the library's metrics at it, plus kappa against the labels."""
    rows = []
    for name, value in thresholds.items():
        m = metrics.compute_metrics(scores, labels, value)
        rows.append({"threshold_name": name, "threshold": value, "f1": m.f1, "macro_f1": m.macro_f1,
                     "precision": m.precision, "recall": m.recall, "accuracy": m.accuracy,
                     "kappa": float(kappa_from_counts(m.tp, m.fp, m.tn, m.fn)),
                     "tp": m.tp, "fp": m.fp, "tn": m.tn, "fn": m.fn})
    return pd.DataFrame(rows)


def _agreement_rows(pairs: pd.DataFrame, mine: str, theirs: str, prefix: str) -> pd.DataFrame:
    """Per annotator: items compared, share agreeing and Cohen's kappa of column ``mine`` vs ``theirs``."""
    def one(group: pd.DataFrame) -> pd.Series:
        a, b = group[mine].to_numpy(dtype=int), group[theirs].to_numpy(dtype=int)
        tp, fp = np.sum((a == 1) & (b == 1)), np.sum((a == 1) & (b == 0))
        fn, tn = np.sum((a == 0) & (b == 1)), np.sum((a == 0) & (b == 0))
        return pd.Series({f"n_{prefix}": len(group), f"agreement_{prefix}": float(np.mean(a == b)),
                          f"kappa_{prefix}": float(kappa_from_counts(tp, fp, tn, fn))})

    if pairs.empty:
        return pd.DataFrame(columns=["annotator", f"n_{prefix}", f"agreement_{prefix}", f"kappa_{prefix}"])
    out = pairs.groupby("annotator")[[mine, theirs]].apply(one).reset_index()
    return out.astype({f"n_{prefix}": int})


def human_agreement(data: ResultsData, item_ids: pd.Series | None = None) -> pd.DataFrame:
    """Each annotator against the reference: ``annotator, n_reference, agreement_reference, kappa_reference``.

    Where the gold is a majority vote, an annotator is compared with the majority of the OTHER annotators
    (leave-one-out, strict majorities only), so that nobody agrees with their own vote; adjudicated and
    imported labels are used as they are. ``item_ids`` restricts the items compared.
    """
    votes = data.votes if item_ids is None else data.votes[data.votes["item_id"].isin(item_ids)]
    pairs = votes.merge(data.items[["item_id", "reference", "reference_source", "n_votes", "n_yes"]], on="item_id")
    if data.reference == "gold":
        others_yes = pairs["n_yes"] - pairs["value"]
        others_no = (pairs["n_votes"] - pairs["n_yes"]) - (1 - pairs["value"])
        loo = pd.Series(np.where(others_yes > others_no, 1, np.where(others_no > others_yes, 0, -1)),
                        index=pairs.index)
        majority_rows = pairs["reference_source"] != "adjudicated"
        pairs["reference"] = pairs["reference"].astype("Float64").mask(majority_rows, loo.where(loo >= 0))
    pairs = pairs[pairs["reference"].notna()]
    return _agreement_rows(pairs, "value", "reference", "reference")


def model_agreement_with_annotators(data: ResultsData, frame: pd.DataFrame) -> pd.DataFrame:
    """Each annotator against the model (``frame`` from ``with_predictions``): ``annotator, n_model,
    agreement_model, kappa_model``."""
    pairs = data.votes.merge(frame[["item_id", "prediction"]], on="item_id")
    return _agreement_rows(pairs[pairs["prediction"].notna()], "value", "prediction", "model")


def human_ceiling(agreement: pd.DataFrame) -> float:
    """The mean of the annotators' kappa against the reference (NaN when none is defined)."""
    kappas = agreement["kappa_reference"].dropna() if "kappa_reference" in agreement else pd.Series(dtype=float)
    return float(kappas.mean()) if not kappas.empty else float("nan")


# --- disagreement: confusion cells, points, triage --------------------------------------------------------


def confusion_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (with predictions) restricted to labelled, predicted items, with its ``cell`` (TP, FP, FN, TN)."""
    known = frame[frame["reference"].notna() & frame["prediction"].notna()].copy()
    prediction, reference = known["prediction"].astype(int), known["reference"].astype(int)
    known["cell"] = np.select([(prediction == 1) & (reference == 1), (prediction == 1) & (reference == 0),
                               (prediction == 0) & (reference == 1)], ["TP", "FP", "FN"], "TN")
    return known


def confusion_counts(cells: pd.DataFrame) -> pd.DataFrame:
    """The 2x2 table as four rows: ``cell, model, reference, count``."""
    counts = cells["cell"].value_counts()
    return pd.DataFrame([{"cell": c, "model": int(c in ("TP", "FP")), "reference": int(c in ("TP", "FN")),
                          "count": int(counts.get(c, 0))} for c in CELLS])


def triage_decisions(session: Session, score_set_id: int) -> pd.DataFrame:
    """The current verdicts on one score set's disagreements: ``item_id, verdict, note, decided_by, decided_at``."""
    rows = session.execute(
        select(TriageDecision.item_id, TriageDecision.verdict, TriageDecision.note, User.username,
               TriageDecision.decided_at)
        .outerjoin(User, User.id == TriageDecision.decided_by)
        .where(TriageDecision.score_set_id == score_set_id)).all()
    return pd.DataFrame(rows, columns=["item_id", "verdict", "note", "decided_by", "decided_at"])


def triage_queue(frame: pd.DataFrame, threshold: float, decisions: pd.DataFrame) -> pd.DataFrame:
    """Items where the model (``frame`` with predictions) and the reference disagree, most confident first:
    ``margin`` = |similarity - threshold|; with the current verdict, if any."""
    queue = frame[frame["model_disagrees"]].copy()
    queue["margin"] = (queue["similarity"] - threshold).abs()
    queue = queue.merge(decisions, on="item_id", how="left")
    return queue.sort_values(["margin", "item_id"], ascending=[False, True]).reset_index(drop=True)


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


# --- models side by side ------------------------------------------------------------------------------


METRIC_COLUMNS = ("f1", "macro_f1", "precision", "recall", "accuracy", "roc_auc", "average_precision", "spearman")


def metrics_table(data: ResultsData, strategy: str, subset: str = OUTSIDE_VALIDATION,
                  n_bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per score set, like a paper's main table: the threshold of ``strategy``, the metrics on the
    labelled evaluated items, and a bootstrap interval of F1. ``note`` says why a row has no numbers."""
    rows = []
    for info in data.score_sets:
        choice = choose_threshold(data, info.id, strategy)
        scores, labels = labelled(evaluated(data, info.id, subset))
        row: dict[str, object] = {"score_set_id": info.id, "score_set": info.name, "model": info.model_name,
                                  "text_field": info.text_field, "n_evaluated": int(scores.size),
                                  "threshold": choice.value, "note": choice.note}
        if choice.value is not None and scores.size:
            report = metrics.evaluate(scores, labels, metrics.Threshold(choice.value, choice.strategy, choice.n_val),
                                      n_bootstrap=n_bootstrap, seed=seed)
            row.update(report.metrics.values())
            if report.bootstrap is not None:
                row["f1_low"], row["f1_high"] = report.bootstrap.intervals["f1"]
            row["note"] = "; ".join(filter(None, [choice.note, *report.metrics.notes]))
        elif not scores.size:
            row["note"] = "no labelled item to evaluate: label items, or pick another reference or subset"
        rows.append(row)
    columns = ["score_set_id", "score_set", "model", "text_field", "n_evaluated", "threshold", *METRIC_COLUMNS,
               "f1_low", "f1_high", "note"]
    return pd.DataFrame(rows).reindex(columns=columns)


@dataclass(frozen=True)
class Comparison:
    """Two score sets on the same labelled items: the paired bootstrap of one metric, A - B."""

    result: metrics.PairedBootstrapResult = field(repr=False)
    threshold_a: float | None
    threshold_b: float | None
    n_items: int
    differences: pd.DataFrame = field(repr=False)  # histogram of the resampled differences: bin_start, bin_end, count
    points: pd.DataFrame = field(repr=False)  # item_id, external_id, title, similarity_a, similarity_b, reference


def compare_score_sets(data: ResultsData, a: int, b: int, strategy: str, metric: str = "f1",
                       subset: str = OUTSIDE_VALIDATION, n_resamples: int = 1000, seed: int = 0) -> Comparison:
    """Paired bootstrap over the labelled items both score sets scored; each keeps its own threshold."""
    if a == b:
        raise ResultsError("Pick two different score sets to compare.")
    frame = evaluated(data, a, subset)
    column_b = data.score_set(b).column
    both = frame[frame[column_b].notna() & frame["reference"].notna()]
    if both.empty:
        raise ResultsError("The two score sets share no labelled item in this subset; score the same dataset with "
                           "both models, label some items, or pick another subset.")
    choice_a, choice_b = choose_threshold(data, a, strategy), choose_threshold(data, b, strategy)
    threshold_a, threshold_b = choice_a.value, choice_b.value
    missing = choice_a if threshold_a is None else choice_b if threshold_b is None else None
    if missing is not None and metric in metrics.THRESHOLD_METRICS:
        raise ResultsError(f"{metric} needs a threshold, but {missing.note}.")
    result = metrics.paired_bootstrap(both["similarity"].to_numpy(float), both[column_b].to_numpy(float),
                                      both["reference"].to_numpy(int), metric=metric, threshold_a=threshold_a,
                                      threshold_b=threshold_b, n_resamples=n_resamples, seed=seed)
    valid = result.samples[~np.isnan(result.samples)]
    counts, edges = np.histogram(valid, bins=HISTOGRAM_BINS) if valid.size else (np.array([], int), np.array([0.0]))
    differences = pd.DataFrame({"bin_start": edges[:-1], "bin_end": edges[1:], "count": counts})
    points = both[["item_id", "external_id", "title", "similarity", column_b, "reference"]].rename(
        columns={"similarity": "similarity_a", column_b: "similarity_b"})
    points["reference"] = points["reference"].astype(int)
    return Comparison(result, threshold_a, threshold_b, len(both), differences, points.reset_index(drop=True))
