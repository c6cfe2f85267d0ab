"""The specifications: torch-free, one set of rules for the trainer, the command line, the queue and the form."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cftclip_core.errors import ConfigError
from cftclip_core.specs.seeds import check_seeds, format_seeds, parse_seeds
from cftclip_core.specs.training import FIELD_CHOICES, FIELD_HELP, LOSSES, TrainConfig, as_text, typed_values

TORCH_FREE = ["cftclip_core.specs.training", "cftclip_core.specs.seeds", "cftclip_core.specs.counterfactuals",
              "cftclip_core.specs.replication", "cftclip_core.specs.models"]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_specs_import_no_torch(module: str) -> None:
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False", f"{module} pulls in torch"


def test_loss_specs_say_what_the_loss_modules_do() -> None:
    from cftclip_core.loss import build_loss

    for name, spec in LOSSES.items():
        module = build_loss(name)
        assert (module.uses_counterfactuals, module.learns_scale) == (spec.uses_counterfactuals, spec.learns_scale)


def test_form_text_round_trips_and_bad_text_is_refused_naming_the_field() -> None:
    defaults = TrainConfig()
    texts = {name: as_text(getattr(defaults, name)) for name in TrainConfig.field_names()}
    assert TrainConfig.from_texts(texts) == defaults
    assert TrainConfig.from_texts({"snapshot_steps": "400, 1200"}).snapshot_steps == (400, 1200)
    assert typed_values({"lr": "inf"}) == {"lr": "inf"}  # left for validate, which names the field
    for texts, message in [({"lr": "inf"}, "lr='inf' is not valid"), ({"batch_size": "1"}, "batch_size=1 is not"),
                           ({"max_steps": str(10**23)}, "max_steps=.* is not valid"),
                           ({"snapshot_steps": "a,b"}, "snapshot_steps='a,b' is not valid")]:
        with pytest.raises(ConfigError, match=message):
            TrainConfig.from_texts(texts)
    with pytest.raises(ConfigError, match="unknown field.*batch_sise"):
        TrainConfig.from_mapping({"batch_sise": 8})
    with pytest.raises(ConfigError, match="lr=nan is not valid"):
        TrainConfig.from_mapping({"lr": float("nan")})


def test_every_training_field_says_what_it_does_and_fixed_sets_are_what_validate_accepts() -> None:
    assert list(FIELD_HELP) == list(TrainConfig.field_names())  # a new field needs its help: --help and the form
    assert all(text.strip() and "%" not in text for text in FIELD_HELP.values())  # argparse reads % as a format
    defaults = TrainConfig()
    for name, allowed in FIELD_CHOICES.items():
        assert getattr(defaults, name) in allowed
        with pytest.raises(ConfigError, match=f"{name}='bogus' is not valid"):
            TrainConfig(**{name: "bogus"}).validate()


def test_seeds_parse_format_and_check() -> None:
    assert parse_seeds("0-2, 7") == (0, 1, 2, 7)
    assert format_seeds([2, 0, 1]) == "0-2" and format_seeds([0, 2]) == "0,2"
    assert parse_seeds(format_seeds((3, 5, 9))) == (3, 5, 9)
    for bad in [(), (0, 0), (-1,), (True,), (10**23,)]:
        with pytest.raises(ConfigError):
            check_seeds(bad)


def test_tower_depths_read_the_config_file_as_transformers_does(tmp_path, tiny_model_dir) -> None:  # noqa: ANN001
    import json

    from transformers import CLIPConfig

    from cftclip_core.specs.models import TINY_NAME, tower_depths

    assert tower_depths(TINY_NAME) == (2, 2) and tower_depths(str(tiny_model_dir)) == (2, 2)
    for name, config in {"partial": {"model_type": "clip", "text_config": {"num_hidden_layers": 3}},
                         "old-keys": {"model_type": "clip", "vision_config_dict": {"num_hidden_layers": 5}}}.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        expected = CLIPConfig.from_dict(config)
        assert tower_depths(str(folder)) == (expected.text_config.num_hidden_layers,
                                             expected.vision_config.num_hidden_layers)
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert tower_depths(str(tmp_path / "bert")) is None  # not a CLIP model
    assert tower_depths(str(tmp_path / "partial" / "missing")) is None  # neither a folder nor a downloaded hub id
    assert tower_depths("no-such-org/no-such-model") is None


def test_counterfactual_columns_are_named_in_one_place() -> None:
    from cftclip_core.specs.counterfactuals import (
        counterfactual_column,
        counterfactual_columns,
        counterfactual_texts,
        is_counterfactual_column,
        similarity_column,
    )

    assert counterfactual_columns(3) == ["counterfactual", "counterfactual_2", "counterfactual_3"]
    assert similarity_column(1) == "cf_similarity_2" and counterfactual_column(0) == "counterfactual"
    assert not is_counterfactual_column("cf_status") and not is_counterfactual_column("counterfactual_x")
    row = {"counterfactual_10": "j", "counterfactual_2": "b", "counterfactual": "a", "counterfactual_3": "",
           "cf_status": "ok"}
    assert counterfactual_texts(row) == ("a", "b", "j")  # by number, empty ones left out


def test_recipe_record_round_trips_through_its_sidecar(tmp_path) -> None:  # noqa: ANN001
    from cftclip_core.specs.counterfactuals import Recipe, read_sidecar, sidecar_path, write_sidecar

    recipe = Recipe(name="paper", tagger="spacy:en_core_web_trf", infiller="mlm:bert-base-uncased@T=2",
                    temperature=2.0, filter_model="openai/clip-vit-large-patch14", max_tries=10, per_text=1, seed=0,
                    budget=0.3, entity_labels=("PERSON",), vocabulary="whole-words", long_texts="truncate",
                    text_field="summary", window=77, versions={"spacy": "3.8.18"})
    assert recipe.summary().startswith("paper: spacy:en_core_web_trf, mlm:bert-base-uncased@T=2, filter openai")
    path = write_sidecar(tmp_path / "cf.csv", recipe, {"ok": 3})
    assert path == sidecar_path(tmp_path / "cf.csv") == tmp_path / "cf.csv.recipe.json"
    record = read_sidecar(tmp_path / "cf.csv")
    assert Recipe.from_json(record["recipe"]) == recipe and record["statuses"] == {"ok": 3}
    assert read_sidecar(tmp_path / "other.csv") is None


def test_replicate_original_fills_the_preset_and_refuses_contradictions() -> None:
    from cftclip_core.specs.replication import REPLICATE_ORIGINAL, resolve_threshold_from

    config = TrainConfig.from_texts({"replicate_original": "true"})
    assert {name: getattr(config, name) for name in REPLICATE_ORIGINAL.train} == dict(REPLICATE_ORIGINAL.train)
    with pytest.raises(ConfigError, match="schedule='cosine' contradicts replicate_original"):
        TrainConfig.from_mapping({"replicate_original": True, "schedule": "cosine"})
    with pytest.raises(ConfigError, match="ties_improve=False is not valid: replicate_original sets it to true"):
        TrainConfig(replicate_original=True, schedule="periodic", precision="fp32", long_texts="drop").validate()
    assert TrainConfig.from_mapping({"replicate_original": True, "precision": "fp32"}).precision == "fp32"
    assert [resolve_threshold_from(t, None) for t in ("val-median", "f1-optimal", 0.2)] == ["train-val", "eval-val",
                                                                                           None]
    assert resolve_threshold_from("f1-optimal", None, replicate=True) == "train-val"
    with pytest.raises(ConfigError, match="threshold_from='best' is not valid"):
        resolve_threshold_from("val-median", "best")
