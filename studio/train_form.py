"""The Train page's New experiment form: datasets, base model and method, every ``TrainConfig`` field the
form offers (rendered in one place, ``config_fields``, pre-filled with the paper's values; the presets of
``studio.train_presets`` fill and lock them), seeds and where to run; the Launch button checks everything
before anything is queued."""

from __future__ import annotations

import streamlit as st

from annotations.importer import list_datasets
from annotations.models import User
from cftclip_core.errors import CftClipError, ConfigError
from cftclip_core.specs.models import KNOWN_MODELS, tower_depths
from cftclip_core.specs.replication import THRESHOLD_SOURCES
from cftclip_core.specs.training import FIELD_CHOICES, LOSSES, field_help
from studio import train_presets as presets
from studio.common import escape_markdown
from studio.instance import Studio
from studio.job_widgets import chosen_backend, remember_outcome, show_outcome, where_inputs
from train_jobs import api

PREFIX = "train"  # widget keys: train_<name>; config fields: train_cfg_<field>
LAUNCHED = "train_launched"  # the Launch button's outcome, shown on the next run
CHOSEN = "train_experiment"  # the experiment the live view shows in detail
FITTED = "train_freezing_fitted"  # what fit_freezing_to_model changed, said under the model picker
HYPERPARAMETERS = ("lr", "weight_decay", "batch_size", "max_epochs", "schedule", "warmup_steps", "val_every_steps",
                   "patience", "freeze_text_layers", "freeze_vision_layers", "grad_clip", "text_field", "max_steps",
                   "item_subset", "long_texts", "ties_improve")
COUNTERFACTUAL_OPTIONS = ("counterfactuals_per_text", "temperature")
ADVANCED = ("precision", "device", "num_workers", "gradient_checkpointing")
CHOICES = {**FIELD_CHOICES, "ties_improve": ("false", "true")}  # fields shown as a choice box
THRESHOLD_FROM = {"train-val": "the training run's validation pairs (train-val, the original code's)",
                  "eval-val": "the evaluation dataset's 'val' rows (eval-val)"}
OTHER_MODEL = "other"


def launch_section(app: Studio, user: User, inventory: api.GpuInventory) -> None:
    """The whole form, with the outcome of the last Launch under its button."""
    with app.sessions() as session:
        datasets = {d.id: f"{d.name} ({d.item_count} items)" for d in list_datasets(session)}
        checkpoints = api.own_checkpoints(session)
        if "train_name" not in st.session_state:
            st.session_state["train_name"] = api.unique_name(session, "experiment")
    st.button("Quick run on this machine", icon=":material/bolt:", key="train_quick", on_click=quick_run, args=(app,),
              help="Fills the form for a run that works offline here: a synthetic training set with its "
                   "counterfactuals (made for you), the tiny model, a few steps, one seed, the CPU.")
    if not datasets:
        st.info("No dataset yet: import one on the Import page, or use the quick run.")
        show_outcome(LAUNCHED)
        return
    st.text_input("Experiment name", key="train_name")
    train_id = dataset_inputs(app, datasets)
    method_inputs(app, train_id, datasets[train_id], checkpoints)
    st.checkbox("replicate_original: the released code exactly", key=presets.PRESET_KEY, on_change=toggle_replication,
                help="Periodic schedule, fp32 training and scoring, texts over 77 tokens dropped, ties in early "
                     "stopping count as improvement, threshold from the training run's validation pairs. Off: the "
                     "product's fixes (each recorded with the run).")
    st.markdown("**Hyperparameters** (the paper's, pre-filled)")
    config_fields(HYPERPARAMETERS)
    with st.expander("Precision, device, data loading"):
        config_fields(ADVANCED)
    left, right = st.columns([1, 3])
    left.text_input("Seeds", "0-4", key="train_seeds", help="e.g. 0-4 (the paper's) or 0,2,7: one run per seed.")
    right.text_input("Note (optional)", key="train_note")
    where_inputs(PREFIX, inventory, several_gpus=True)
    st.button("Launch", type="primary", icon=":material/rocket_launch:", key="train_launch", on_click=launch,
              args=(app, user))
    show_outcome(LAUNCHED)


