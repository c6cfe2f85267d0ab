"""Tests for the contrastive losses (cftclip_core.loss), including 2-process gloo equivalence."""

from __future__ import annotations

import math
import socket
import sys
import types
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from cftclip_core.errors import CftClipError, ConfigError, TrainingError
from cftclip_core.loss import (
    LOSSES,
    ClipLoss,
    CounterfactualLoss,
    ImageToTextLoss,
    SymmetricCounterfactualLoss,
    build_loss,
    gather_features,
)


def features(batch: int = 6, dim: int = 16, m: int = 1, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    image, text = torch.randn(batch, dim, generator=g), torch.randn(batch, dim, generator=g)
    cf = torch.randn(batch * m, dim, generator=g)
    return image, text, cf


def paper_formula(image: torch.Tensor, text: torch.Tensor, cf: torch.Tensor, tau: float) -> torch.Tensor:
    """The paper's loss transcribed literally (exp / sum / log), in float64."""
    v, t, c = (F.normalize(x.double(), dim=-1) for x in (image, text, cf))
    batch = v.shape[0]
    total = torch.zeros((), dtype=torch.float64)
    for i in range(batch):
        numerator = torch.exp(v[i] @ t[i] / tau)
        denominator = sum(torch.exp(v[i] @ t[j] / tau) for j in range(batch))
        denominator = denominator + sum(torch.exp(v[i] @ c[j] / tau) for j in range(c.shape[0]))
        total = total - torch.log(numerator / denominator)
    return total / batch


# --- values ---------------------------------------------------------------------------------------
def test_cft_loss_matches_the_papers_formula() -> None:
    image, text, cf = features()
    ours = CounterfactualLoss()(image, text, cf)
    assert ours.dtype == torch.float32
    assert ours.item() == pytest.approx(paper_formula(image, text, cf, 0.05).item(), rel=1e-5)


def test_several_counterfactuals_per_sample_flat_or_grouped() -> None:
    image, text, cf = features(batch=5, m=3)
    loss = CounterfactualLoss()
    flat = loss(image, text, cf)
    grouped = loss(image, text, cf.reshape(5, 3, -1))
    assert flat.item() == pytest.approx(grouped.item(), rel=1e-6)
    assert flat.item() == pytest.approx(paper_formula(image, text, cf, 0.05).item(), rel=1e-5)
    # More hard negatives can only make the task harder: the loss grows with each added counterfactual.
    assert flat > loss(image, text, cf[:5])


def test_hand_computed_values() -> None:
    # Image i matches text i; its counterfactual is exactly the other image's text, so each image has
    # one logit tie with a hard negative: loss = log(2 + 2 e^-2) at scale 2 (temperature 0.5).
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    image, text, cf = torch.stack([e1, e2]), torch.stack([e1, e2]), torch.stack([e2, e1])
    assert CounterfactualLoss(0.5)(image, text, cf).item() == pytest.approx(math.log(2 + 2 * math.exp(-2)), rel=1e-6)
    assert ImageToTextLoss(0.5)(image, text).item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)


def test_loss_is_stable_where_the_literal_formula_overflows() -> None:
    image, text, cf = features()
    tau = 1e-4  # logits up to 1e4: exp() overflows even in float64
    assert not torch.isfinite(paper_formula(image, text, cf, tau))
    ours = CounterfactualLoss(tau)(image, text, cf)
    assert torch.isfinite(ours)
    # Same value as the log-sum-exp form computed independently.
    v, t, c = (F.normalize(x.double(), dim=-1) for x in (image, text, cf))
    logits = v @ torch.cat([t, c]).T / tau
    expected = (torch.logsumexp(logits, dim=1) - logits.diagonal()).mean()
    assert ours.item() == pytest.approx(expected.item(), rel=1e-5)


def test_features_are_normalised_inside_the_loss() -> None:
    image, text, cf = features()
    loss = CounterfactualLoss()
    assert loss(image * 7, text * 0.1, cf * 3).item() == pytest.approx(loss(image, text, cf).item(), rel=1e-5)


def test_clip_loss_matches_the_loss_of_transformers_clip_model() -> None:
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=8, projection_dim=8),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=16, patch_size=8, projection_dim=8),
        projection_dim=8,
    )
    model = CLIPModel(config).eval()
    with torch.no_grad():
        out = model(input_ids=torch.randint(0, 50, (5, 8)), pixel_values=torch.randn(5, 3, 16, 16), return_loss=True)
        ours = ClipLoss()(out.image_embeds, out.text_embeds, logit_scale=model.logit_scale)
    assert ours.item() == pytest.approx(out.loss.item(), rel=1e-5)


