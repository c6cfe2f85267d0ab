"""The Train page's one-click demo: the synthetic proof (both worlds x every arm x the seeds) queued at once."""

from __future__ import annotations

import streamlit as st

from annotations.models import User
from cftclip_core.errors import CftClipError
from studio.instance import Studio
from studio.job_widgets import remember_outcome, show_outcome
from studio.train_form import CHOSEN
from train_jobs import api

DEMO_LAUNCHED = "train_demo_launched"  # the demo button's outcome, shown on the next run


def demo_section(app: Studio, user: User) -> None:
    grid = api.proof_grid()
    worlds = sorted({world for world, _ in grid})
    arms = list(dict.fromkeys(arm for _, arm in grid))
    st.markdown(f"A tiny CLIP learns a synthetic news world (fictional people drawn as distinct figures, texts naming "
                f"them) on this machine's CPU: both worlds ({', '.join(worlds)}) × every arm ({', '.join(arms)}) × "
                "the seeds, one experiment per world and arm. Results come in arm by arm, the many-contexts world "
                "first: does counterfactual training (cft) teach names where plain contrastive training (clip) does "
                "not? Details: docs/synthetic-proof.md.")
    left, right = st.columns([1, 3], vertical_alignment="bottom")
    left.text_input("Seeds", "0-4", key="demo_seeds")
    right.button("Launch the synthetic proof", icon=":material/science:", key="train_demo", on_click=launch_demo,
                 args=(app, user))
    show_outcome(DEMO_LAUNCHED)


def launch_demo(app: Studio, user: User) -> None:
    try:
        seeds = api.parse_seeds(st.session_state["demo_seeds"])
        made = api.create_proof_demo(app.sessions, app.settings, seeds=seeds, user_id=user.id)
    except CftClipError as exc:
        remember_outcome(DEMO_LAUNCHED, exc)
        return
    api.request_poll(app.settings)
    st.session_state[CHOSEN] = made[0].id
    remember_outcome(DEMO_LAUNCHED, f"The synthetic proof is queued: {len(made)} experiments of {len(seeds)} run(s) "
                                    "each.")
