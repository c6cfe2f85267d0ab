"""Assignment and labeling: every rule behind the Annotate page (the page only calls these).

The modules, by responsibility:
- ``queue``: who gets which item (leases, order, assignment, control items mixed in);
- ``votes``: votes, skips, edits and undo, each with one log event, double clicks counted once;
- ``history``: an annotator's own labels, the comments on their flags, the score after a vote;
- ``progress``: their counts and the team's, and which datasets still need them;
- ``settings``: a dataset's annotation settings and guidelines;
- ``base``: errors, limits, checks and the write transaction they all use.

Every public name is importable from ``annotations.labeling``.
"""

from annotations.labeling.base import (
    LEASE_MINUTES_RANGE,
    MAX_GUIDELINES_LENGTH,
    MAX_NOTE_LENGTH,
    MAX_REQUEST_ID_LENGTH,
    OVERLAP_RANGE,
    REASONS,
    LabelingError,
    TooSoonError,
)
from annotations.labeling.history import (
    Comment,
    LabelPage,
    RecentLabel,
    RevealedScore,
    comments_on_my_flags,
    my_labels,
    my_recent_labels,
    score_after_vote,
)
from annotations.labeling.progress import DatasetChoice, Progress, datasets_for, progress, team_counts
from annotations.labeling.queue import Card, NotAssignedError, items_left_for, next_item, release_leases
from annotations.labeling.settings import (
    CONTROL_RATE_RANGE,
    DEFAULT_GUIDELINES,
    guidelines_of,
    set_annotation_settings,
)
from annotations.labeling.votes import VoteResult, cast_vote, relabel, undo_last

__all__ = [
    "CONTROL_RATE_RANGE", "DEFAULT_GUIDELINES", "LEASE_MINUTES_RANGE", "MAX_GUIDELINES_LENGTH", "MAX_NOTE_LENGTH",
    "MAX_REQUEST_ID_LENGTH", "OVERLAP_RANGE", "REASONS",
    "Card", "Comment", "DatasetChoice", "LabelPage", "LabelingError", "NotAssignedError", "Progress", "RecentLabel",
    "RevealedScore", "TooSoonError", "VoteResult",
    "cast_vote", "comments_on_my_flags", "datasets_for", "guidelines_of", "items_left_for", "my_labels",
    "my_recent_labels", "next_item", "progress", "relabel", "release_leases", "score_after_vote",
    "set_annotation_settings", "team_counts", "undo_last",
]
