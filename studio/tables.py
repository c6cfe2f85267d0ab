"""Every table of the app shown the same way: short human column labels (the long name as a tooltip), numbers
at 3 decimals at most, timestamps as ``YYYY-MM-DD HH:MM`` (the column label says UTC, once), and empty cells as
an en dash, never "None". Pages call ``show_table``; ``styled`` and ``column_config`` are its two halves."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st
from pandas.io.formats.style import Styler

EMPTY = "–"  # an en dash in an empty cell
TIMESTAMP = "%Y-%m-%d %H:%M"
DECIMALS = 3


@dataclass(frozen=True)
class Label:
    text: str  # short enough for a narrow column
    help: str | None = None  # the long name, as the header's tooltip


LABELS = {
    "score_set": Label("Score set"), "model": Label("Model"), "text_field": Label("Text", "Text field scored"),
    "n_evaluated": Label("Items", "Labelled items evaluated"), "threshold": Label("Threshold"),
    "threshold_name": Label("Threshold"), "note": Label("Note"),
    "f1": Label("F1"), "macro_f1": Label("Macro F1"), "precision": Label("Precision"), "recall": Label("Recall"),
    "accuracy": Label("Accuracy"), "roc_auc": Label("ROC-AUC"), "average_precision": Label("AP", "Average precision"),
    "spearman": Label("Spearman", "Spearman correlation of similarity and label"),
    "f1_low": Label("F1 low", "Lower end of F1's 95% bootstrap interval"),
    "f1_high": Label("F1 high", "Upper end of F1's 95% bootstrap interval"),
    "kappa": Label("Kappa", "Cohen's kappa with the reference"), "tp": Label("TP", "True positives"),
    "fp": Label("FP", "False positives"), "tn": Label("TN", "True negatives"), "fn": Label("FN", "False negatives"),
    "annotator": Label("Annotator"),
    "n_reference": Label("Items", "Items compared with the reference"),
    "agreement_reference": Label("Agreement", "Share of items where the annotator agrees with the reference"),
    "kappa_reference": Label("Kappa", "Cohen's kappa with the reference"),
    "n_model": Label("Items (model)", "Items compared with the model"),
    "agreement_model": Label("Agr. model", "Share of items where the annotator agrees with the model"),
    "kappa_model": Label("Kappa model", "Cohen's kappa with the model"),
    "experiment": Label("Experiment"), "metric": Label("Metric"), "seed": Label("Seed"), "state": Label("State"),
    "n": Label("Seeds", "Finished seeds"), "mean": Label("Mean", "Mean over the seeds"),
    "std": Label("SD", "Standard deviation over the seeds"),
    "ci_low": Label("95% low", "Lower end of the 95% t-interval of the mean"),
    "ci_high": Label("95% high", "Upper end of the 95% t-interval of the mean"),
    "steps": Label("Steps"), "best_val_loss": Label("Best val. loss", "Best validation loss"),
    "checkpoint": Label("Checkpoint"), "name": Label("Name"), "trains": Label("Trains"), "backend": Label("Backend"),
    "created": Label("Created (UTC)"), "world": Label("World"), "arm": Label("Arm"), "seeds": Label("Seeds"),
    "external_id": Label("Id"), "title": Label("Title"), "similarity": Label("Similarity"),
    "prediction": Label("Model says"), "reference": Label("Reference says"),
    "reference_source": Label("Reference from"), "n_votes": Label("Votes"),
    "share_yes": Label("Share yes", "Share of annotators saying the thumbnail shows an actor"),
    "margin": Label("Distance", "Distance of the similarity from the threshold"), "verdict": Label("Verdict"),
}


def label(column: str) -> Label:
    """The column's label: from ``LABELS``, else its name with spaces ('name_accuracy_sd' -> 'Name accuracy sd')."""
    return LABELS.get(column) or Label(str(column).replace("_", " ").capitalize())


def _is_whole(values: pd.Series) -> bool:
    known = values.dropna()
    return bool(len(known)) and bool((known == known.round()).all())


def styled(frame: pd.DataFrame) -> Styler:
    """``frame`` with its display values: numbers at ``DECIMALS`` decimals (whole numbers without), timestamps
    as ``TIMESTAMP`` in UTC, and ``EMPTY`` for every missing value. The values themselves (sorting, the CSV) are
    untouched."""
    formats: dict[str, Any] = {}
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_bool_dtype(values):
            continue
        if pd.api.types.is_datetime64_any_dtype(values):
            formats[column] = format_timestamp
        elif pd.api.types.is_numeric_dtype(values):
            formats[column] = "{:.0f}" if _is_whole(values) else f"{{:.{DECIMALS}f}}"
        elif values.map(lambda v: isinstance(v, pd.Timestamp)).any():
            formats[column] = format_timestamp
    return frame.style.format(na_rep=EMPTY).format(formats, na_rep=EMPTY)


def format_timestamp(value: object) -> str:
    """A time (a timestamp or ISO text) as ``YYYY-MM-DD HH:MM`` in UTC (naive times are taken as UTC)."""
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC")
    return stamp.strftime(TIMESTAMP)


def column_config(frame: pd.DataFrame, overrides: Mapping[str, Any] | None = None,
                  hidden: Iterable[str] = ()) -> dict[str, Any]:
    """Each column's header: hidden ones None, ``overrides`` (a label or a ``st.column_config`` entry) as given,
    the rest from ``label``."""
    overrides, hidden = dict(overrides or {}), set(hidden)
    config: dict[str, Any] = {}
    for column in frame.columns:
        if column in hidden:
            config[column] = None
        elif column in overrides:
            config[column] = overrides[column]
        else:
            name = label(column)
            config[column] = st.column_config.Column(name.text, help=name.help)
    return config


def show_table(frame: pd.DataFrame, *, labels: Mapping[str, Any] | None = None, hidden: Iterable[str] = (),
               **kwargs: Any) -> None:
    """``st.dataframe`` of ``frame`` formatted by ``styled``, headed by ``column_config``, without the index."""
    kwargs.setdefault("width", "stretch")
    st.dataframe(styled(frame), hide_index=True, column_config=column_config(frame, labels, hidden), **kwargs)
