"""The proof's specification (cftclip_core.specs.proof): torch-free, the pre-registered grid, settings checks."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from cftclip_core.errors import ConfigError
from cftclip_core.specs.proof import (
    ARMS,
    PREREGISTERED_SEEDS,
    PRIMARY_CONTRASTS,
    WORLDS,
    ProofSettings,
    RunKey,
    grid,
    parse_steps,
    world_config,
)


def test_importing_the_spec_loads_no_torch() -> None:
    code = ("import sys, cftclip_core.specs.proof, cftclip_core.proof.plan; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_default_grid_is_the_preregistered_one() -> None:
    runs = grid()
    assert PREREGISTERED_SEEDS == (100, 101, 102, 103, 104, 105)
    assert ProofSettings().stage0_steps == (400, 1200, 2400)
    assert WORLDS["many"].arms == ("zero-shot", "clip", "i2t", "cft", "cft-m3")
    assert WORLDS["few"].arms == ("zero-shot", "clip", "i2t", "cft")
    assert (ARMS["cft"].loss, ARMS["cft"].swaps, ARMS["cft-m3"].swaps) == ("cft", 1, 3)
    assert PRIMARY_CONTRASTS == (("cft", "i2t"), ("cft", "clip"))
    assert len(runs) == 6 * 9 and all(r.data_seed == r.seed for r in runs)
    assert runs[:3] == [RunKey("many", "zero-shot", s, s) for s in (100, 101, 102)]  # seeds innermost


def test_a_grid_can_hold_the_data_fixed_and_choose_arms() -> None:
    runs = grid(["few"], [1, 2], arms=["cft"], data_seed=7)
    assert runs == [RunKey("few", "cft", 1, 7), RunKey("few", "cft", 2, 7)]
    with pytest.raises(ConfigError, match="Unknown arm 'plain'"):
        grid(["few"], [1], arms=["plain"])
    with pytest.raises(ConfigError, match="repeat"):
        grid(["few"], [1, 1])


def test_each_data_seed_is_its_own_world_with_the_tokenizers_names() -> None:
    settings = ProofSettings()
    a, b = world_config("few", settings, 100), world_config("few", settings, 101)
    assert (a.seed, b.seed, a.name_seed, a.n_contexts) == (100, 101, 0, 6)


@pytest.mark.parametrize(("change", "message"), [
    ({"stage0_steps": ()}, "--stage0-steps= is not valid"),
    ({"stage0_steps": (1200, 400)}, "--stage0-steps=1200,400 is not valid"),
    ({"stage0_steps": (400, 400)}, "--stage0-steps=400,400 is not valid: give increasing"),
    ({"stage0_steps": (0, 400)}, "--stage0-steps=0,400"),
    ({"train_items": 10}, "--train-items=10 is not valid: it must be at least --batch-size (64)"),
    ({"temperature": 0.0}, "--temperature=0.0 is not valid"),
    ({"text_field": "body"}, "--text-field='body' is not valid: choose one of title, summary"),
])
def test_bad_settings_name_the_flag(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        dataclasses.replace(ProofSettings(), **change).validate()


def test_stage0_steps_parse_from_the_flag() -> None:
    assert parse_steps("400,1200, 2400") == (400, 1200, 2400)
    with pytest.raises(ConfigError, match="--stage0-steps=4x is not valid"):
        parse_steps("4x")
