"""Shared pieces of the results pages (Articles, Thresholds, Disagreement, Models): the pickers they all
use, the cached loader, Altair charts built from frames already aggregated by ``cftclip_core.results``,
and the export buttons beside every chart (CSV of its data, SVG, PNG) and table (CSV).

Caching: query results are cached with ``st.cache_data`` under a key that holds the dataset's data
version (``store.data_version``), which changes with every write to scores, labels, gold or triage,
whoever makes it (another page, an annotator, the command line); a page that writes also clears the
cached reads, so nothing shown is ever stale.
"""

from __future__ import annotations

from collections.abc import Callable

import altair as alt
import pandas as pd
import streamlit as st
import vl_convert
from streamlit.delta_generator import DeltaGenerator

from annotations import results as store
from annotations.importer import list_datasets
from annotations.models import Dataset
from cftclip_core import results
from studio.common import studio

TINY_WARNING = (
    "These scores come from the tiny offline model, whose weights are random: they carry no meaning. "
    "Score with a real CLIP model (e.g. a local copy of openai/clip-vit-large-patch14) to judge thumbnails."
)
OWN_THRESHOLD = "your own threshold"
POINT_LIMIT = 2000  # points drawn in a scatter chart
REFERENCE_COLOURS = alt.Scale(domain=["1", "0", "unlabelled"], range=["#2e7d32", "#c62828", "#9e9e9e"])
THRESHOLD_COLOURS = alt.Scale(domain=["val-median", "f1-optimal", OWN_THRESHOLD],
                              range=["#6a1b9a", "#ef6c00", "#1565c0"])


# --- loading and pickers ----------------------------------------------------------------------------------


@st.cache_data(max_entries=16, show_spinner="Reading scores and labels...")
def _cached_results(dataset_id: int, reference: str, version: tuple[object, ...]) -> results.ResultsData:
    del version  # part of the cache key only
    with studio().sessions() as session:
        return store.load_results(session, dataset_id, reference)


def version_of(dataset_id: int) -> tuple[object, ...]:
    """The dataset's data version: part of the key of every cached results query."""
    with studio().sessions() as session:
        return store.data_version(session, dataset_id)


def results_data(dataset_id: int, reference: str) -> results.ResultsData:
    """The dataset's scores and labels, read once per data version."""
    return _cached_results(dataset_id, reference, version_of(dataset_id))


def clear_caches() -> None:
    """After a write made by this page: drop the cached reads at once (the pages' other cached results are
    keyed on the data version, which the write changed)."""
    _cached_results.clear()


def pick_dataset(key: str, wanted: str | None = None) -> Dataset:
    """The dataset picker; ``wanted`` (e.g. from a link) is chosen when it names a dataset."""
    with studio().sessions() as session:
        datasets = {d.name: d for d in list_datasets(session)}
    if not datasets:
        st.info("No dataset yet: import one on the Import page (or `python -m annotations import FILE --name NAME`).")
        st.stop()
    if wanted in datasets:
        st.session_state[key] = wanted
    return datasets[st.selectbox("Dataset", list(datasets), key=key)]


def pick_reference(key: str, *, container: DeltaGenerator | None = None) -> str:
    return (container or st).radio("Compare with", list(results.REFERENCES), format_func=results.REFERENCES.get,
                                   horizontal=True, key=key,
                                   help="Gold: a researcher's decision on the Review page where there is one, "
                                        "else the majority of the annotators (ties have none).")


def pick_score_set(data: results.ResultsData, key: str, label: str = "Score set", index: int = 0,
                   container: DeltaGenerator | None = None) -> results.ScoreSetInfo:
    names = {info.id: info.name for info in data.score_sets}
    chosen = (container or st).selectbox(label, list(names), index=index, format_func=names.get, key=key)
    return data.score_set(chosen)


def require_scores(data: results.ResultsData) -> None:
    """The empty state of a dataset nobody scored yet: say what to do, and stop the page."""
    if not data.score_sets:
        st.info("This dataset has no scores yet: score it with a model on the Articles page "
                "(or `python -m cftclip_core score`), then come back.")
        st.page_link("pages/home.py", label="Score it on the Articles page", icon=":material/newspaper:")
        st.stop()


def pick_threshold(data: results.ResultsData, score_set_id: int, key: str,
                   container: DeltaGenerator | None = None) -> results.ThresholdChoice:
    """A strategy (val-median, f1-optimal) or the user's own number; the threshold it gives."""
    place = container or st
    strategy = place.selectbox("Threshold", [*results.STRATEGIES, OWN_THRESHOLD], key=key,
                               help="val-median: median similarity of the 'val' split, label-free (the original "
                                    "code); f1-optimal: best F1 on the labelled 'val' items.")
    if strategy != OWN_THRESHOLD:
        return results.choose_threshold(data, score_set_id, strategy)
    default = results.choose_threshold(data, score_set_id, "val-median").value or 0.0
    value = place.number_input("Your threshold", -1.0, 1.0, value=float(default), step=0.005, format="%.3f",
                               key=f"{key}_value")
    return results.choose_threshold(data, score_set_id, float(value))


