"""Where the model and the reference part ways: confusion cells and the triage queue of confident
disagreements."""

from __future__ import annotations

import numpy as np
import pandas as pd

CELLS = {"TP": "model 1, reference 1", "FP": "model 1, reference 0", "FN": "model 0, reference 1",
         "TN": "model 0, reference 0"}


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


def triage_queue(frame: pd.DataFrame, threshold: float, decisions: pd.DataFrame) -> pd.DataFrame:
    """Items where the model (``frame`` with predictions) and the reference disagree, most confident first:
    ``margin`` = |similarity - threshold|; with the current verdict, if any."""
    queue = frame[frame["model_disagrees"]].copy()
    queue["margin"] = (queue["similarity"] - threshold).abs()
    queue = queue.merge(decisions, on="item_id", how="left")
    return queue.sort_values(["margin", "item_id"], ascending=[False, True]).reset_index(drop=True)

