"""The Articles page's pieces: the filters, the table of articles (thumbnails drawn a page at a time), the
similarity chart, and one article in full (image, texts, every model's similarity, the annotators' answers,
counterfactual texts of a training item)."""

from __future__ import annotations

from functools import partial

import pandas as pd
import streamlit as st

from annotations import results as store
from cftclip_core import results
from studio import charts
from studio.common import escape_markdown, media_path, plain_text, show_answers, thumbnail_uri
from studio.exports import csv_button, selected, show_chart
from studio.instance import Studio
from studio.tables import show_table

ROW_HEIGHT = 72  # tall enough to judge a thumbnail
VISIBLE_ROWS = 10
PAGE_ROWS = 100  # thumbnails are drawn for one page of the table at a time
ITEM = "articles_item"  # the article open in the detail view
SORTS = {"dataset order": None, "similarity": "similarity", "share of yes votes": "share_yes", "votes": "n_votes",
         "title": "title", "id": "external_id"}


def filtered_articles(frame: pd.DataFrame) -> pd.DataFrame:
    """The articles the sort, filter and search widgets keep, in their order."""
    with st.expander("Sort and filter", expanded=False):
        cols = st.columns(3)
        splits = cols[0].multiselect("Split", sorted(frame["split"].dropna().unique()), key="articles_splits")
        references = cols[1].multiselect("Reference label", [1, 0, None], key="articles_references",
                                         format_func=lambda v: "no label" if v is None else str(v))
        predictions = cols[2].multiselect("Prediction", [1, 0], key="articles_predictions")
        cols = st.columns(3)
        disagreement = cols[0].selectbox("Disagreement", list(results.DISAGREEMENTS),
                                         format_func=results.DISAGREEMENTS.get, key="articles_disagreement")
        sort = cols[1].selectbox("Sort by", list(SORTS), key="articles_sort")
        descending = cols[2].toggle("Descending", key="articles_descending")
        flagged_only = st.checkbox("Only flagged items", key="articles_flagged")
    text = st.text_input("Search titles, summaries and ids", key="articles_search", placeholder="e.g. a name")
    wanted = results.ArticleFilter(tuple(splits), tuple(references), tuple(predictions), disagreement, flagged_only,
                                   text)
    filtered = results.filter_articles(frame, wanted)
    if SORTS[sort]:
        filtered = filtered.sort_values(SORTS[sort], ascending=not descending, na_position="last", kind="stable")
    return filtered


def articles_table(filtered: pd.DataFrame, data: results.ResultsData, shown: results.ScoreSetInfo | None,
                   reference: str) -> tuple[int, int]:
    """One page of the table (a row click opens the article); returns (the page shown, the number of pages)."""
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
            "reference": st.column_config.NumberColumn("Gold" if reference == "gold" else "Imported label",
                                                       width="small",
                                                       help="1 = the thumbnail shows an actor, 0 = it does not"),
            "disagreement": st.column_config.TextColumn("Conflict", help="Disagreement. annotators: they disagree; "
                                                                     "model: with the reference"),
            "summary": st.column_config.TextColumn("Summary", width="large"),
            "split": st.column_config.TextColumn("Split", width="small"),
            "reference_source": st.column_config.TextColumn("Gold from"),
            "flagged": st.column_config.CheckboxColumn("Flag", width="small"),
            "n_votes": st.column_config.NumberColumn("Votes", width="small"),
            **{f"label_{name}": st.column_config.NumberColumn(name, help=f"{name}'s label")
               for name in data.annotators},
            **{info.column: st.column_config.NumberColumn(info.name, format="%.3f") for info in other_sets},
        },
        hide_index=True, width="stretch", height=ROW_HEIGHT * min(len(visible), VISIBLE_ROWS) + 40,
        row_height=ROW_HEIGHT, key="articles_table", selection_mode="single-row",
        on_select=partial(_open_row, visible["item_id"].tolist()),
    )
    return page, n_pages


def similarity_chart(filtered: pd.DataFrame, data: results.ResultsData, shown: results.ScoreSetInfo,
                     threshold: float | None, name: str) -> None:
    """Each filtered article's similarity against its share of "yes" votes (a click opens it)."""
    points = filtered[filtered["similarity"].notna()].copy()
    points["reference_name"] = points["reference"].map(results.label_name)
    points["position"] = range(1, len(points) + 1)
    by_votes = not data.votes.empty
    y, y_title = ("share_yes", "Share of annotators saying 'shows an actor'") if by_votes else ("position", "Article")
    chart = charts.points_chart(points[["item_id", "external_id", "title", "similarity", y, "reference_name"]],
                                "similarity", y, threshold, "Similarity of each article", "Similarity", y_title,
                                shown.name)
    show_chart(chart, points, f"{name}-similarity", "articles_chart", on_select=_open_point, selection="item")


def article_detail(app: Studio, data: results.ResultsData, frame: pd.DataFrame,
                   threshold: results.ThresholdChoice) -> None:
    """The article picker (the articles of ``frame``: those the search and filters keep), and the chosen
    article in full."""
    titles = dict(zip(frame["item_id"], frame["external_id"] + ": " + frame["title"].str.slice(0, 80)))
    if st.session_state.get(ITEM) not in titles:
        st.session_state.pop(ITEM, None)
    item_id = st.selectbox("Open an article", list(titles), index=None, format_func=titles.get, key=ITEM,
                           placeholder="Pick an article, select a table row, or click a chart point")
    if item_id is None:
        return
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
        show_table(results.model_similarities(data, detail.item_id, thresholds), labels={"prediction": "Prediction"})
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


def export_button(filtered: pd.DataFrame, name: str, threshold: float | None,
                  shown: results.ScoreSetInfo | None) -> None:
    export = filtered.drop(columns=["media_sha256"]).assign(threshold=threshold, score_set=shown.name if shown else None)
    csv_button(export, f"{name}-articles", "articles_export", "Download the filtered table (CSV)")


def _open_row(item_ids: list[int]) -> None:
    rows = st.session_state["articles_table"].selection.rows
    if rows:
        st.session_state[ITEM] = item_ids[rows[0]]


def _open_point() -> None:
    item_id = selected("articles_chart", "item", "item_id")
    if item_id is not None:
        st.session_state[ITEM] = int(item_id)
