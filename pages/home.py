"""Articles: every item of a dataset with each model's similarity, the prediction, every annotator's label and
the reference; sort, filter, and open one article (from the table, the chart or the picker)."""

from functools import partial

import streamlit as st

from annotations import results as store
from annotations.predictions import score_dataset
from cftclip_core import results
from cftclip_core.errors import CftClipError
from cftclip_core.formats import TEXT_FIELDS
from cftclip_core.models import KNOWN_MODELS, TINY_NAME
from studio import charts
from studio.common import (
    cached_model,
    escape_markdown,
    media_path,
    plain_text,
    require_role,
    show_answers,
    show_error,
    studio,
    thumbnail_uri,
)

ROW_HEIGHT = 72  # tall enough to judge a thumbnail
VISIBLE_ROWS = 10
PAGE_ROWS = 100  # thumbnails are drawn for one page of the table at a time
OTHER_MODEL = "other: a hub id or a local model folder"
ITEM = "articles_item"  # the article open in the detail view
SORTS = {"dataset order": None, "similarity": "similarity", "share of yes votes": "share_yes", "votes": "n_votes",
         "title": "title", "id": "external_id"}

require_role("researcher", "admin")
app = studio()
st.title("Articles")

linked = st.query_params.pop("dataset", None)  # a link from another page: ?dataset=NAME&item=ID
if st.query_params.get("item", "").isdigit():
    st.session_state[ITEM] = int(st.query_params.pop("item"))
dataset = charts.pick_dataset("articles_dataset", linked)
dataset_id = dataset.id

with st.expander("Score this dataset with a model", expanded=False):
    choice = st.selectbox("Model", [*KNOWN_MODELS, OTHER_MODEL],
                          format_func=lambda name: name if name == OTHER_MODEL else f"{name} - {KNOWN_MODELS[name]}")
    model_name = st.text_input("Hub id or folder", placeholder="/path/to/model") if choice == OTHER_MODEL else choice
    text_field = st.radio("Text to compare with the thumbnail", TEXT_FIELDS, index=1, horizontal=True)
    if choice == TINY_NAME:
        st.caption("The tiny model runs offline anywhere, but its scores mean nothing.")
    if st.button("Score", type="primary", disabled=not model_name):
        bar = st.progress(0.0, text="Loading the model...")
        try:
            loaded = cached_model(model_name.strip())
            score_set = score_dataset(
                app.sessions, app.settings, dataset_id, loaded, text_field,
                progress=lambda stage, done, total: bar.progress(done / max(total, 1), text=f"Embedding {stage}: {done}/{total}"),
            )
        except CftClipError as exc:
            bar.empty()
            show_error(exc)
        else:
            bar.empty()
            charts.clear_caches()
            cut = score_set.n_truncated
            st.success(f"Scored {score_set.n_items} articles with {escape_markdown(score_set.model_name)}."
                       + (f" {cut} text{'s' if cut > 1 else ''} cut to the model's 77-token window." if cut else ""))

top = st.columns(3)
reference = charts.pick_reference("articles_reference", container=top[2])
data = charts.results_data(dataset_id, reference)
shown, threshold = None, results.ThresholdChoice("", None)
if data.score_sets:
    shown = charts.pick_score_set(data, "articles_score_set", "Scores shown", container=top[0])
    threshold = charts.pick_threshold(data, shown.id, "articles_threshold", container=top[1])
if shown is None:
    st.info("This dataset has no scores yet: score it above to see each article's similarity.")
else:
    charts.warn_if_meaningless(shown)
    if threshold.value is None:
        st.warning(f"No threshold, so no prediction: {threshold.note}.")
    else:
        st.caption(f"Threshold in force: {threshold.value:.3f} ({threshold.strategy}"
                   + (f"; {threshold.note}" if threshold.note else "") + "). Predicted 1 when similarity > threshold.")