def test_learned_scale_is_clipped_at_100_like_clip() -> None:
    image, text, _ = features()
    at_100 = ClipLoss()(image, text, logit_scale=torch.tensor(math.log(100.0)))
    above = ClipLoss()(image, text, logit_scale=torch.tensor(10.0))
    assert above.item() == pytest.approx(at_100.item(), rel=1e-5)


def test_symmetric_loss_is_mean_of_i2t_with_counterfactuals_and_t2i() -> None:
    image, text, cf = features(m=2)
    logit_scale = torch.tensor(2.0)
    scale = math.exp(2.0)
    v, t, c = (F.normalize(x, dim=-1) for x in (image, text, cf))
    labels = torch.arange(len(v))
    i2t = F.cross_entropy(scale * v @ torch.cat([t, c]).T, labels)
    t2i = F.cross_entropy(scale * t @ v.T, labels)
    got = SymmetricCounterfactualLoss()(image, text, cf, logit_scale=logit_scale)
    assert got.item() == pytest.approx(((i2t + t2i) / 2).item(), rel=1e-5)
    fixed = SymmetricCounterfactualLoss(0.05, learn_scale=False)
    i2t_fixed = CounterfactualLoss(0.05)(image, text, cf)
    t2i_fixed = F.cross_entropy(t @ v.T / 0.05, labels)
    assert fixed(image, text, cf).item() == pytest.approx(((i2t_fixed + t2i_fixed) / 2).item(), rel=1e-5)


def test_loss_is_float32_under_bf16_autocast() -> None:
    image, text, cf = features()
    expected = CounterfactualLoss()(image, text, cf)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got = CounterfactualLoss()(image, text, cf)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


# --- gradients ------------------------------------------------------------------------------------
def test_gradients_push_images_away_from_their_counterfactuals() -> None:
    image, text, cf = (x.requires_grad_() for x in features(m=1))
    loss = CounterfactualLoss()(image, text, cf)
    loss.backward()
    for tensor in (image, text, cf):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0
    with torch.no_grad():
        before = F.cosine_similarity(image, cf).sum()
        after = F.cosine_similarity(image - 0.01 * image.grad, cf).sum()
        positive_before = F.cosine_similarity(image, text).sum()
        positive_after = F.cosine_similarity(image - 0.01 * image.grad, text).sum()
    assert after < before
    assert positive_after > positive_before


def test_learned_scale_gets_a_gradient() -> None:
    image, text, cf = features()
    for loss in (ClipLoss(), SymmetricCounterfactualLoss()):
        logit_scale = torch.tensor(math.log(1 / 0.07), requires_grad=True)
        loss(image, text, cf if loss.uses_counterfactuals else None, logit_scale).backward()
        assert logit_scale.grad is not None and logit_scale.grad.item() != 0


# --- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [0, -0.05, float("nan"), float("inf"), "warm"])
def test_bad_temperature_is_refused(temperature: object) -> None:
    with pytest.raises(ConfigError, match="temperature"):
        CounterfactualLoss(temperature)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("shapes", "match"),
    [
        (((4, 8), (3, 8), (4, 8)), "one original text per image"),
        (((4, 8), (4, 6), (4, 8)), "one original text per image"),
        (((4, 8), (4, 8), (6, 8)), "counterfactuals per image"),
        (((4, 8), (4, 8), (4, 8, 2)), "counterfactuals per image"),
        (((4, 8), (4, 8), (4, 0, 8)), "counterfactuals per image"),
        (((4, 8), (4, 8), (4, 6)), "counterfactuals per image"),
        (((0, 8), (0, 8), (0, 8)), "empty batch"),
        (((8,), (8,), (8,)), "shape \\(batch, dim\\)"),
    ],
)
def test_bad_shapes_are_refused_with_a_clear_error(shapes: tuple, match: str) -> None:
    image, text, cf = (torch.zeros(s) for s in shapes)
    with pytest.raises(TrainingError, match=match):
        CounterfactualLoss()(image, text, cf)


def test_missing_or_extra_inputs_are_refused() -> None:
    image, text, cf = features()
    with pytest.raises(TrainingError, match="needs counterfactual"):
        CounterfactualLoss()(image, text)
    with pytest.raises(TrainingError, match="takes no counterfactual"):
        ImageToTextLoss()(image, text, cf)
    with pytest.raises(TrainingError, match="logit_scale"):
        ClipLoss()(image, text)
    with pytest.raises(TrainingError, match="fixed temperature"):
        CounterfactualLoss()(image, text, cf, logit_scale=torch.tensor(1.0))


