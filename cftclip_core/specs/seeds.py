"""Seed lists as people type them: ``0-4``, ``0,2,3`` or ``0-2,7``."""

from __future__ import annotations

import re
from collections.abc import Sequence

from cftclip_core.errors import ConfigError

MAX_SEED = 2**31 - 1  # fits a database integer column, numpy's and torch's seeds
MAX_SEEDS = 100  # seeds in one list: more is almost certainly a typo (0-1000 instead of 0-10)


def parse_seeds(text: str, *, what: str = "Seeds") -> tuple[int, ...]:
    """The seeds of ``text`` in the order given, repeats dropped; ``ConfigError`` says what to type instead."""
    seeds: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        first = int(match.group(1)) if match else 0
        last = int(match.group(2)) if match and match.group(2) is not None else first
        if not match or last < first or last > MAX_SEED or last - first >= MAX_SEEDS:
            raise ConfigError(
                f"{what} '{text}' are not valid: give integers from 0 to {MAX_SEED} and ranges such as 0-4 or "
                f"0,2,3 (a range runs upwards; at most {MAX_SEEDS} seeds).")
        seeds.extend(range(first, last + 1))
    unique = tuple(dict.fromkeys(seeds))
    if len(unique) > MAX_SEEDS:
        raise ConfigError(f"{what} '{text}' name {len(unique)} seeds; at most {MAX_SEEDS} are allowed.")
    return unique


def format_seeds(seeds: Sequence[int]) -> str:
    """The shortest text that ``parse_seeds`` reads back as the same set (``0-4`` or ``0,2,3``)."""
    ordered = sorted(set(seeds))
    if len(ordered) > 2 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}-{ordered[-1]}"
    return ",".join(map(str, ordered))


def check_seeds(seeds: Sequence[int]) -> tuple[int, ...]:
    """``seeds`` as a tuple, or ``ConfigError`` if it is empty, too long, repeats one or holds a bad value."""
    seeds = tuple(seeds)
    if not seeds:
        raise ConfigError("No seeds given: give at least one seed (the paper used 0-4).")
    if len(seeds) > MAX_SEEDS:
        raise ConfigError(f"{len(seeds)} seeds given; use at most {MAX_SEEDS}.")
    for seed in seeds:
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
            raise ConfigError(f"Seed {seed!r} is not valid: every seed must be an integer from 0 to {MAX_SEED}.")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"Seeds {list(seeds)} repeat a seed; list each seed once.")
    return seeds