def config_fields(names: tuple[str, ...], per_row: int = 4) -> None:
    """``TrainConfig`` fields as inputs, ``per_row`` a row: a choice box where the field has a fixed set of
    values, else its text (typed when the experiment is created; a bad value is refused naming the field),
    with ``field_help`` as the tooltip. Fields the replication preset sets are locked while it is on."""
    defaults = api.form_defaults()
    for start in range(0, len(names), per_row):
        for column, name in zip(st.columns(per_row), names[start:start + per_row]):
            key, default, locked = f"train_cfg_{name}", api.as_text(defaults[name]), presets.preset_locks(name)
            tip = (field_help(name) + ("; empty: none" if defaults[name] is None else "")
                   + ("; set by replicate_original" if locked else ""))
            if name in CHOICES:
                column.selectbox(name, CHOICES[name], index=list(CHOICES[name]).index(default), key=key,
                                 disabled=locked, help=tip)
            else:
                column.text_input(name, default, key=key, disabled=locked, help=tip)


def dataset_inputs(app: Studio, datasets: dict[int, str]) -> int:
    ids = list(datasets)
    train_id = st.selectbox("Training dataset", ids, format_func=datasets.get, key="train_dataset",
                            help="Its 'train' rows train; its 'val' rows validate unless you choose a validation "
                                 "dataset.")
    left, right = st.columns(2)
    left.selectbox("Validation data", [None, *ids], key="train_val",
                   format_func=lambda i: "the training dataset's 'val' rows" if i is None else datasets[i])
    right.selectbox("Evaluation dataset (labelled)", [None, *ids], key="train_eval",
                    format_func=lambda i: "none" if i is None else datasets[i],
                    help="Scored by each run's best model; metrics use its gold labels (else imported labels).")
    left, right = st.columns(2)
    threshold = left.selectbox("Threshold for the evaluation", ["val-median", "f1-optimal", "fixed"],
                               key="train_threshold", help="val-median: the original code's label-free rule; "
                                                           "f1-optimal: tuned on labelled validation rows.")
    if threshold == "fixed":
        right.number_input("Fixed threshold", -1.0, 1.0, 0.2, step=0.01, key="train_fixed_threshold")
    else:
        right.selectbox("threshold_from", list(THRESHOLD_SOURCES), format_func=THRESHOLD_FROM.get,
                        key=presets.THRESHOLD_FROM_KEY, disabled=presets.preset_locks("threshold_from"),
                        help="Where the threshold is chosen. train-val: the median (or best F1) over the training "
                             "run's validation pairs; eval-val: the evaluation dataset's own 'val' rows.")
    if st.session_state["train_eval"] == train_id:
        st.caption("The evaluation dataset is the training dataset: its 'train' rows count in the metrics too, "
                   "which flatters the model. A held-out labelled set (e.g. NewsTT) gives honest numbers.")
    with app.sessions() as session:
        presets.show_overlaps(session, train_id, st.session_state["train_val"], st.session_state["train_eval"])
    return train_id


def method_inputs(app: Studio, train_id: int, train_name: str, checkpoints: dict[str, str]) -> None:
    defaults = api.form_defaults()
    models = {**KNOWN_MODELS, **checkpoints, OTHER_MODEL: "another model: a hub id or a local folder"}
    model = st.selectbox("Base model", list(models), index=list(models).index(defaults["model"]),
                         format_func=lambda m: f"{m}: {models[m]}" if m in KNOWN_MODELS else models[m],
                         key="train_model", on_change=fit_freezing_to_model)
    if st.session_state.get(FITTED):
        st.caption(escape_markdown(f"Freezing fitted to the model: {st.session_state[FITTED]}"))
    if model == OTHER_MODEL:
        st.text_input("Hub id or local model folder", key="train_model_other")
    loss = st.radio("Method", list(LOSSES), index=list(LOSSES).index(defaults["loss"]), key="train_loss",
                    format_func=lambda name: f"{name}: {LOSSES[name].description}")
    with app.sessions() as session:
        per_item = api.counterfactuals_per_item(session, train_id)
        if per_item:
            presets.show_recipe(session, train_id, train_name, model if model != OTHER_MODEL else "MODEL")
    if LOSSES[loss].uses_counterfactuals and per_item == 0:
        st.warning(f"'{escape_markdown(train_name)}' has no counterfactual texts, and {loss} trains on them. Make "
                   f"them with `{api.counterfactual_command(model if model != OTHER_MODEL else 'MODEL')}` and "
                   "import that table, choose clip or i2t, or try the quick run above.")
    elif per_item:
        st.caption(f"'{escape_markdown(train_name)}' carries {per_item} counterfactual text(s) per item.")
    config_fields(COUNTERFACTUAL_OPTIONS)