def test_distributed_settings_are_checked() -> None:
    image, text, cf = features()
    with pytest.raises(ConfigError, match="rank"):
        CounterfactualLoss(rank=2, world_size=2)
    with pytest.raises(ConfigError, match="world_size"):
        build_loss("cft", world_size=0)
    with pytest.raises(TrainingError, match="init_process_group"):
        CounterfactualLoss(rank=0, world_size=2)(image, text, cf)
    assert gather_features(image, text, None, rank=0, world_size=1) == (image, text, None)


def test_build_loss_by_arm_name() -> None:
    kinds = {name: type(build_loss(name)) for name in LOSSES}
    assert kinds == {"clip": ClipLoss, "i2t": ImageToTextLoss, "cft": CounterfactualLoss,
                     "cftsym": SymmetricCounterfactualLoss}
    assert build_loss("cftsym").learns_scale and build_loss("clip").learns_scale
    assert not build_loss("cft").learns_scale and build_loss("cft").uses_counterfactuals
    assert build_loss("i2t", temperature=0.1).temperature == 0.1
    with pytest.raises(ConfigError, match="choose one of clip, i2t, cft, cftsym"):
        build_loss("negclip")
    assert all(issubclass(e, CftClipError) for e in (ConfigError, TrainingError))


# --- two processes (gloo) equal one process on the same global batch ---------------------------------
WORLD = 2
GLOBAL_BATCH = 8
M = 3


def _call(name: str, rank: int, world_size: int, image, text, cf, scale):  # noqa: ANN001, ANN202
    loss = build_loss(name, rank=rank, world_size=world_size)
    return loss(image, text, cf if loss.uses_counterfactuals else None, scale if loss.learns_scale else None)


def _leaves(image, text, cf, scale):  # noqa: ANN001, ANN202
    return [x.detach().clone().requires_grad_() for x in (image, text, cf, scale)]


def _ddp_worker(rank: int, port: int, data: tuple[torch.Tensor, ...], out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    try:
        local = GLOBAL_BATCH // WORLD
        part = slice(rank * local, (rank + 1) * local)
        image, text, cf, scale = data
        results: dict[str, object] = {}
        for name in LOSSES:
            leaves = _leaves(image[part], text[part], cf[part], scale)
            value = _call(name, rank, WORLD, *leaves)
            value.backward()
            results[name] = {"loss": value.detach(), "grads": [x.grad for x in leaves]}
        short = local - rank  # rank 1 passes one pair fewer
        try:
            _call("cft", rank, WORLD, image[:short], text[:short], cf[:short], scale)
        except TrainingError as exc:
            results["unequal"] = str(exc)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_equal_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Spawned workers re-run the parent's __main__ file; after an AppTest that is a Streamlit page.
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    g = torch.Generator().manual_seed(3)
    image = torch.randn(GLOBAL_BATCH, 16, generator=g)
    text = torch.randn(GLOBAL_BATCH, 16, generator=g)
    cf = torch.randn(GLOBAL_BATCH, M, 16, generator=g)  # M counterfactuals per sample, grouped
    scale = torch.tensor(math.log(1 / 0.07))
    mp.spawn(_ddp_worker, args=(_free_port(), (image, text, cf, scale), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    local = GLOBAL_BATCH // WORLD

    for name in LOSSES:
        leaves = _leaves(image, text, cf, scale)
        single = _call(name, 0, 1, *leaves)
        single.backward()
        # The rank losses average to the global loss (each rank averages over its local images).
        mean_loss = sum(r[name]["loss"] for r in ranks) / WORLD
        assert mean_loss.item() == pytest.approx(single.item(), rel=1e-5), name
        for r, result in enumerate(ranks):
            part = slice(r * local, (r + 1) * local)
            for which, (got, full) in enumerate(zip(result[name]["grads"][:3], leaves[:3])):
                if full.grad is None:  # features a loss does not use (counterfactuals of clip / i2t)
                    assert got is None, (name, which)
                    continue
                # Feature gradients are world_size x the single-process ones; DDP's averaging of the
                # parameter gradients divides that back out.
                torch.testing.assert_close(got / WORLD, full.grad[part], rtol=1e-4, atol=1e-6)
        scale_grads = [r[name]["grads"][3] for r in ranks]
        if leaves[3].grad is None:
            assert all(s is None for s in scale_grads)
        else:
            torch.testing.assert_close(sum(scale_grads) / WORLD, leaves[3].grad, rtol=1e-4, atol=1e-6)

    for r in ranks:
        assert "different batch sizes" in r["unequal"] and "drop_last" in r["unequal"]
