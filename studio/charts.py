"""Altair charts of the results and seeds pages, built from frames already aggregated by
``cftclip_core.results`` (a few hundred rows at most), and how numbers are written beside them."""

from __future__ import annotations

import altair as alt
import pandas as pd

from studio.results_view import OWN_THRESHOLD

POINT_LIMIT = 2000  # points drawn in a scatter chart
PADDING = {"top": 16, "right": 8, "bottom": 8, "left": 8}  # room above the title: Streamlit clips at the frame
MIN_SPAN = 0.01  # a scatter axis spans at least this much, so that near-equal values are not drawn flat
REFERENCE_COLOURS = alt.Scale(domain=["1", "0", "unlabelled"], range=["#2e7d32", "#c62828", "#9e9e9e"])
THRESHOLD_COLOURS = alt.Scale(domain=["val-median", "f1-optimal", OWN_THRESHOLD],
                              range=["#6a1b9a", "#ef6c00", "#1565c0"])


def number(value: object, digits: int = 3) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{float(value):.{digits}f}"


def _titled(chart: alt.TopLevelMixin, title: str, subtitle: str | list[str] | None = None, **properties: object) -> alt.TopLevelMixin:
    """``chart`` with its title left-aligned above a padded top (a long explanation goes to the subtitle: one
    line each, below the title instead of over the plot)."""
    params = alt.TitleParams(title, anchor="start", offset=10, fontSize=14,
                             **({"subtitle": subtitle, "subtitleFontSize": 11} if subtitle else {}))
    return chart.properties(title=params, padding=PADDING, **properties)


def padded_domain(values: pd.Series, min_span: float = MIN_SPAN) -> list[float]:
    """An axis domain around ``values`` with 5% room each side, at least ``min_span`` wide (a constant or
    near-constant column would otherwise collapse to a flat line with no ticks)."""
    low, high = float(values.min()), float(values.max())
    pad = max((high - low) * 0.05, (min_span - (high - low)) / 2, 0.0)
    return [round(low - pad, 6), round(high + pad, 6)]


def _rules(thresholds: dict[str, float]) -> alt.Chart:
    marks = pd.DataFrame({"threshold_name": list(thresholds), "threshold": list(thresholds.values())})
    return alt.Chart(marks).mark_rule(strokeDash=[5, 3], size=2).encode(
        x="threshold:Q", color=alt.Color("threshold_name:N", scale=THRESHOLD_COLOURS, title="Threshold"),
        tooltip=[alt.Tooltip("threshold_name:N", title="Threshold"), alt.Tooltip("threshold:Q", format=".3f")])


def histogram_chart(hist: pd.DataFrame, thresholds: dict[str, float]) -> alt.LayerChart:
    bars = alt.Chart(hist[hist["count"] > 0]).mark_bar(opacity=0.55, binSpacing=0).encode(
        x=alt.X("bin_start:Q", title="Similarity", scale=alt.Scale(zero=False)), x2="bin_end:Q",
        y=alt.Y("count:Q", stack=None, title="Items"), y2=alt.datum(0),
        color=alt.Color("reference:N", scale=REFERENCE_COLOURS, title="Reference label"),
        tooltip=["reference:N", "count:Q", alt.Tooltip("bin_start:Q", format=".3f"),
                 alt.Tooltip("bin_end:Q", format=".3f")])
    return _titled(alt.layer(bars, _rules(thresholds)).resolve_scale(color="independent"),
                   "Similarity by reference label", height=260)


def sweep_chart(curves: pd.DataFrame, thresholds: dict[str, float]) -> alt.LayerChart:
    long = curves.melt(id_vars="threshold", value_vars=["precision", "recall", "f1"], var_name="metric")
    lines = alt.Chart(long).mark_line().encode(
        x=alt.X("threshold:Q", title="Threshold"), y=alt.Y("value:Q", title="", scale=alt.Scale(domain=[0, 1])),
        strokeDash=alt.StrokeDash("metric:N", title="Metric"),
        tooltip=[alt.Tooltip("threshold:Q", format=".3f"), "metric:N", alt.Tooltip("value:Q", format=".3f")])
    return _titled(alt.layer(lines, _rules(thresholds)), "Precision, recall and F1", "Against the threshold", height=260)