frame = results.articles(data, shown.id if shown else None, threshold.value)
with st.expander("Sort and filter", expanded=False):
    cols = st.columns(3)
    splits = cols[0].multiselect("Split", sorted(frame["split"].dropna().unique()), key="articles_splits")
    references = cols[1].multiselect("Reference label", [1, 0, None], key="articles_references",
                                     format_func=lambda v: "no label" if v is None else str(v))
    predictions = cols[2].multiselect("Prediction", [1, 0], key="articles_predictions")
    cols = st.columns(3)
    disagreement = cols[0].selectbox("Disagreement", list(results.DISAGREEMENTS), format_func=results.DISAGREEMENTS.get,
                                     key="articles_disagreement")
    sort = cols[1].selectbox("Sort by", list(SORTS), key="articles_sort")
    descending = cols[2].toggle("Descending", key="articles_descending")
    flagged_only = st.checkbox("Only flagged items", key="articles_flagged")
text = st.text_input("Search titles, summaries and ids", key="articles_search", placeholder="e.g. a name")
wanted = results.ArticleFilter(tuple(splits), tuple(references), tuple(predictions), disagreement, flagged_only, text)
filtered = results.filter_articles(frame, wanted)
if SORTS[sort]:
    filtered = filtered.sort_values(SORTS[sort], ascending=not descending, na_position="last", kind="stable")


def open_row(item_ids: list[int]) -> None:
    rows = st.session_state["articles_table"].selection.rows
    if rows:
        st.session_state[ITEM] = item_ids[rows[0]]


def open_point() -> None:
    item_id = charts.selected("articles_chart", "item", "item_id")
    if item_id is not None:
        st.session_state[ITEM] = int(item_id)


