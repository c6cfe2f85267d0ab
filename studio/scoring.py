"""The Articles page's scoring: a form that queues a scoring job (``train_jobs.scoring``) for the dataset, and
the dataset's recent scoring jobs with their progress, refreshed every few seconds while one is at work.

The job runs outside Streamlit, so a rerun, a closed tab or a restarted app changes nothing: any visit shows
where it is. When its scores are in, the page is drawn again with them."""

from __future__ import annotations

import streamlit as st

from annotations.models import Dataset, User
from cftclip_core.errors import CftClipError
from cftclip_core.specs.models import KNOWN_MODELS, TINY_NAME
from cftclip_core.specs.training import TEXT_FIELDS
from studio.common import escape_markdown
from studio.instance import Studio
from studio.job_widgets import chosen_backend, machine_gpus, remember_outcome, show_outcome, where_inputs
from studio.results_view import clear_caches
from train_jobs import api

PREFIX = "articles_score"  # widget keys: articles_score_model, articles_score_text, articles_score_where...
QUEUED = "articles_score_queued"  # the Score button's outcome
SEEN = "articles_score_seen"  # jobs whose scores this browser session has already drawn
ACTION = "articles_score_action"  # the outcome of a Cancel
JOB_SECONDS = 2  # the live view reads the jobs this often
OTHER_MODEL = "other: a hub id or a local model folder"
PHASES = {"loading": "loading the model", "scoring": "scoring", "done": "saving the scores"}


def scoring_form(app: Studio, user: User, dataset: Dataset) -> None:
    """Model, text field and where to run; the Score button queues the job."""
    choice = st.selectbox("Model", [*KNOWN_MODELS, OTHER_MODEL], key=f"{PREFIX}_model",
                          format_func=lambda name: name if name == OTHER_MODEL else f"{name} - {KNOWN_MODELS[name]}")
    if choice == OTHER_MODEL:
        st.text_input("Hub id or folder", placeholder="/path/to/model", key=f"{PREFIX}_other")
    st.radio("Text to compare with the thumbnail", TEXT_FIELDS, index=1, horizontal=True, key=f"{PREFIX}_text")
    if choice == TINY_NAME:
        st.caption("The tiny model runs offline anywhere, but its scores mean nothing.")
    where_inputs(PREFIX, machine_gpus(), several_gpus=False)
    st.button("Score", type="primary", key=f"{PREFIX}_button", on_click=queue, args=(app, user, dataset),
              help="Scoring runs as a job outside the app: you can leave this page, and come back to its progress.")
    show_outcome(QUEUED, icon=":material/hourglass_top:")


def queue(app: Studio, user: User, dataset: Dataset) -> None:
    state = st.session_state
    model = state[f"{PREFIX}_model"]
    if model == OTHER_MODEL:
        model = state.get(f"{PREFIX}_other", "")
    backend, gpus = chosen_backend(PREFIX)
    request = api.ScoreRequest(dataset.id, model, state[f"{PREFIX}_text"], backend, gpus)
    try:
        api.queue_scoring(app.sessions, app.settings, request, user_id=user.id)
    except CftClipError as exc:
        remember_outcome(QUEUED, exc)
        return
    api.request_poll(app.settings)
    remember_outcome(QUEUED, f"Scoring '{dataset.name}' with {request.model.strip()} is queued; its progress shows "
                             "below.")


def scoring_jobs(app: Studio, user: User, dataset: Dataset) -> None:
    """The dataset's recent scoring jobs: live while one is at work, else as they ended."""
    with app.sessions() as session:
        jobs = api.score_jobs(session, dataset.id)
    seen = st.session_state.setdefault(SEEN, set())
    seen.update(job.run_id for job in jobs if job.imported)  # drawn by this run of the page
    if any(job.active for job in jobs):
        _live_jobs(app, user, dataset.id)
    else:
        _show_jobs(app, user, jobs)


@st.fragment(run_every=JOB_SECONDS)
def _live_jobs(app: Studio, user: User, dataset_id: int) -> None:
    with app.sessions() as session:
        jobs = api.score_jobs(session, dataset_id)
    seen = st.session_state.setdefault(SEEN, set())
    if any(job.imported and job.run_id not in seen for job in jobs) or not any(job.active for job in jobs):
        clear_caches()
        st.rerun()  # the whole page, with the new scores (and without this live view)
    _show_jobs(app, user, jobs)


def _show_jobs(app: Studio, user: User, jobs: list[api.ScoreJob]) -> None:
    message = st.session_state.pop(ACTION, None)
    if message:
        st.info(escape_markdown(message), icon=":material/info:")
    for job in jobs[:3]:
        what = f"{job.model} ({job.text_field})"
        if job.active:
            left, right = st.columns([5, 1], vertical_alignment="center")
            left.progress(_fraction(job), text=escape_markdown(f"Scoring with {what}: {_doing(job)}"))
            right.button("Cancel", key=f"{PREFIX}_cancel_{job.run_id}", disabled=job.cancel_requested,
                         on_click=_cancel, args=(app, user, job.run_id))
        elif job.imported:
            summary = job.summary or {}
            cut = int(summary.get("n_truncated") or 0)
            st.success(escape_markdown(f"Scored {summary.get('n_items', job.total)} articles with {job.model}.")
                       + (f" {cut} text{'s' if cut > 1 else ''} cut to the model's 77-token window." if cut else ""),
                       icon=":material/check:")
        elif job.state == "succeeded" and job.results_at is None:
            st.progress(1.0, text=escape_markdown(f"Scoring with {what}: done; storing the scores"))
        else:
            why = job.results_error or job.reason or job.state
            st.error(escape_markdown(f"Scoring with {what} {job.state}: {why}"), icon=":material/error:")


def _doing(job: api.ScoreJob) -> str:
    if job.state == "queued":
        return "waiting in the queue" + (f" ({job.reason})" if job.reason else "")
    if job.state == "starting" or not job.phase:
        return "starting"
    if job.phase == "scoring" and job.total:
        return f"{job.done or 0}/{job.total} pairs"
    return PHASES.get(job.phase, job.phase)


def _fraction(job: api.ScoreJob) -> float:
    return min(1.0, (job.done or 0) / job.total) if job.total and job.phase == "scoring" else 0.0


def _cancel(app: Studio, user: User, run_id: int) -> None:
    try:
        result = api.cancel_run(app.sessions, run_id, user.id)
    except CftClipError as exc:
        st.session_state[ACTION] = str(exc)
        return
    st.session_state[ACTION] = ("Scoring cancelled." if result.state == "cancelled" else "Scoring was asked to stop; "
                                "the embeddings it computed are cached, so scoring again computes only the rest.")