def curve_chart(curves: pd.DataFrame, marks: pd.DataFrame, x: str, y: str, title: str) -> alt.LayerChart:
    """A ROC (x=fpr, y=tpr) or precision-recall (x=recall, y=precision) curve with each threshold marked."""
    names = {"fpr": "False positive rate", "tpr": "True positive rate (recall)", "recall": "Recall",
             "precision": "Precision"}
    line = alt.Chart(curves).mark_line(color="#455a64").encode(
        x=alt.X(f"{x}:Q", title=names[x], scale=alt.Scale(domain=[0, 1])),
        y=alt.Y(f"{y}:Q", title=names[y], scale=alt.Scale(domain=[0, 1])), order="threshold:Q",
        tooltip=[alt.Tooltip("threshold:Q", format=".3f"), alt.Tooltip(f"{x}:Q", format=".3f"),
                 alt.Tooltip(f"{y}:Q", format=".3f")])
    points = alt.Chart(marks).mark_point(size=120, filled=True).encode(
        x=f"{x}:Q", y=f"{y}:Q", color=alt.Color("threshold_name:N", scale=THRESHOLD_COLOURS, title="Threshold"),
        tooltip=["threshold_name:N", alt.Tooltip("threshold:Q", format=".3f"), alt.Tooltip(f"{x}:Q", format=".3f"),
                 alt.Tooltip(f"{y}:Q", format=".3f")])
    return _titled(alt.layer(line, points), title, height=260)


def agreement_chart(curves: pd.DataFrame, ceiling: pd.DataFrame, thresholds: dict[str, float]) -> alt.LayerChart:
    """The model's kappa with the reference at each threshold, beside each annotator's (the human ceiling)."""
    model = alt.Chart(curves).mark_line(color="#1565c0").encode(
        x=alt.X("threshold:Q", title="Threshold"), y=alt.Y("kappa:Q", title="Cohen's kappa with the reference"),
        tooltip=[alt.Tooltip("threshold:Q", format=".3f"), alt.Tooltip("kappa:Q", format=".3f")])
    humans = alt.Chart(ceiling).mark_rule(color="#2e7d32").encode(
        y="kappa:Q", strokeDash=alt.StrokeDash("who:N", title="Humans"),
        tooltip=["who:N", alt.Tooltip("kappa:Q", format=".3f")])
    return _titled(alt.layer(model, humans, _rules(thresholds)), "Human ceiling: agreement with the reference",
                   "The model at each threshold (blue), each annotator as a line", height=280)


def confusion_chart(counts: pd.DataFrame) -> alt.LayerChart:
    """The 2x2 table, each cell named (TP, FN, FP, TN) with its count; the text is white on the dark cells
    (more than half the largest count) and black on the light ones."""
    counts = counts.assign(label=counts["cell"] + ": " + counts["count"].astype(str))
    largest = max(int(counts["count"].max()), 1)
    pick = alt.selection_point(name="cell", fields=["cell"], on="click")
    base = alt.Chart(counts).encode(x=alt.X("model:O", title="Model says", axis=alt.Axis(labelAngle=0)),
                                    y=alt.Y("reference:O", title="Reference says", sort="descending"))
    cells = base.mark_rect().encode(
        color=alt.Color("count:Q", scale=alt.Scale(scheme="blues", domain=[0, largest]), legend=None),
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.5)),
        tooltip=[alt.Tooltip("cell:N", title="Cell"), alt.Tooltip("count:Q", title="Items")]).add_params(pick)
    text = base.mark_text(fontSize=18, fontWeight="bold").encode(
        text=alt.Text("label:N"),
        color=alt.condition(f"datum.count > {largest / 2}", alt.value("white"), alt.value("black")))
    return _titled(alt.layer(cells, text), "Model against the reference", "Click a cell to list its items",
                   height=220)


def annotator_chart(table: pd.DataFrame) -> alt.Chart:
    long = table.melt(id_vars="annotator", value_vars=["kappa_model", "kappa_reference"], var_name="against",
                      value_name="kappa").replace({"against": {"kappa_model": "the model", "kappa_reference":
                                                              "the reference"}})
    chart = alt.Chart(long).mark_bar().encode(
        x=alt.X("kappa:Q", title="Cohen's kappa"), y=alt.Y("annotator:N", title=""),
        yOffset="against:N", color=alt.Color("against:N", title="Agreement with"),
        tooltip=["annotator:N", "against:N", alt.Tooltip("kappa:Q", format=".3f")],
    )
    return _titled(chart, "Each annotator's agreement", height=alt.Step(14))


