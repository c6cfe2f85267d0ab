"""Articles: the items of a dataset with their thumbnails, texts and similarity to a model."""

import streamlit as st

from annotations.importer import list_datasets
from annotations.score_sets import is_meaningless, score_sets_for
from annotations.predictions import articles_frame, score_dataset
from cftclip_core.errors import CftClipError
from cftclip_core.formats import TEXT_FIELDS
from cftclip_core.models import KNOWN_MODELS, TINY_NAME
from pages.common import cached_model, escape_markdown, require_role, show_error, studio, thumbnail_uri

ROW_HEIGHT = 72  # tall enough to judge a thumbnail
VISIBLE_ROWS = 10
OTHER_MODEL = "other: a hub id or a local model folder"
TINY_WARNING = (
    "These scores come from the tiny offline model, whose weights are random: they carry no meaning. "
    "Score with a real CLIP model (e.g. a local copy of openai/clip-vit-large-patch14) to judge thumbnails."
)

require_role("researcher", "admin")
app = studio()
st.title("Articles")

with app.sessions() as session:
    datasets = {d.name: d.id for d in list_datasets(session)}
if not datasets:
    st.info("No dataset yet. Import one with `python -m annotations import FILE --name NAME`.")
    st.stop()
dataset_name = st.selectbox("Dataset", list(datasets))
dataset_id = datasets[dataset_name]

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
            cut = score_set.n_truncated
            st.success(f"Scored {score_set.n_items} articles with {escape_markdown(score_set.model_name)}."
                       + (f" {cut} text{'s' if cut > 1 else ''} cut to the model's 77-token window." if cut else ""))

with app.sessions() as session:
    score_sets = score_sets_for(session, dataset_id)
labels = {s.id: f"#{s.id} {s.model_name} on {s.text_field}, {s.created_at:%Y-%m-%d %H:%M}" for s in score_sets}
score_set_id = st.selectbox("Scores shown", list(labels), format_func=labels.get) if score_sets else None
shown = next((s for s in score_sets if s.id == score_set_id), None)
if shown is None:
    st.info("This dataset has no scores yet: score it above to see each article's similarity.")
elif is_meaningless(shown):
    st.warning(TINY_WARNING, icon=":material/warning:")
elif shown.n_truncated:
    st.caption(f"{shown.n_truncated} text(s) were longer than 77 CLIP tokens and were cut before scoring.")

with app.sessions() as session:
    articles = articles_frame(session, dataset_id, app.settings, score_set_id)
articles["thumbnail"] = [thumbnail_uri(path) if path else None for path in articles["media_path"]]
st.dataframe(
    articles[["thumbnail", "external_id", "title", "similarity", "summary", "split", "source_label"]],
    column_config={
        "thumbnail": st.column_config.ImageColumn("Thumbnail", width="small"),
        "external_id": st.column_config.TextColumn("Id", width="small"),
        "title": st.column_config.TextColumn("Title", width="medium"),
        "similarity": st.column_config.NumberColumn("Similarity", format="%.3f", width="small"),
        "summary": st.column_config.TextColumn("Summary", width="large"),
        "split": st.column_config.TextColumn("Split", width="small"),
        "source_label": st.column_config.NumberColumn(
            "Label", width="small", help="From the imported file: 1 = the thumbnail shows an actor, 0 = it does not"),
    },
    hide_index=True,
    width="stretch",
    height=ROW_HEIGHT * min(len(articles), VISIBLE_ROWS) + 40,
    row_height=ROW_HEIGHT,
)
st.caption(f"{len(articles)} articles. Texts are shown as plain text.")
