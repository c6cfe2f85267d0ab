"""What every results page (Articles, Thresholds, Disagreement, Models) starts with: the dataset, the
pickers in one row (score set, subset, threshold, reference) and the dataset's scores and labels, read once
per data version.

Caching: query results are cached with ``st.cache_data`` under a key that holds the dataset's data version
(``annotations.results.data_version``), which changes with every write to scores, labels, gold or triage,
whoever makes it (another page, an annotator, a scoring job, the command line); a page that writes also
clears the cached reads, so nothing shown is ever stale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from annotations import results as store
from annotations.importer import list_datasets
from annotations.models import Dataset
from cftclip_core import results
from cftclip_core.wording import plural
from studio.instance import studio

TINY_WARNING = (
    "These scores come from the tiny offline model, whose weights are random: they carry no meaning. "
    "Score with a real CLIP model (e.g. a local copy of openai/clip-vit-large-patch14) to judge thumbnails."
)
OWN_THRESHOLD = "your own threshold"
SUBSET_HELP = "Thresholds are tuned on the 'val' split; evaluating on it too would flatter them."
STRATEGY_HELP = ("Each score set gets its own threshold (score scales differ). val-median: the median similarity of "
                 "the 'val' split, label-free (the original code); f1-optimal: the best F1 on the labelled 'val' items.")


@dataclass(frozen=True)
class ResultsView:
    """What the header picked: the dataset, its data under the reference, and the page's choices."""

    dataset: Dataset
    reference: str
    data: results.ResultsData = field(repr=False)
    score_set: results.ScoreSetInfo | None = None
    subset: str = results.OUTSIDE_VALIDATION
    threshold: results.ThresholdChoice | None = None
    slots: tuple[DeltaGenerator, ...] = ()  # the row's first columns, for the page's own pickers


def results_header(page: str, *, score_set: str | None = "Score set", subset: str | None = None,
                   threshold: bool = False, require_scores: bool = True, slots: int = 0,
                   linked_dataset: str | None = None) -> ResultsView:
    """The dataset picker, then one row: ``slots`` empty columns for the page, the score set, the subset, the
    threshold, the reference. Widget keys are ``<page>_dataset``, ``<page>_score_set`` and so on. Stops the
    page with what to do when there is no dataset, or (``require_scores``) no score set yet."""
    dataset = pick_dataset(f"{page}_dataset", linked_dataset)
    row = iter(st.columns(slots + (score_set is not None) + (subset is not None) + threshold + 1))
    extra = tuple(next(row) for _ in range(slots))
    places = {name: next(row) for name, wanted in (("score_set", score_set), ("subset", subset),
                                                   ("threshold", threshold)) if wanted}
    reference = pick_reference(f"{page}_reference", container=next(row))
    data = results_data(dataset.id, reference)
    if require_scores and not data.score_sets:
        st.info("This dataset has no scores yet: score it with a model on the Articles page "
                "(or `python -m cftclip_core score`), then come back.")
        st.page_link("pages/home.py", label="Score it on the Articles page", icon=":material/newspaper:")
        st.stop()
    view = ResultsView(dataset, reference, data, slots=extra)
    if score_set is not None and data.score_sets:
        info = pick_score_set(data, f"{page}_score_set", score_set, container=places["score_set"])
        view = ResultsView(dataset, reference, data, info, slots=extra)
        if info.meaningless:
            st.warning(TINY_WARNING, icon=":material/warning:")
    if subset is not None:
        chosen = places["subset"].selectbox(subset, data.subsets(), key=f"{page}_subset", help=SUBSET_HELP)
        view = ResultsView(dataset, reference, data, view.score_set, chosen, slots=extra)
    if threshold and view.score_set is not None:
        choice = pick_threshold(data, view.score_set.id, f"{page}_threshold", container=places["threshold"])
        view = ResultsView(dataset, reference, data, view.score_set, view.subset, choice, slots=extra)
    return view


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


def pick_evaluation(page: str, subsets: list[str] | None = None) -> results.Evaluation:
    """The reference, threshold strategy and item set of the metrics (one row of pickers), for pages that
    show several score sets' metrics (Seeds); widget keys ``<page>_reference``, ``_strategy``, ``_subset``."""
    cols = st.columns(3)
    reference = pick_reference(f"{page}_reference", container=cols[0])
    strategy = cols[1].selectbox("Threshold", results.STRATEGIES, key=f"{page}_strategy", help=STRATEGY_HELP)
    subset = cols[2].selectbox("Evaluate on", subsets or [results.OUTSIDE_VALIDATION, results.ALL_ITEMS],
                               key=f"{page}_subset", help=SUBSET_HELP)
    return results.Evaluation(reference, strategy, subset)


def pick_score_set(data: results.ResultsData, key: str, label: str = "Score set", index: int = 0,
                   container: DeltaGenerator | None = None) -> results.ScoreSetInfo:
    names = {info.id: info.name for info in data.score_sets}
    chosen = (container or st).selectbox(label, list(names), index=index, format_func=names.get, key=key)
    return data.score_set(chosen)


def pick_threshold(data: results.ResultsData, score_set_id: int, key: str,
                   container: DeltaGenerator | None = None) -> results.ThresholdChoice:
    """A strategy (val-median, f1-optimal) or the user's own number; the threshold it gives."""
    place = container or st
    strategy = place.selectbox("Threshold", [*results.STRATEGIES, OWN_THRESHOLD], key=key, help=STRATEGY_HELP)
    if strategy != OWN_THRESHOLD:
        return results.choose_threshold(data, score_set_id, strategy)
    default = results.choose_threshold(data, score_set_id, "val-median").value or 0.0
    value = place.number_input("Your threshold", -1.0, 1.0, value=float(default), step=0.005, format="%.3f",
                               key=f"{key}_value")
    return results.choose_threshold(data, score_set_id, float(value))


def reference_caption(frame: pd.DataFrame, reference: str) -> str:
    """Which labels stand as the reference, and how many items have none (said on every page)."""
    counts = {name: int(n) for name, n in frame["reference_source"].value_counts().items()}
    if reference == "imported":
        return (f"Reference: the imported file's label ({plural(counts.get('imported', 0), 'item')}); "
                f"{plural(counts.get('none', 0), 'item')} without one left out.")
    left_out = counts.get("tie", 0) + counts.get("none", 0)
    return (f"Reference: gold, adjudicated by a researcher for {plural(counts.get('adjudicated', 0), 'item')} and the "
            f"annotators' majority for {counts.get('majority', 0)}; {plural(left_out, 'item')} left out "
            f"({counts.get('tie', 0)} tied, {counts.get('none', 0)} unlabelled).")
