"""Import a dataset: preview the rows and every problem before anything is written."""

import streamlit as st

from annotations.importer import import_table, preview_import
from annotations.settings import IMPORT_ROOTS_ENV
from annotations.uploads import uploaded_table
from cftclip_core.errors import CftClipError, DataError
from cftclip_core.formats import problems_table, read_table
from studio.common import escape_markdown, require_role, show_error, studio

user = require_role("researcher", "admin")
app = studio()
st.title("Import a dataset")
st.caption("A table with columns id, image, title, summary and optionally label (0/1) and split. Upload it alone "
           "when its images are URLs, or as a .zip holding the table and its images.")

# Tables on the server's disk: admins only, and only inside the folders an administrator allowed.
server_files = user.role == "admin" and bool(app.settings.import_roots)
where = st.radio("Source", ["Upload", "A file on this server"], horizontal=True) if server_files else "Upload"
upload = path = None
if where == "Upload":
    upload = st.file_uploader("Table or ZIP", type=["csv", "jsonl", "parquet", "zip"])
    if user.role == "admin" and not server_files:
        st.caption(f"To import tables from this server's disk, list the allowed folders in {IMPORT_ROOTS_ENV} "
                   "(e.g. /data/newstt) and restart the studio.")
else:
    path = st.text_input("Path of the table on the server", placeholder="/data/newstt/annotation.csv").strip()
    st.caption("Inside " + ", ".join(str(root) for root in app.settings.import_roots))
name = st.text_input("Dataset name", placeholder="newstt-2026")
description = st.text_input("Description (optional)")
skip_bad = st.checkbox("Skip bad rows (rows with problems are left out instead of stopping the import)")
allow_private = st.checkbox("Allow image URLs on private or loopback addresses (trusted servers only)")

if upload is None and not path:
    st.stop()


def show_problems(exc: CftClipError) -> None:
    """A file's problems as plain text (they quote its own values); other errors (a full disk) as they are."""
    if not isinstance(exc, DataError):
        show_error(exc)
        return
    st.error("Nothing was imported. Fix the problems below and try again, or tick 'Skip bad rows'.")
    st.code(str(exc).replace("(--skip-bad-rows)", "('Skip bad rows' above)"), language=None)


def progress_bar():  # noqa: ANN201 - an ImportProgress callable
    bar = st.progress(0.0, text="Checking images...")
    return bar, lambda stage, done, total: bar.progress(done / max(total, 1), text=f"{stage.capitalize()}: {done}/{total}")


def checked_preview(table, source: str):  # noqa: ANN001, ANN201 - Table -> ImportPreview
    """The preview with every image checked, once per source and options (Streamlit reruns often)."""
    key = (source, allow_private)
    if st.session_state.get("preview_key") != key:
        bar, progress = progress_bar()
        st.session_state.preview = preview_import(table, app.settings, allow_private_urls=allow_private,
                                                  progress=progress)
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
    if preview.problems:
        st.warning(f"{len(preview.problems)} problem(s) in {preview.n_bad_rows} row(s): " +
                   ("those rows will be left out." if skip_bad else "the import will stop unless you tick 'Skip bad rows'."))
        st.dataframe(problems_table(preview.problems), hide_index=True, width="stretch")
    if not st.button("Import", type="primary", disabled=not name.strip()):
        if not name.strip():
            st.caption("Give the dataset a name to import it.")
        return
    bar, progress = progress_bar()
    try:
        result = import_table(app.sessions, app.settings, table, name.strip(), description=description,
                              allow_private_urls=allow_private, skip_bad_rows=skip_bad, progress=progress)
    except CftClipError as exc:
        bar.empty()
        show_problems(exc)
    else:
        bar.empty()
        skipped = f" ({len({p.row for p in result.skipped})} bad row(s) left out)" if result.skipped else ""
        st.success(f"Imported {result.dataset.item_count} items as '{escape_markdown(result.dataset.name)}'"
                   f"{skipped}. Annotators can start on the Annotate page.")


try:
    # Every row problem travels with the table: the preview and the import list them with the images' problems.
    if upload is not None:
        with uploaded_table(app.settings, upload.name, upload.getvalue(), skip_bad_rows=True) as table:
            run_import(table, f"upload:{upload.file_id}")
    else:
        table_path = app.settings.server_table(path)
        run_import(read_table(table_path, skip_bad_rows=True),
                   f"path:{table_path}:{table_path.stat().st_mtime_ns if table_path.is_file() else 0}")
except CftClipError as exc:
    show_problems(exc)
