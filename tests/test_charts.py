"""The charts of the results and Train pages, checked on their Vega-Lite specs (``chart.to_dict()``): titles
with room above them, scatter axes that spread close values, a readable confusion matrix, whole-number steps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cftclip_core import results
from studio import charts

THRESHOLDS = {"val-median": 0.2, "f1-optimal": 0.25}


def _points(y: np.ndarray) -> pd.DataFrame:
    n = len(y)
    return pd.DataFrame({"item_id": range(n), "external_id": [f"a{i}" for i in range(n)], "title": "t",
                         "similarity_a": np.linspace(0.10, 0.30, n), "similarity_b": y,
                         "reference_name": ["1", "0"] * (n // 2)})


def _every_chart() -> dict[str, dict]:
    rng = np.random.default_rng(0)
    scores, labels = rng.random(40), np.array([0, 1] * 20)
    curves = results.threshold_curves(scores, labels)
    marks = results.metrics_at(scores, labels, THRESHOLDS)
    marks = marks.assign(tpr=marks["tp"] / (marks["tp"] + marks["fn"]), fpr=marks["fp"] / (marks["fp"] + marks["tn"]))
    hist = results.similarity_histogram(pd.DataFrame({"similarity": scores, "reference": labels}))
    lines = pd.DataFrame({"who": ["annotator ann"], "kappa": [0.6]})
    counts = pd.DataFrame([{"cell": c, "model": int(c in ("TP", "FP")), "reference": int(c in ("TP", "FN")),
                            "count": n} for c, n in zip(results.CELLS, (30, 2, 5, 1))])
    loss = pd.DataFrame({"step": [1, 2, 3], "loss": [1.0, 0.8, 0.7], "run": "seed 0"})
    return {
        "histogram": charts.histogram_chart(hist, THRESHOLDS).to_dict(),
        "sweep": charts.sweep_chart(curves, THRESHOLDS).to_dict(),
        "roc": charts.curve_chart(curves, marks, "fpr", "tpr", "ROC curve").to_dict(),
        "human ceiling": charts.agreement_chart(curves, lines, THRESHOLDS).to_dict(),
        "confusion": charts.confusion_chart(counts).to_dict(),
        "points": charts.points_chart(_points(np.linspace(0, 1, 10)), "similarity_a", "similarity_b", None,
                                      "Similarity of each article", "x", "y", "#1 tiny-demo on summary").to_dict(),
        "loss": charts.loss_curve_chart(loss, "loss", "Training loss", points=False).to_dict(),
    }


@pytest.mark.parametrize("name", list(_every_chart()))
def test_every_chart_title_is_short_left_aligned_and_has_room_above_it(name: str) -> None:
    spec = _every_chart()[name]
    assert spec["padding"]["top"] >= 12, "Streamlit clips a title drawn flush with the frame"
    title = spec["title"]
    assert title["anchor"] == "start" and title["offset"] >= 8
    assert len(title["text"]) <= 45, "a long title is cut in a half-width column: the rest goes to the subtitle"


def test_the_human_ceiling_title_is_named_and_its_explanation_is_a_subtitle() -> None:
    title = _every_chart()["human ceiling"]["title"]
    assert title["text"].startswith("Human ceiling") and "each annotator" in title["subtitle"]


def test_a_vs_b_scatter_spreads_near_equal_similarities_with_ticks() -> None:
    flat = _points(np.full(10, 0.1234) + np.linspace(0, 1e-4, 10))  # the tiny model: B barely moves
    spec = charts.points_chart(flat, "similarity_a", "similarity_b", None, "Similarity of each item",
                               "Similarity, A", "Similarity, B", ["A: #1 a model", "B: #2 another"]).to_dict()
    y = spec["layer"][0]["encoding"]["y"]
    low, high = y["scale"]["domain"]
    assert high - low >= charts.MIN_SPAN and low <= 0.1234 and high >= 0.1235
    assert y["axis"]["tickCount"] >= 3 and y["title"] == "Similarity, B"
    assert spec["title"]["text"] == "Similarity of each item"
    assert spec["title"]["subtitle"] == ["A: #1 a model", "B: #2 another"]  # the long names below, not over it


def test_padded_domain_keeps_a_wide_range_and_widens_a_constant_one() -> None:
    assert charts.padded_domain(pd.Series([0.0, 1.0])) == pytest.approx([-0.05, 1.05])
    low, high = charts.padded_domain(pd.Series([0.5, 0.5]))
    assert (low, high) == pytest.approx((0.495, 0.505))


def test_confusion_matrix_names_each_cell_and_keeps_its_text_readable() -> None:
    spec = _every_chart()["confusion"]
    counts = {row["cell"]: row for row in next(iter(spec["datasets"].values()))}
    assert [counts[c]["label"] for c in ("TP", "FP", "FN", "TN")] == ["TP: 30", "FP: 2", "FN: 5", "TN: 1"]
    text = spec["layer"][1]
    assert text["encoding"]["text"]["field"] == "label"
    colour = text["encoding"]["color"]
    assert colour["condition"]["value"] == "white" and colour["value"] == "black"
    assert colour["condition"]["test"] == "datum.count > 15.0"  # white only on the dark half of the blues scale
    assert spec["layer"][0]["encoding"]["color"]["scale"]["domain"] == [0, 30]


def test_loss_charts_step_axis_has_whole_numbers_only() -> None:
    axis = _every_chart()["loss"]["encoding"]["x"]["axis"]
    assert axis["tickMinStep"] == 1 and axis["format"] == "d"
