"""Articles: every item of a dataset with each model's similarity, the prediction, every annotator's label and
the reference; sort, filter, and open one article (from the table, the chart or the picker). Scoring the
dataset with a model runs as a job; its progress shows here."""

import streamlit as st

from cftclip_core import results
from cftclip_core.wording import plural
from studio.articles import ITEM, article_detail, articles_table, export_button, filtered_articles, similarity_chart
from studio.common import require_role, studio
from studio.results_view import results_header
from studio.scoring import scoring_form, scoring_jobs

user = require_role("researcher", "admin")
app = studio()
st.title("Articles")

linked = st.query_params.pop("dataset", None)  # a link from another page: ?dataset=NAME&item=ID
if st.query_params.get("item", "").isdigit():
    st.session_state[ITEM] = int(st.query_params.pop("item"))
view = results_header("articles", score_set="Scores shown", threshold=True, require_scores=False,
                      linked_dataset=linked)
data, dataset, shown = view.data, view.dataset, view.score_set
threshold = view.threshold or results.ThresholdChoice("", None)

with st.expander("Score this dataset with a model", expanded=False):
    scoring_form(app, user, dataset)
scoring_jobs(app, user, dataset)

if shown is None:
    st.info("This dataset has no scores yet: score it above to see each article's similarity.")
elif threshold.value is None:
    st.warning(f"No threshold, so no prediction: {threshold.note}.")
else:
    st.caption(f"Threshold in force: {threshold.value:.3f} ({threshold.strategy}"
               + (f"; {threshold.note}" if threshold.note else "") + "). Predicted 1 when similarity > threshold.")

frame = results.articles(data, shown.id if shown else None, threshold.value)
filtered = filtered_articles(frame)
page, n_pages = articles_table(filtered, data, shown, view.reference)
filtered_note = f" Filtered from {len(frame)}." if len(filtered) < len(frame) else ""
paging_note = f" Page {page} of {n_pages}." if n_pages > 1 else ""
st.caption(f"{plural(len(filtered), 'article')}. Texts are shown as plain text.{filtered_note}{paging_note} "
           "Select a row, or click a point of the chart, to open the article.")
export_button(filtered, dataset.name, threshold.value, shown)
if shown is not None and filtered["similarity"].notna().any():
    similarity_chart(filtered, data, shown, threshold.value, dataset.name)

st.subheader("Article")
article_detail(app, data, filtered, threshold)
