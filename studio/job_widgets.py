"""Pieces that the job forms share (Train's New experiment, Articles' scoring): where a job runs, what this
machine has, and a button's outcome shown on the run after its click."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cftclip_core.errors import CftClipError
from studio.common import escape_markdown, show_error
from train_jobs import api

WHERE = {"cpu": "This machine's CPU", "gpu": "GPUs of this machine", "slurm": "A Slurm cluster"}


@st.cache_data(ttl=30, show_spinner=False)
def machine_gpus() -> api.GpuInventory:
    return api.discover_gpus()


def where_inputs(prefix: str, inventory: api.GpuInventory, *, several_gpus: bool) -> None:
    """The "Where to run" choice and its GPU count, kept in ``<prefix>_where`` and ``<prefix>_gpus``; read them
    back with ``chosen_backend``. ``several_gpus``: offer more than one GPU per job (torchrun, Slurm tasks)."""
    options = ["cpu", *(["gpu"] if not inventory.cpu_only else []), *(["slurm"] if api.slurm_available() else [])]
    where = st.radio("Where to run", options, format_func=WHERE.get, horizontal=True, key=f"{prefix}_where")
    if where == "gpu":
        st.dataframe(pd.DataFrame([{"GPU": g.index, "name": g.name, "memory used (MiB)": g.memory_used_mib,
                                    "memory (MiB)": g.memory_total_mib, "busy (%)": g.utilization_pct}
                                   for g in inventory.gpus]), hide_index=True)
        if several_gpus:
            st.number_input("GPUs per run", 1, len(inventory.gpus), 1, key=f"{prefix}_gpus",
                            help="The queue gives each run free GPUs of this machine (at most CFTCLIP_JOBS_PER_GPU "
                                 "runs per GPU; GPUs that other programs fill are skipped). More than one: torchrun.")
    elif where == "slurm" and several_gpus:
        st.number_input("GPUs per run", 0, 64, 1, key=f"{prefix}_gpus",
                        help="Each run is one Slurm job with this many GPUs (0: a CPU job). Partition, account, "
                             "time limit...: CFTCLIP_SLURM_* settings, see docs/slurm.md.")
    elif where == "slurm":
        st.toggle("On a GPU", value=True, key=f"{prefix}_slurm_gpu", help="One GPU for the job, or a CPU job.")
    if "slurm" not in options:
        st.caption("A Slurm cluster is offered when `sbatch` is on the app's PATH (run the studio on a login node "
                   "with a shared filesystem); see docs/slurm.md for the settings.")


def chosen_backend(prefix: str) -> tuple[str, int]:
    """(backend, GPUs per job) from ``where_inputs``: local on the CPU or one GPU, torchrun, or slurm."""
    state = st.session_state
    where = state.get(f"{prefix}_where", "cpu")
    if where == "cpu":
        return "local", 0
    if where == "slurm":
        return "slurm", int(state.get(f"{prefix}_gpus", int(bool(state.get(f"{prefix}_slurm_gpu", True)))))
    gpus = int(state.get(f"{prefix}_gpus", 1))
    return ("local" if gpus == 1 else "torchrun"), gpus


def remember_outcome(key: str, message: str | CftClipError) -> None:
    """What a button's callback did (a success in words, or the error), shown by ``show_outcome`` on the run
    that follows the click."""
    st.session_state[key] = ("error", message) if isinstance(message, CftClipError) else ("ok", message)


def show_outcome(key: str, icon: str = ":material/rocket_launch:") -> None:
    kind, what = st.session_state.pop(key, (None, None))
    if kind == "error":
        show_error(what)
    elif kind == "ok":
        st.success(escape_markdown(what), icon=icon)