def warn_if_meaningless(info: results.ScoreSetInfo) -> None:
    if info.meaningless:
        st.warning(TINY_WARNING, icon=":material/warning:")


def reference_caption(frame: pd.DataFrame, reference: str) -> str:
    """Which labels stand as the reference, and how many items have none (said on every page)."""
    counts = frame["reference_source"].value_counts()
    if reference == "imported":
        return (f"Reference: the imported file's label ({int(counts.get('imported', 0))} items); "
                f"{int(counts.get('none', 0))} items without one are left out.")
    return (f"Reference: gold, adjudicated by a researcher for {int(counts.get('adjudicated', 0))} items and the "
            f"annotators' majority for {int(counts.get('majority', 0))}; {int(counts.get('tie', 0))} tied and "
            f"{int(counts.get('none', 0))} unlabelled items are left out.")


def number(value: object, digits: int = 3) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{float(value):.{digits}f}"


# --- export buttons -----------------------------------------------------------------------------------------


def csv_button(frame: pd.DataFrame, name: str, key: str, label: str = "CSV") -> None:
    st.download_button(label, data=lambda: frame.to_csv(index=False), file_name=f"{name}.csv", mime="text/csv",
                       on_click="ignore", key=f"{key}_csv", icon=":material/download:")


def show_chart(chart: alt.TopLevelMixin, data: pd.DataFrame, name: str, key: str, *,
               on_select: Callable[[], None] | str | None = None, selection: str | None = None) -> None:
    """The chart, with its data (CSV) and the picture (SVG, PNG) to download beside it.

    The pictures are drawn only when a button is clicked (``vl_convert``, offline)."""
    if on_select is None:
        st.altair_chart(chart, width="stretch", key=key)
    else:
        st.altair_chart(chart, width="stretch", key=key, on_select=on_select, selection_mode=selection)
    with st.container(horizontal=True, gap="small"):
        csv_button(data, name, key, "Data (CSV)")
        st.download_button("SVG", data=lambda: vl_convert.vegalite_to_svg(chart.to_json()), file_name=f"{name}.svg",
                           mime="image/svg+xml", on_click="ignore", key=f"{key}_svg", icon=":material/download:")
        st.download_button("PNG", data=lambda: vl_convert.vegalite_to_png(chart.to_json(), scale=2),
                           file_name=f"{name}.png", mime="image/png", on_click="ignore", key=f"{key}_png",
                           icon=":material/download:")


def selected(key: str, param: str, field: str) -> object | None:
    """The ``field`` of the point picked in chart ``key`` under selection ``param`` (None if nothing is)."""
    state = st.session_state.get(key)
    points = state.selection.get(param, []) if state is not None else []
    return points[0].get(field) if points else None


# --- charts (every builder takes aggregated or already-small frames) ---------------------------------------


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
    return alt.layer(bars, _rules(thresholds)).resolve_scale(color="independent").properties(
        title="Similarity by reference label", height=260)


def sweep_chart(curves: pd.DataFrame, thresholds: dict[str, float]) -> alt.LayerChart:
    long = curves.melt(id_vars="threshold", value_vars=["precision", "recall", "f1"], var_name="metric")
    lines = alt.Chart(long).mark_line().encode(
        x=alt.X("threshold:Q", title="Threshold"), y=alt.Y("value:Q", title="", scale=alt.Scale(domain=[0, 1])),
        strokeDash=alt.StrokeDash("metric:N", title="Metric"),
        tooltip=[alt.Tooltip("threshold:Q", format=".3f"), "metric:N", alt.Tooltip("value:Q", format=".3f")])
    return alt.layer(lines, _rules(thresholds)).properties(title="Precision, recall and F1 against the threshold",
                                                           height=260)


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
    return alt.layer(line, points).properties(title=title, height=260)


def agreement_chart(curves: pd.DataFrame, ceiling: pd.DataFrame, thresholds: dict[str, float]) -> alt.LayerChart:
    """The model's kappa with the reference at each threshold, beside each annotator's (the human ceiling)."""
    model = alt.Chart(curves).mark_line(color="#1565c0").encode(
        x=alt.X("threshold:Q", title="Threshold"), y=alt.Y("kappa:Q", title="Cohen's kappa with the reference"),
        tooltip=[alt.Tooltip("threshold:Q", format=".3f"), alt.Tooltip("kappa:Q", format=".3f")])
    humans = alt.Chart(ceiling).mark_rule(color="#2e7d32").encode(
        y="kappa:Q", strokeDash=alt.StrokeDash("who:N", title="Humans"),
        tooltip=["who:N", alt.Tooltip("kappa:Q", format=".3f")])
    return alt.layer(model, humans, _rules(thresholds)).properties(
        title="Agreement with the reference: the model at each threshold, the annotators as lines", height=280)


