"""The humans beside the model: each annotator's agreement with the reference (leave-one-out where gold is a
majority vote) and with the model, and the human ceiling."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cftclip_core.agreement import kappa_from_counts
from cftclip_core.results.data import ResultsData


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

