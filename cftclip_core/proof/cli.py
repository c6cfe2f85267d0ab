"""``python -m cftclip_core.proof {all,run,table,calibrate}``: see the package docstring."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import threading
import time
import typing
from collections.abc import Sequence
from pathlib import Path

from cftclip_core.errors import CftClipError, ConfigError
from cftclip_core.specs.proof import (
    ARMS,
    PREREGISTERED_SEEDS,
    WORLDS,
    ProofSettings,
    RunKey,
    flag,
    format_value,
    grid,
    parse_list,
    parse_steps,
)
from cftclip_core.specs.seeds import format_seeds, parse_seeds

logger = logging.getLogger("cftclip_core.proof")

def _add_settings(parser: argparse.ArgumentParser) -> None:
    types = typing.get_type_hints(ProofSettings)
    group = parser.add_argument_group("settings (the defaults are the pre-registered ones)")
    for f in dataclasses.fields(ProofSettings):
        steps = f.name == "stage0_steps"  # a list: parsed with the other checks, so errors name the flag
        group.add_argument(f"--{flag(f.name)}", dest=f"set_{f.name}", type=str if steps else types[f.name],
                           default=format_value(f.default) if steps else f.default,
                           metavar="STEPS" if steps else types[f.name].__name__.upper(),
                           help=f"default: {format_value(f.default)}")


def _settings(args: argparse.Namespace) -> ProofSettings:
    values = {f.name: getattr(args, f"set_{f.name}") for f in dataclasses.fields(ProofSettings)}
    settings = ProofSettings(**{**values, "stage0_steps": parse_steps(values["stage0_steps"])})
    settings.validate()
    return settings


def _one_seed(value: str, name: str) -> int:
    seeds = parse_seeds(value, what=name)
    if len(seeds) != 1:
        raise ConfigError(f"{name} '{value}' is not valid: give one seed, e.g. 100.")
    return seeds[0]


def build_parser() -> argparse.ArgumentParser:
    from cftclip_core import proof

    parser = argparse.ArgumentParser(prog="python -m cftclip_core.proof", description=proof.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    every = commands.add_parser("all", help="run a grid (default: the pre-registered one), then write the table")
    every.add_argument("--out", required=True, type=Path, help="output folder (runs/, results.csv, table.md)")
    every.add_argument("--seeds", default=format_seeds(PREREGISTERED_SEEDS), help="e.g. 100-105 or 0,2,3 "
                       "(default: %(default)s, the pre-registered seeds)")
    every.add_argument("--data-seed", default=None, help="render every run's world from this one seed "
                       "(default: each seed renders its own)")
    every.add_argument("--worlds", default=",".join(WORLDS), help="default: %(default)s")
    every.add_argument("--arms", default=None, help="the same arms in every world (default: each world's "
                       "pre-registered arms: " + "; ".join(f"{w}: {','.join(s.arms)}" for w, s in WORLDS.items())
                       + ")")
    every.add_argument("--jobs", type=int, default=1, help="runs at a time, one CPU thread each (default: 1)")
    every.add_argument("--cache", type=Path, default=None, help="cache folder (default: OUT/cache)")
    _add_settings(every)

    one = commands.add_parser("run", help="one world, arm and seed, from every dose (what the Train page's proof demo launches)")
    one.add_argument("--world", required=True, help=f"one of {', '.join(WORLDS)}")
    one.add_argument("--arm", required=True, help=f"one of {', '.join(ARMS)}")
    one.add_argument("--seed", required=True, help="initialisation and batch order (and the world, by default)")
    one.add_argument("--data-seed", default=None, help="the world and its render (default: --seed)")
    one.add_argument("--out", required=True, type=Path, help="the run folder")
    one.add_argument("--cache", required=True, type=Path, help="cache shared by runs (worlds, stage-0 models)")
    _add_settings(one)

    table = commands.add_parser("table", help="aggregate finished runs into results.csv, table.md and the figure")
    table.add_argument("dir", type=Path)

    calibrate = commands.add_parser("calibrate", help="print this machine's pace (seconds per step, per embedding) "
                                    "as JSON, for estimating a grid's time")
    calibrate.add_argument("--timed-steps", type=int, default=4, help="timed steps per loss (default: %(default)s)")
    _add_settings(calibrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(levelname)s | %(name)s | %(message)s")
    try:
        if args.command == "table":
            from cftclip_core.proof.report import write_results

            write_results(args.dir)
            return 0
        settings = _settings(args)
        if args.command == "calibrate":
            return _calibrate(args, settings, started)
        if args.command == "all":
            from cftclip_core.proof.runner import run_all

            runs = grid(parse_list("world", args.worlds, list(WORLDS)), parse_seeds(args.seeds, what="--seeds"),
                        arms=parse_list("arm", args.arms, list(ARMS)) if args.arms is not None else None,
                        data_seed=_one_seed(args.data_seed, "--data-seed") if args.data_seed is not None else None)
            failed = run_all(args.out, runs, settings, jobs=args.jobs, cache=args.cache)
            for line in failed:
                logger.error("failed: %s", line)
            return 1 if failed else 0
        seed = _one_seed(args.seed, "--seed")
        data_seed = _one_seed(args.data_seed, "--data-seed") if args.data_seed is not None else seed
        return _run_command(RunKey(args.world, args.arm, seed, data_seed), args, settings)
    except CftClipError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2


def _calibrate(args: argparse.Namespace, settings: ProofSettings, started: float) -> int:
    if args.timed_steps < 1:
        raise ConfigError(f"--timed-steps {args.timed_steps} is not valid; use a positive number of timed steps.")
    import cftclip_core.proof.runs  # noqa: F401 - what a run process imports, timed as part of its start
    from cftclip_core.proof.calibrate import measure_pace

    start = time.perf_counter() - started
    print(json.dumps(measure_pace(settings, steps=args.timed_steps, start_seconds=start).to_dict()))
    return 0


def _run_command(run: RunKey, args: argparse.Namespace, settings: ProofSettings) -> int:
    import torch

    from cftclip_core.cli import EXIT_TERMINATED
    from cftclip_core.models import quiet_progress_bars_off_terminal
    from cftclip_core.proof.cache import RunStopped
    from cftclip_core.proof.runs import run_one

    torch.set_num_threads(1)
    quiet_progress_bars_off_terminal()
    stop_requested = threading.Event()
    handles_signal = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop_requested.set()) if handles_signal else None
    try:
        run_one(run, args.out, args.cache, settings, stop=stop_requested.is_set)
    except RunStopped:
        logger.warning("Stopped by SIGTERM; start the same command again to go on (finished doses and a finished "
                       "stage 0 are kept).")
        return EXIT_TERMINATED
    finally:
        if handles_signal:
            signal.signal(signal.SIGTERM, previous)
    return 0
