"""Model loading: the tiny offline model goes through from_pretrained like any real one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cftclip_core.errors import ModelError
from cftclip_core.models import build_tiny_model, directory_fingerprint, load_model


def test_tiny_model_build_is_reproducible(tiny_model_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_model(tmp_path / "again")
    assert directory_fingerprint(again) == directory_fingerprint(tiny_model_dir)
    assert directory_fingerprint(build_tiny_model(tmp_path / "seed1", seed=1)) != directory_fingerprint(tiny_model_dir)


def test_tiny_model_loads_with_tokenizer_pooling_and_processor(tiny_model) -> None:  # noqa: ANN001
    assert tiny_model.is_tiny
    assert tiny_model.max_text_tokens == 77
    assert tiny_model.preprocess.crop == 224
    config = tiny_model.model.config.text_config
    # The trained tokenizer shares one id for pad and eos; pooling must look for that id.
    assert config.eos_token_id == tiny_model.tokenizer.eos_token_id == tiny_model.tokenizer.pad_token_id
    ids = tiny_model.tokenizer(["Grace Hopper retires from the Navy."], return_tensors="pt")["input_ids"]
    assert ids[0, -1].item() == tiny_model.tokenizer.eos_token_id


def test_tokenizer_keeps_punctuation_at_word_ends(tiny_model) -> None:  # noqa: ANN001
    tokenizer = tiny_model.tokenizer
    for text in ("Qor!", "wins 3-2;", "price: 5%", "caf\u00e9"):
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "") == text.lower().replace(" ", "")


def test_fingerprint_changes_when_weights_change(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = load_model(str(tiny_model_dir))
    with torch.no_grad():
        model.model.text_projection.weight.add_(0.01)
    model.model.save_pretrained(tmp_path / "changed")
    model.tokenizer.save_pretrained(tmp_path / "changed")
    assert directory_fingerprint(tmp_path / "changed") != model.fingerprint


def test_tiny_demo_name_builds_into_cache(tmp_path: Path) -> None:
    loaded = load_model("tiny-demo", cache_dir=tmp_path)
    assert loaded.is_tiny and (tmp_path / "tiny-demo-v1" / "cftclip_tiny.json").is_file()
    assert load_model("tiny-demo", cache_dir=tmp_path).fingerprint == loaded.fingerprint


def test_unknown_hub_id_fails_fast_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="offline.*tiny-demo"):
        load_model("no-such-org/no-such-clip")


def test_missing_local_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="No model folder"):
        load_model(str(tmp_path / "nowhere" / "model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError):
        load_model(str(tmp_path / "empty"))