def fit_freezing_to_model() -> None:
    """On a change of base model: a freeze depth the model's towers cannot take (the paper's 11 of ViT-L's 12
    text layers, on the 2-layer tiny model) becomes 'all but the last layer' of that model, and says so."""
    model = st.session_state["train_model"]
    depths = tower_depths(model) if model != OTHER_MODEL else None
    fitted = []
    for name, depth in zip(("freeze_text_layers", "freeze_vision_layers"), depths or ()):
        key = f"train_cfg_{name}"
        text = str(st.session_state.get(key, "")).strip()
        if text.isdigit() and int(text) > depth:
            st.session_state[key] = str(depth - 1)
            fitted.append(f"{name} {text} -> {depth - 1}")
    st.session_state[FITTED] = f"{model} has {depths[0]} text and {depths[1]} vision layers: {', '.join(fitted)}." \
        if fitted else None


def chosen_model() -> str:
    model = st.session_state["train_model"]
    if model != OTHER_MODEL:
        return model
    other = st.session_state.get("train_model_other", "").strip()
    if not other:
        raise ConfigError("Base model: give a hub id (e.g. openai/clip-vit-base-patch32) or a local model folder.")
    return other


def launch(app: Studio, user: User) -> None:
    """The Launch button: create the experiment (everything is checked first; nothing is made on an error)."""
    state = st.session_state
    try:
        config = api.typed_values({name: state[f"train_cfg_{name}"] for name in api.form_defaults()
                                   if f"train_cfg_{name}" in state})
        threshold = state["train_threshold"]
        backend, gpus = chosen_backend(PREFIX)
        request = api.ExperimentRequest(
            name=state["train_name"], config={**config, "model": chosen_model(), "loss": state["train_loss"]},
            train_dataset_id=state["train_dataset"], val_dataset_id=state["train_val"],
            eval_dataset_id=state["train_eval"],
            threshold=str(state["train_fixed_threshold"]) if threshold == "fixed" else threshold,
            threshold_from=None if threshold == "fixed" else state.get(presets.THRESHOLD_FROM_KEY),
            seeds=api.parse_seeds(state["train_seeds"]), backend=backend, gpus_per_run=gpus,
            note=state["train_note"])
        experiment = api.create_experiment(app.sessions, app.settings, request, user_id=user.id)
    except CftClipError as exc:
        remember_outcome(LAUNCHED, exc)
        return
    api.request_poll(app.settings)
    state[CHOSEN] = experiment.id
    remember_outcome(LAUNCHED, f"Experiment '{experiment.name}' created: {len(request.seeds)} run(s) queued.")
    with app.sessions() as session:
        state["train_name"] = api.unique_name(session, experiment.name)


def quick_run(app: Studio) -> None:
    """The quick-run button: make (once) the synthetic datasets with their counterfactuals, fill the form."""
    try:
        made = presets.ensure_quick_datasets(app.sessions, app.settings)
    except CftClipError as exc:
        remember_outcome(LAUNCHED, exc)
        return
    with app.sessions() as session:
        name = api.unique_name(session, "quick-run")
    presets.apply(presets.quick_run_form(made, name))
    st.session_state[FITTED] = None
    remember_outcome(LAUNCHED, presets.quick_run_note(app.settings.instance_dir))


def toggle_replication() -> None:
    """The replicate_original box: the preset's values in the form (locked), or the defaults back."""
    presets.apply(presets.preset_form(bool(st.session_state[presets.PRESET_KEY]), api.form_defaults()))