def confusion_chart(counts: pd.DataFrame) -> alt.LayerChart:
    pick = alt.selection_point(name="cell", fields=["cell"], on="click")
    base = alt.Chart(counts).encode(x=alt.X("model:O", title="Model says", axis=alt.Axis(labelAngle=0)),
                                    y=alt.Y("reference:O", title="Reference says", sort="descending"))
    cells = base.mark_rect().encode(
        color=alt.Color("count:Q", scale=alt.Scale(scheme="blues"), legend=None),
        opacity=alt.condition(pick, alt.value(1.0), alt.value(0.5)), tooltip=["cell:N", "count:Q"]).add_params(pick)
    text = base.mark_text(fontSize=18).encode(text=alt.Text("count:Q"))
    return alt.layer(cells, text).properties(title="Model against the reference (click a cell)", height=220)


def annotator_chart(table: pd.DataFrame) -> alt.Chart:
    long = table.melt(id_vars="annotator", value_vars=["kappa_model", "kappa_reference"], var_name="against",
                      value_name="kappa").replace({"against": {"kappa_model": "the model", "kappa_reference":
                                                              "the reference"}})
    return alt.Chart(long).mark_bar().encode(
        x=alt.X("kappa:Q", title="Cohen's kappa"), y=alt.Y("annotator:N", title=""),
        yOffset="against:N", color=alt.Color("against:N", title="Agreement with"),
        tooltip=["annotator:N", "against:N", alt.Tooltip("kappa:Q", format=".3f")],
    ).properties(title="Each annotator's agreement", height=alt.Step(14))


def points_chart(points: pd.DataFrame, x: str, y: str, threshold: float | None, title: str, x_title: str,
                 y_title: str) -> alt.LayerChart:
    """One point per item (clickable: the nearest point is picked), coloured by the reference label; a random
    ``POINT_LIMIT`` of them when there are more (Altair refuses more than 5,000 rows)."""
    if len(points) > POINT_LIMIT:
        title = f"{title} (a random {POINT_LIMIT:,} of {len(points):,} items)"
        points = points.sample(POINT_LIMIT, random_state=0)
    pick = alt.selection_point(name="item", fields=["item_id"], on="click", nearest=True)
    dots = alt.Chart(points).mark_circle(size=70).encode(
        x=alt.X(f"{x}:Q", title=x_title, scale=alt.Scale(zero=False)),
        y=alt.Y(f"{y}:Q", title=y_title, scale=alt.Scale(zero=False)),
        color=alt.Color("reference_name:N", scale=REFERENCE_COLOURS, title="Reference label"),
        opacity=alt.condition(pick, alt.value(0.95), alt.value(0.45)),
        tooltip=["external_id:N", "title:N", alt.Tooltip(f"{x}:Q", format=".3f"), alt.Tooltip(f"{y}:Q", format=".3f")],
    ).add_params(pick)
    layers = [dots]
    if threshold is not None:
        layers.append(alt.Chart(pd.DataFrame({"threshold": [threshold]})).mark_rule(strokeDash=[5, 3]).encode(
            x="threshold:Q"))
    return alt.layer(*layers).properties(title=title, height=300)


def metrics_chart(table: pd.DataFrame) -> alt.LayerChart:
    base = alt.Chart(table).encode(y=alt.Y("score_set:N", title="", sort=None))
    bars = base.mark_rule(size=2).encode(x=alt.X("f1_low:Q", title="F1 (95% bootstrap interval)"), x2="f1_high:Q")
    dots = base.mark_point(filled=True, size=80).encode(
        x="f1:Q", tooltip=["score_set:N", alt.Tooltip("f1:Q", format=".3f"), alt.Tooltip("f1_low:Q", format=".3f"),
                           alt.Tooltip("f1_high:Q", format=".3f")])
    return alt.layer(bars, dots).properties(title="F1 of each score set", height=alt.Step(28))


def difference_chart(hist: pd.DataFrame, observed: float) -> alt.LayerChart:
    bars = alt.Chart(hist).mark_bar(binSpacing=0, color="#90a4ae").encode(
        x=alt.X("bin_start:Q", title="Difference A - B in the resamples"), x2="bin_end:Q",
        y=alt.Y("count:Q", title="Resamples"), y2=alt.datum(0))
    rules = alt.Chart(pd.DataFrame({"at": [0.0, observed], "what": ["no difference", "observed"]})).mark_rule(
        size=2).encode(x="at:Q", strokeDash=alt.StrokeDash("what:N", title=""), tooltip=["what:N", "at:Q"])
    return alt.layer(bars, rules).properties(title="Paired bootstrap over items", height=240)


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
    return alt.layer(interval, dots, mean).properties(title=f"{metric} per seed: dots, mean and 95% t-interval",
                                                      height=alt.Step(36))