def points_chart(points: pd.DataFrame, x: str, y: str, threshold: float | None, title: str, x_title: str,
                 y_title: str, subtitle: str | list[str] | None = None) -> alt.LayerChart:
    """One point per item (clickable: the nearest point is picked), coloured by the reference label; a random
    ``POINT_LIMIT`` of them when there are more (Altair refuses more than 5,000 rows). Both axes span the
    points with some room (``padded_domain``), so close values still spread out, with ticks."""
    if len(points) > POINT_LIMIT:
        sample = f"A random {POINT_LIMIT:,} of {len(points):,} items"
        subtitle = [*([subtitle] if isinstance(subtitle, str) else subtitle or []), sample]
        points = points.sample(POINT_LIMIT, random_state=0)
    pick = alt.selection_point(name="item", fields=["item_id"], on="click", nearest=True)
    dots = alt.Chart(points).mark_circle(size=70).encode(
        x=alt.X(f"{x}:Q", title=x_title, scale=alt.Scale(domain=padded_domain(points[x]), nice=False),
                axis=alt.Axis(tickCount=5, format=".3~f")),
        y=alt.Y(f"{y}:Q", title=y_title, scale=alt.Scale(domain=padded_domain(points[y]), nice=False),
                axis=alt.Axis(tickCount=5, format=".3~f")),
        color=alt.Color("reference_name:N", scale=REFERENCE_COLOURS, title="Reference label"),
        opacity=alt.condition(pick, alt.value(0.95), alt.value(0.45)),
        tooltip=[alt.Tooltip("external_id:N", title="Id"), alt.Tooltip("title:N", title="Title"),
                 alt.Tooltip(f"{x}:Q", title=x_title, format=".3f"), alt.Tooltip(f"{y}:Q", title=y_title, format=".3f")],
    ).add_params(pick)
    layers = [dots]
    if threshold is not None:
        layers.append(alt.Chart(pd.DataFrame({"threshold": [threshold]})).mark_rule(strokeDash=[5, 3]).encode(
            x="threshold:Q"))
    return _titled(alt.layer(*layers), title, subtitle, height=320)


def metrics_chart(table: pd.DataFrame) -> alt.LayerChart:
    base = alt.Chart(table).encode(y=alt.Y("score_set:N", title="", sort=None))
    bars = base.mark_rule(size=2).encode(x=alt.X("f1_low:Q", title="F1 (95% bootstrap interval)"), x2="f1_high:Q")
    dots = base.mark_point(filled=True, size=80).encode(
        x="f1:Q", tooltip=["score_set:N", alt.Tooltip("f1:Q", format=".3f"), alt.Tooltip("f1_low:Q", format=".3f"),
                           alt.Tooltip("f1_high:Q", format=".3f")])
    return _titled(alt.layer(bars, dots), "F1 of each score set", height=alt.Step(28))


def difference_chart(hist: pd.DataFrame, observed: float) -> alt.LayerChart:
    bars = alt.Chart(hist).mark_bar(binSpacing=0, color="#90a4ae").encode(
        x=alt.X("bin_start:Q", title="Difference A - B in the resamples"), x2="bin_end:Q",
        y=alt.Y("count:Q", title="Resamples"), y2=alt.datum(0))
    rules = alt.Chart(pd.DataFrame({"at": [0.0, observed], "what": ["no difference", "observed"]})).mark_rule(
        size=2).encode(x="at:Q", strokeDash=alt.StrokeDash("what:N", title=""), tooltip=["what:N", "at:Q"])
    return _titled(alt.layer(bars, rules), "Paired bootstrap over items", height=240)


def seeds_chart(per_seed: pd.DataFrame, summary: pd.DataFrame, metric: str) -> alt.LayerChart:
    """Each seed as a dot, the mean as a tick and the 95% t-interval as a bar, per experiment."""
    dots = alt.Chart(per_seed).mark_circle(size=70, opacity=0.7).encode(
        x=alt.X(f"{metric}:Q", title=metric.replace("_", " "), scale=alt.Scale(zero=False)),
        y=alt.Y("experiment:N", title="", sort=None),
        tooltip=["experiment:N", "seed:O", alt.Tooltip(f"{metric}:Q", format=".3f")])
    interval = alt.Chart(summary).mark_rule(size=2).encode(x="ci_low:Q", x2="ci_high:Q",
                                                           y=alt.Y("experiment:N", sort=None))
    mean = alt.Chart(summary).mark_tick(thickness=3, size=22, color="black").encode(
        x="mean:Q", y=alt.Y("experiment:N", sort=None),
        tooltip=["experiment:N", "n:Q", alt.Tooltip("mean:Q", format=".3f"), alt.Tooltip("std:Q", format=".3f"),
                 alt.Tooltip("ci_low:Q", format=".3f"), alt.Tooltip("ci_high:Q", format=".3f")])
    return _titled(alt.layer(interval, dots, mean), f"{metric} per seed", "Dots: seeds; tick: mean; bar: 95% t-interval",
                   height=alt.Step(36))


def loss_curve_chart(frame: pd.DataFrame, value: str, title: str, points: bool) -> alt.Chart:
    """Training or validation loss of an experiment's runs (column ``run``) against the step (whole numbers)."""
    chart = alt.Chart(frame).mark_line(point=points).encode(
        x=alt.X("step:Q", title="Step", axis=alt.Axis(tickMinStep=1, format="d")),
        y=alt.Y(f"{value}:Q", title=title, scale=alt.Scale(zero=False)),
        color=alt.Color("run:N", title=None),
        tooltip=[alt.Tooltip("run:N", title="Run"), alt.Tooltip("step:Q", title="Step", format="d"),
                 alt.Tooltip(f"{value}:Q", title=title, format=".3f")])
    return _titled(chart, title, height=260)
