"""Model loading: the tiny offline model goes through from_pretrained like any real one."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import CLIPModel, CLIPTokenizer

from cftclip_core.errors import ModelError
from cftclip_core.models import build_tiny_model, directory_fingerprint, load_model, tiny_config


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


def _copy_model(source: Path, target: Path, *, drop: tuple[str, ...] = ()) -> Path:
    shutil.copytree(source, target)
    for name in drop:
        (target / name).unlink(missing_ok=True)
    return target


def test_folder_without_tokenizer_files_names_them(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy_model(tiny_model_dir, tmp_path / "m", drop=("tokenizer.json", "vocab.json", "merges.txt"))
    with pytest.raises(ModelError, match=r"tokenizer\.json.*tokenizer\.save_pretrained") as info:
        load_model(str(folder))
    assert "hf download" not in str(info.value)


def test_folder_without_weights_or_config_lists_what_is_missing(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy_model(tiny_model_dir, tmp_path / "m", drop=("config.json", "model.safetensors"))
    with pytest.raises(ModelError) as info:
        load_model(str(folder))
    message = str(info.value)
    assert "config.json" in message and "model.safetensors" in message and "save_pretrained" in message
    assert "offline" not in message and "hf download" not in message


def test_tokenizer_must_fit_the_model_vocabulary(tiny_model_dir: Path, tmp_path: Path) -> None:
    tokenizer = CLIPTokenizer.from_pretrained(tiny_model_dir)
    config = tiny_config(500, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id)
    CLIPModel(config).save_pretrained(tmp_path / "small-vocab")
    tokenizer.save_pretrained(tmp_path / "small-vocab")
    with pytest.raises(ModelError, match=rf"{len(tokenizer)} tokens.*500"):
        load_model(str(tmp_path / "small-vocab"))


def test_tiny_tokenizer_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy_model(tiny_model_dir, tmp_path / "m", drop=("tokenizer.json", "tokenizer_config.json"))
    words = ["<|startoftext|>", "<|endoftext|>", "a</w>", "b</w>", "a", "b"]
    CLIPTokenizer(vocab={w: i for i, w in enumerate(words)}, merges=[]).save_pretrained(folder)
    with pytest.raises(ModelError, match="only 6 tokens"):
        load_model(str(folder))


def test_sharded_weights_are_fingerprinted(tiny_model, tmp_path: Path) -> None:  # noqa: ANN001
    fingerprints = []
    for name, parameter in (("original", None), ("text", "text_projection"), ("vision", "visual_projection")):
        model = copy.deepcopy(tiny_model.model)
        if parameter is not None:
            with torch.no_grad():
                getattr(model, parameter).weight.add_(0.01)
        model.save_pretrained(tmp_path / name, max_shard_size="100KB")
        tiny_model.tokenizer.save_pretrained(tmp_path / name)
        assert len(list((tmp_path / name).glob("*.safetensors"))) > 1
        fingerprints.append(directory_fingerprint(tmp_path / name))
    assert len(set(fingerprints)) == 3
    assert load_model(str(tmp_path / "vision")).fingerprint == fingerprints[2]


def test_tokenizer_settings_are_fingerprinted(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy_model(tiny_model_dir, tmp_path / "m")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["model_max_length"] = 20
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    assert directory_fingerprint(folder) != directory_fingerprint(tiny_model_dir)


def test_hub_id_with_a_dot_is_looked_up_on_the_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="offline") as info:
        load_model("timm/vit_base_patch16_clip_224.openai")
    assert "No model folder" not in str(info.value)


def test_damaged_weights_file_is_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy_model(tiny_model_dir, tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelError, match="damaged") as info:
        load_model(str(folder))
    assert "model.safetensors" in str(info.value)


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_device_without_a_gpu_is_refused(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, device: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelError, match="No CUDA GPU is available here; use --device cpu"):
        load_model(str(tiny_model_dir), device=device)


def test_unknown_device_name_is_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelError, match="'gpu0'.*cpu"):
        load_model(str(tiny_model_dir), device="gpu0")