n_pages = max(1, -(-len(filtered) // PAGE_ROWS))
page = st.number_input("Page", 1, n_pages, 1, key=f"articles_page_of_{n_pages}") if n_pages > 1 else 1
visible = filtered.iloc[(page - 1) * PAGE_ROWS: page * PAGE_ROWS].copy()
visible["thumbnail"] = [thumbnail_uri(str(path)) if (path := media_path(sha)).is_file() else None
                        for sha in visible["media_sha256"]]
label_columns = [f"label_{name}" for name in data.annotators]
other_sets = [info for info in data.score_sets if shown is None or info.id != shown.id]
columns = ["thumbnail", "external_id", "title", "similarity", "prediction", "reference", "disagreement", "summary",
           "split", "reference_source", "flagged", "n_votes", *label_columns, *(info.column for info in other_sets)]
st.dataframe(
    visible[columns],
    column_config={
        "thumbnail": st.column_config.ImageColumn("Thumbnail", width="small"),
        "external_id": st.column_config.TextColumn("Id"),  # sized to the ids: "small" breaks them mid-word
        "title": st.column_config.TextColumn("Title", width="medium"),
        "similarity": st.column_config.NumberColumn("Similarity", format="%.3f", width="small",
                                                    help=shown.name if shown else "No score set yet"),
        "prediction": st.column_config.NumberColumn("Prediction", width="small"),
        "reference": st.column_config.NumberColumn("Gold" if reference == "gold" else "Imported label", width="small",
                                                   help="1 = the thumbnail shows an actor, 0 = it does not"),
        "disagreement": st.column_config.TextColumn("Disagreement", width="small",
                                                    help="annotators: they disagree; model: with the reference"),
        "summary": st.column_config.TextColumn("Summary", width="large"),
        "split": st.column_config.TextColumn("Split", width="small"),
        "reference_source": st.column_config.TextColumn("Gold from", width="small"),
        "flagged": st.column_config.CheckboxColumn("Flag", width="small"),
        "n_votes": st.column_config.NumberColumn("Votes", width="small"),
        **{f"label_{name}": st.column_config.NumberColumn(f"label: {name}", width="small") for name in data.annotators},
        **{info.column: st.column_config.NumberColumn(info.name, format="%.3f") for info in other_sets},
    },
    hide_index=True,
    width="stretch",
    height=ROW_HEIGHT * min(len(visible), VISIBLE_ROWS) + 40,
    row_height=ROW_HEIGHT,
    key="articles_table",
    on_select=partial(open_row, visible["item_id"].tolist()),
    selection_mode="single-row",
)
filtered_note = f" Filtered from {len(frame)}." if len(filtered) < len(frame) else ""
paging_note = f" Page {page} of {n_pages}." if n_pages > 1 else ""
st.caption(f"{len(filtered)} articles. Texts are shown as plain text.{filtered_note}{paging_note} "
           "Select a row, or click a point of the chart, to open the article.")
export = filtered.drop(columns=["media_sha256"]).assign(threshold=threshold.value, score_set=shown.name if shown else None)
charts.csv_button(export, f"{dataset.name}-articles", "articles_export", "Download the filtered table (CSV)")

if shown is not None and filtered["similarity"].notna().any():
    points = filtered[filtered["similarity"].notna()].copy()
    points["reference_name"] = points["reference"].map(results.label_name)
    points["position"] = range(1, len(points) + 1)
    by_votes = not data.votes.empty
    y, y_title = ("share_yes", "Share of annotators saying 'shows an actor'") if by_votes else ("position", "Article")
    chart = charts.points_chart(points[["item_id", "external_id", "title", "similarity", y, "reference_name"]],
                                "similarity", y, threshold.value, f"Similarity ({shown.name})", "Similarity", y_title)
    charts.show_chart(chart, points, f"{dataset.name}-similarity", "articles_chart", on_select=open_point,
                      selection="item")

st.subheader("Article")
titles = dict(zip(frame["item_id"], frame["external_id"] + ": " + frame["title"].str.slice(0, 80)))
if st.session_state.get(ITEM) not in titles:
    st.session_state.pop(ITEM, None)
item_id = st.selectbox("Open an article", list(titles), index=None, format_func=titles.get, key=ITEM,
                       placeholder="Pick an article, select a table row, or click a chart point")
if item_id is not None:
    with app.sessions() as session:
        detail = store.item_detail(session, int(item_id))
    picture, text_side = st.columns([3, 2], gap="large")
    with picture:
        image = media_path(detail.media_sha256)
        if image.is_file():
            st.image(str(image))  # at its own size, up to the column's width
        else:
            st.warning("This image is missing from the media store; import the dataset again to restore it.")
    with text_side:
        plain_text(detail.title, size="1.25rem", weight=600)
        plain_text(detail.summary)
        row = frame[frame["item_id"] == detail.item_id].iloc[0]
        st.caption(f"Id {escape_markdown(detail.external_id)}, split {escape_markdown(detail.split or 'none')}. "
                   f"Reference: {charts.number(row['reference'], 0)} ({row['reference_source']}).")
        thresholds = {info.id: results.choose_threshold(data, info.id, threshold.strategy)
                      if threshold.strategy in results.STRATEGIES else threshold for info in data.score_sets}
        st.markdown("**Similarity of each model**")
        st.dataframe(results.model_similarities(data, detail.item_id, thresholds), hide_index=True, width="stretch",
                     column_config={"score_set": st.column_config.TextColumn("Score set", width="medium"),
                                    "similarity": st.column_config.NumberColumn("Similarity", format="%.3f",
                                                                                width="small"),
                                    "threshold": st.column_config.NumberColumn("Threshold", format="%.3f",
                                                                               width="small"),
                                    "prediction": st.column_config.NumberColumn("Prediction", width="small")})
        st.markdown("**Annotators**")
        if detail.answers.empty:
            st.caption("No annotator has labelled this article yet.")
        else:
            show_answers(detail.answers)
        if detail.split == "train":
            st.markdown("**Counterfactual texts used in training**")
            if detail.counterfactuals:
                for counterfactual in detail.counterfactuals:
                    plain_text(counterfactual)
            else:
                st.caption("None were imported with this item; tables made by `python -m cftclip_core counterfactual` "
                           "carry them in their counterfactual columns.")
