"""Every table's display (``studio.tables``): short human headers with the long name as a tooltip, at most 3
decimals, UTC timestamps as YYYY-MM-DD HH:MM, an en dash for empty cells; and counts written with plurals."""

from __future__ import annotations

import pandas as pd
import pytest

from cftclip_core.results import Evaluation, ThresholdChoice, describe_evaluation, describe_threshold
from cftclip_core.wording import plural
from studio import tables


def test_numbers_timestamps_and_empty_cells_are_written_for_people() -> None:
    frame = pd.DataFrame({"f1": [0.123456, None], "steps": [100.0, None], "state": ["succeeded", None],
                          "created": pd.to_datetime(["2026-03-01 11:05:59+02:00", "2026-03-02 23:59:00+02:00"]),
                          "checkpoint": [None, "/runs/best"]})
    html = tables.styled(frame).to_html()
    assert "0.123" in html and "0.1235" not in html
    assert ">100<" in html and "100.000" not in html  # whole numbers stay whole
    assert "2026-03-01 09:05" in html and "2026-03-02 21:59" in html and "+00:00" not in html  # UTC
    assert "None" not in html and "nan" not in html and html.count(f">{tables.EMPTY}<") == 4
    assert tables.styled(frame).data.equals(frame)  # sorting and the CSV keep the values themselves


def test_an_iso_time_is_written_without_seconds_or_offset() -> None:
    assert tables.format_timestamp("2026-03-01T11:05:59+02:00") == "2026-03-01 09:05"


def test_headers_are_short_with_the_long_name_as_a_tooltip() -> None:
    frame = pd.DataFrame(columns=["kappa_reference", "average_precision", "created", "name_accuracy_sd", "id"])
    config = tables.column_config(frame, {"created": "When"}, hidden=["id"])
    assert config["kappa_reference"]["label"] == "Kappa"
    assert config["kappa_reference"]["help"] == "Cohen's kappa with the reference"
    assert config["average_precision"]["label"] == "AP" and config["created"] == "When" and config["id"] is None
    assert config["name_accuracy_sd"]["label"] == "Name accuracy sd"  # no raw column name
    assert all(len(label.text) <= 14 for label in tables.LABELS.values()), "a long header is cut in its column"
    assert tables.label("created").text == "Created (UTC)"


@pytest.mark.parametrize(("n", "expected"), [(0, "0 items"), (1, "1 item"), (2, "2 items")])
def test_counts_are_written_with_the_right_plural(n: int, expected: str) -> None:
    assert plural(n, "item") == expected


def test_the_evaluation_caption_states_reference_threshold_and_items() -> None:
    choice = ThresholdChoice("val-median", 0.23456, 1)
    caption = describe_evaluation(Evaluation(), 1, describe_threshold(choice))
    assert caption == ("Reference: gold (adjudicated, else the annotators' majority). Threshold: 0.235 (val-median: "
                       "the median similarity of 1 'val' item). Items: the labelled items outside the 'val' split "
                       "(where thresholds are tuned) (1 item).")
