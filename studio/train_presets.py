"""The Train page's presets and warnings: a quick run that works offline on a fresh instance, the
``replicate_original`` preset, the counterfactuals' recipe, and overlapping training/validation/evaluation
sets. The parts that decide (datasets, overlaps) are plain functions; the ``show_*`` ones draw them."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from annotations.importer import import_dataset
from annotations.models import Dataset
from annotations.settings import Settings
from cftclip_core.counterfactuals import make_counterfactuals, plan_recipe
from cftclip_core.formats import read_table, write_table
from cftclip_core.models import TINY_NAME
from cftclip_core.specs.counterfactuals import sidecar_path, write_sidecar
from cftclip_core.specs.replication import REPLICATE_ORIGINAL
from cftclip_core.specs.training import as_text
from cftclip_core.synthetic import WorldConfig, generate_dataset
from studio.common import escape_markdown
from train_jobs import views

QUICK_TRAIN = "quick run: synthetic training set"
QUICK_EVAL = "quick run: synthetic evaluation set"
QUICK_ITEMS = 120  # images of the synthetic world: 96 train, 12 val, 12 test
QUICK_FOLDER = "quick-run"
QUICK_CONFIG = {"batch_size": "8", "max_steps": "12", "val_every_steps": "6", "freeze_text_layers": "1",
                "precision": "fp32", "lr": "0.0005", "max_epochs": "20"}  # a minute or two on a CPU
PRESET_KEY = "train_cfg_replicate_original"
THRESHOLD_FROM_KEY = "train_threshold_from"


@dataclass(frozen=True)
class QuickDatasets:
    train_id: int
    eval_id: int
    made: bool  # False: they were already there


def ensure_quick_datasets(sessions: sessionmaker[Session], settings: Settings) -> QuickDatasets:
    """The quick run's datasets, made once: a synthetic world rendered in the instance folder, its
    counterfactuals made by the offline recipe (the world's names swapped; nothing to download), its
    train and val rows as one dataset and its labelled test rows as another (no overlap)."""
    with sessions() as session:
        found = dict(session.execute(select(Dataset.name, Dataset.id).where(Dataset.name.in_([QUICK_TRAIN,
                                                                                               QUICK_EVAL]))).all())
    if len(found) == 2:
        return QuickDatasets(found[QUICK_TRAIN], found[QUICK_EVAL], made=False)
    folder = settings.instance_dir / QUICK_FOLDER
    shutil.rmtree(folder, ignore_errors=True)
    csv = generate_dataset(folder, QUICK_ITEMS, WorldConfig(image_size=64), seed=0)
    table = read_table(csv)
    made = make_counterfactuals(table, plan_recipe("offline"))
    train_path = write_table([r for r in made.records if r.split in ("train", "val")], folder / "train.csv")
    write_sidecar(train_path, made.recipe, made.counts)
    eval_path = write_table([r for r in made.records if r.split == "test"], folder / "eval.csv")
    ids = {}
    for name, path in ((QUICK_TRAIN, train_path), (QUICK_EVAL, eval_path)):
        ids[name] = found.get(name) or import_dataset(
            sessions, settings, read_table(path), name,
            description="Made by the Train page's quick run: a synthetic world (fictional people drawn as figures) "
                        f"with counterfactuals by the offline recipe; recipe record in {sidecar_path(train_path)}.").id
    return QuickDatasets(ids[QUICK_TRAIN], ids[QUICK_EVAL], made=True)


def quick_run_form(datasets: QuickDatasets, experiment_name: str) -> dict[str, object]:
    """The form's values (session-state keys) for the quick run: the tiny model, a few steps, one seed, the CPU."""
    return {"train_name": experiment_name, "train_dataset": datasets.train_id, "train_val": None,
            "train_eval": datasets.eval_id, "train_model": TINY_NAME, "train_loss": "cft",
            "train_threshold": "val-median", THRESHOLD_FROM_KEY: "train-val", "train_seeds": "0", "train_where": "cpu",
            PRESET_KEY: False, **{f"train_cfg_{name}": value for name, value in QUICK_CONFIG.items()}}


def preset_form(on: bool, defaults: Mapping[str, object]) -> dict[str, object]:
    """The form's values when ``replicate_original`` is switched on (the preset's) or off (the defaults)."""
    fields = {f"train_cfg_{name}": as_text(value if on else defaults[name])
              for name, value in REPLICATE_ORIGINAL.train.items()}
    return {**fields, THRESHOLD_FROM_KEY: REPLICATE_ORIGINAL.threshold_from if on else "train-val"}


def preset_locks(name: str) -> bool:
    """Whether a form field is fixed by the replication preset while it is on."""
    return bool(st.session_state.get(PRESET_KEY)) and (name in REPLICATE_ORIGINAL.train or name == "threshold_from")


def overlap_warnings(session: Session, train_id: int, val_id: int | None, eval_id: int | None) -> list[str]:
    """Sentences naming each pair of the experiment's sets that share items (the same image and text)."""
    return [f"The {a} and {b} sets share {n} item(s) (the same image and text): the {b} numbers flatter the model."
            for a, b, n in views.split_overlaps(session, train_id, val_id, eval_id)]


# --- drawing -----------------------------------------------------------------------------------------------
def show_recipe(session: Session, dataset_id: int, dataset_name: str, model: str) -> None:
    """Which recipe made the training dataset's counterfactuals; loudly when it is not the paper's."""
    recipes = views.counterfactual_recipes(session, dataset_id)
    name = escape_markdown(dataset_name)
    if not recipes:
        st.caption(f"'{name}' records no counterfactual recipe (made before recipes were recorded, or by hand).")
        return
    lines = "\n".join(f"- {escape_markdown(recipe)}" for recipe in recipes)
    if all(recipe.startswith("paper:") for recipe in recipes):
        st.caption(f"Counterfactuals of '{name}' made with the paper's recipe:\n{lines}")
    else:
        st.warning(f"The counterfactuals of '{name}' were not made with the paper's recipe (spaCy en_core_web_trf, "
                   "bert-base-uncased at temperature 2.0, CLIP filter with the training model), so results are not "
                   f"the paper's method:\n{lines}\n\nMake them again with `{views.counterfactual_command(model)}` where "
                   "its models are installed (docs/reproduce-paper.md).", icon=":material/warning:")


def show_overlaps(session: Session, train_id: int, val_id: int | None, eval_id: int | None) -> None:
    for sentence in overlap_warnings(session, train_id, val_id, eval_id):
        st.warning(sentence, icon=":material/join_inner:")


def apply(values: Mapping[str, object]) -> None:
    for key, value in values.items():
        st.session_state[key] = value


def quick_run_note(root: Path) -> str:
    return (f"Quick run: the tiny offline model (random weights: its numbers carry no meaning) learns a synthetic "
            f"world of {QUICK_ITEMS} images for {QUICK_CONFIG['max_steps']} steps on this machine's CPU, "
            f"counterfactuals made for you by the offline recipe (files in {root / QUICK_FOLDER}). Press Launch.")
