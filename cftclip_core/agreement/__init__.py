"""Inter-annotator agreement: pure functions over a long table of votes (no database access), and
Cohen's kappa from a 2x2 table (the one kappa formula of the project, also used by the results pages).

A *votes* table has one row per vote: ``item_id``, ``annotator_id``, ``value``. Each annotator votes
at most once per item; items may have different numbers of votes, and a skipped item simply has no
row. The product's labels are binary (1 = the thumbnail shows an actor of the event, 0 = it does
not); percent agreement, Cohen's kappa, Fleiss' kappa and Krippendorff's alpha also accept any
hashable categories. Majority vote and per-annotator statistics need 0/1 values.

Items with a single vote carry no information about agreement: they are counted in the results
but left out of every agreement statistic. Where a statistic is undefined (no item with two votes,
or every vote in the same class so that chance agreement is 1) the value is NaN and ``note`` says
why; nothing raises and no numpy warning is emitted.

Tables returned as ``pandas.DataFrame`` (one row per pair, item, annotator or streak) have the
columns listed in each function's docstring; single results are dataclasses.
"""

from cftclip_core.agreement.annotators import (
    ANNOTATOR_COLUMNS,
    MAJORITY_COLUMNS,
    STREAK_COLUMNS,
    annotator_stats,
    fast_streaks,
    majority_vote,
)
from cftclip_core.agreement.kappa import (
    PAIR_COLUMNS,
    FleissKappa,
    KrippendorffAlpha,
    PercentAgreement,
    chance_corrected,
    cohen_kappa_pairs,
    fleiss_kappa,
    kappa_from_counts,
    krippendorff_alpha,
    percent_agreement,
)
from cftclip_core.agreement.report import AgreementReport, agreement_report
from cftclip_core.agreement.votes import VOTE_COLUMNS, Votes

__all__ = [
    "ANNOTATOR_COLUMNS", "MAJORITY_COLUMNS", "PAIR_COLUMNS", "STREAK_COLUMNS", "VOTE_COLUMNS", "AgreementReport",
    "FleissKappa", "KrippendorffAlpha", "PercentAgreement", "Votes", "agreement_report", "annotator_stats",
    "chance_corrected", "cohen_kappa_pairs", "fast_streaks", "fleiss_kappa", "kappa_from_counts",
    "krippendorff_alpha", "majority_vote", "percent_agreement",
]
