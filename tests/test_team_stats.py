"""cftclip_core.team_stats: pace and time to finish, accuracy on known answers, Wilson intervals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from cftclip_core.errors import DataError
from cftclip_core.team_stats import accuracy_on_known, activity, pace, wilson_interval

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def times(*minutes_ago: tuple[str, float]) -> pd.DataFrame:
    return pd.DataFrame([(who, NOW - timedelta(minutes=m)) for who, m in minutes_ago], columns=["annotator_id", "at"])


def test_pace_counts_the_window_and_extrapolates_the_time_to_finish() -> None:
    labels = times(("a", 5), ("a", 20), ("b", 40), ("b", 90))
    hour = pace(labels, NOW, remaining=60)
    assert (hour.labels, hour.labels_per_hour, hour.annotators) == (3, 3.0, 2)
    assert hour.eta == timedelta(hours=20)
    day = pace(labels, NOW, remaining=60, window=timedelta(days=1))
    assert day.labels == 4 and day.eta == timedelta(hours=60 / (4 / 24))


def test_pace_without_recent_labels_has_no_eta_and_a_finished_set_needs_none() -> None:
    idle = pace(times(("a", 300)), NOW, remaining=10)
    assert idle.labels == 0 and idle.eta is None and not idle.finished
    done = pace(times(), NOW, remaining=0)
    assert done.finished and done.eta == timedelta(0)
    with pytest.raises(DataError):
        pace(times(), NOW, 1, window=timedelta(0))


def test_activity_per_annotator_most_active_first() -> None:
    frame = activity(times(("a", 90), ("b", 5), ("b", 10), ("a", 2000)), NOW)
    assert frame["annotator_id"].tolist() == ["b", "a"]
    assert frame.set_index("annotator_id").loc["a", ["last_hour", "last_day"]].tolist() == [0, 1]


def test_accuracy_on_known_answers_with_a_wilson_interval() -> None:
    votes = pd.DataFrame({"item_id": [1, 2, 3, 1, 2, 9], "annotator_id": ["a", "a", "a", "b", "b", "b"],
                          "value": [1, 0, 0, 0, 0, 1]})
    frame = accuracy_on_known(votes, {1: 1, 2: 0, 3: 1}).set_index("annotator_id")
    assert frame.loc["a", ["n_control", "n_correct"]].tolist() == [3, 2]
    assert frame.loc["b", "accuracy"] == 0.5  # item 9 is not a control item
    low, high = wilson_interval(2, 3)
    assert (round(low, 3), round(high, 3)) == (0.208, 0.939)  # the textbook values for 2 of 3
    assert accuracy_on_known(votes, {}).empty and accuracy_on_known(votes.iloc[:0], {1: 1}).empty
