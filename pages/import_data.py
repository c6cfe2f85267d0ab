"""Import a dataset: preview the rows and every problem before anything is written."""

from pathlib import Path

import streamlit as st

from annotations.importer import import_dataset, preview_import
from annotations.uploads import uploaded_table
from cftclip_core.errors import CftClipError
from cftclip_core.formats import problems_table, read_table
from studio.common import escape_markdown, require_role, studio

require_role("researcher", "admin")
app = studio()
st.title("Import a dataset")
st.caption("A table with columns id, image, title, summary and optionally label (0/1) and split. Upload it alone "
           "when its images are URLs, or as a .zip holding the table and its images.")

where = st.radio("Source", ["Upload", "A file on this server"], horizontal=True)
upload = path = None
if where == "Upload":
    upload = st.file_uploader("Table or ZIP", type=["csv", "jsonl", "parquet", "zip"])
else:
    path = st.text_input("Path of the table on the server", placeholder="/data/newstt/annotation.csv").strip()
name = st.text_input("Dataset name", placeholder="newstt-2026")
description = st.text_input("Description (optional)")
skip_bad = st.checkbox("Skip bad rows (rows with problems are left out instead of stopping the import)")
allow_private = st.checkbox("Allow image URLs on private or loopback addresses (trusted servers only)")

if upload is None and not path:
    st.stop()


def show_problems(exc: CftClipError) -> None:
    st.error("Nothing was imported. Fix the problems below and try again, or tick 'Skip bad rows'.")
    # Plain text: messages quote the file's own values. The command line's flag is the box above here.
    st.code(str(exc).replace("(--skip-bad-rows)", "('Skip bad rows' above)"), language=None)


def checked_preview(table, source: str):  # noqa: ANN001, ANN201 - Table -> ImportPreview
    """The preview with every image checked, once per source and options (Streamlit reruns often)."""
    key = (source, skip_bad, allow_private)
    if st.session_state.get("preview_key") != key:
        bar = st.progress(0.0, text="Checking images...")
        st.session_state.preview = preview_import(
            table, app.settings, allow_private_urls=allow_private,
            progress=lambda stage, done, total: bar.progress(done / max(total, 1), text=f"{stage.capitalize()}: {done}/{total}"))
        st.session_state.preview_key = key
        bar.empty()
    return st.session_state.preview


def run_import(table, source: str) -> None:  # noqa: ANN001 - cftclip_core.formats.Table
    preview = checked_preview(table, source)
    st.subheader("Preview")
    cols = st.columns(4)
    cols[0].metric("Items", preview.n_items)
    cols[1].metric("Local images", preview.n_local_images)
    cols[2].metric("Image URLs", preview.n_url_images)
    cols[3].metric("Labelled", "yes" if preview.has_labels else "no")
    st.dataframe(preview.frame, hide_index=True, width="stretch")
    if table.skipped:
        st.warning(f"{len({p.row for p in table.skipped})} bad row(s) will be skipped:")
        st.dataframe(problems_table(table.skipped), hide_index=True)
    for problem in preview.problems[len(table.skipped):]:
        st.warning(escape_markdown(problem))
    if preview.image_problems:
        st.warning(f"{len(preview.image_problems)} image(s) cannot be used" +
                   (" and will be left out:" if skip_bad else ": the import will stop unless you tick 'Skip bad rows'."))
        st.code("\n".join(preview.image_problems), language=None)
    if not st.button("Import", type="primary", disabled=not name.strip()):
        if not name.strip():
            st.caption("Give the dataset a name to import it.")
        return
    bar = st.progress(0.0, text="Checking images...")
    try:
        dataset = import_dataset(app.sessions, app.settings, table, name.strip(), description=description,
                                 allow_private_urls=allow_private, skip_bad_rows=skip_bad,
                                 progress=lambda stage, done, total: bar.progress(done / max(total, 1),
                                                                                  text=f"{stage.capitalize()}: {done}/{total}"))
    except CftClipError as exc:
        bar.empty()
        show_problems(exc)
    else:
        bar.empty()
        st.success(f"Imported {dataset.item_count} items as '{escape_markdown(dataset.name)}'. Annotators can start on the Annotate page.")


try:
    if upload is not None:
        with uploaded_table(app.settings, upload.name, upload.getvalue(), skip_bad_rows=skip_bad) as table:
            run_import(table, f"upload:{upload.file_id}")
    else:
        run_import(read_table(path, skip_bad_rows=skip_bad), f"path:{path}:{Path(path).stat().st_mtime_ns}")
except CftClipError as exc:
    show_problems(exc)
