"""Everything the Review page shows about agreement on one set of votes, in one report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from cftclip_core.agreement.kappa import (
    FleissKappa,
    KrippendorffAlpha,
    PercentAgreement,
    cohen_kappa_pairs,
    fleiss_kappa,
    krippendorff_alpha,
    percent_agreement,
)
from cftclip_core.agreement.votes import Votes, nan_or, records, votes_frame


@dataclass(frozen=True)
class AgreementReport:
    """Everything the review page shows about agreement on one set of votes."""

    n_votes: int
    n_items: int  # items with at least one vote
    n_annotators: int
    n_items_multi: int  # items with >= 2 votes: the ones agreement is computed on
    n_items_single: int  # items with exactly one vote: counted, not used
    percent: PercentAgreement
    fleiss: FleissKappa
    krippendorff: KrippendorffAlpha
    pairwise: pd.DataFrame = field(repr=False, compare=False)  # cohen_kappa_pairs

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable (NaN becomes None)."""
        alpha = {k: v for k, v in asdict(self.krippendorff).items() if k != "coincidences"}
        return {
            "n_votes": self.n_votes,
            "n_items": self.n_items,
            "n_annotators": self.n_annotators,
            "n_items_multi": self.n_items_multi,
            "n_items_single": self.n_items_single,
            "percent_agreement": {k: nan_or(v) for k, v in asdict(self.percent).items()},
            "fleiss_kappa": {k: nan_or(v) for k, v in asdict(self.fleiss).items()},
            "krippendorff_alpha": {k: nan_or(v) for k, v in alpha.items()},
            "pairwise_cohen_kappa": records(self.pairwise),
        }


def agreement_report(votes: Votes, min_overlap: int = 1) -> AgreementReport:
    """All agreement statistics of one set of votes; ``min_overlap`` as in ``cohen_kappa_pairs``."""
    df = votes_frame(votes)
    per_item = df.groupby("item_id", sort=False).size()
    return AgreementReport(
        n_votes=len(df),
        n_items=len(per_item),
        n_annotators=int(df["annotator_id"].nunique()),
        n_items_multi=int((per_item >= 2).sum()),
        n_items_single=int((per_item == 1).sum()),
        percent=percent_agreement(df),
        fleiss=fleiss_kappa(df),
        krippendorff=krippendorff_alpha(df),
        pairwise=cohen_kappa_pairs(df, min_overlap=min_overlap),
    )
