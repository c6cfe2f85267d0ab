"""The data commands of ``python -m cftclip_core``: ``counterfactual`` (a table's counterfactual texts, by the
paper's recipe or the offline one) and ``convert`` (a dataset as distributed, written in the product's layout),
with the ``--layout`` options that ``score`` shares."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from cftclip_core import counterfactuals as cf
from cftclip_core import models
from cftclip_core.errors import ConfigError
from cftclip_core.formats import TEXT_FIELDS, Record, Table, write_table
from cftclip_core.instance import instance_dir
from cftclip_core.layouts import LAYOUTS, load_table, parse_mapping
from cftclip_core.specs import counterfactuals as cf_spec
from cftclip_core.specs.replication import REPLICATE_ORIGINAL


def add_counterfactual_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    counter = commands.add_parser(
        "counterfactual", help="add counterfactual texts (PERSON names replaced) to a table",
        description="By default the paper's recipe (spaCy en_core_web_trf PERSON tagger, bert-base-uncased infiller "
                    "at temperature 2.0, CLIP filter with the training model, up to 10 tries) when its models are on "
                    "this machine; otherwise the offline recipe (rule-based or known-names tagger, name swap), saying "
                    "which model is missing. Component flags override the recipe's choices.")
    counter.add_argument("--data", required=True, type=Path, help="table file (.csv, .jsonl, .parquet)")
    counter.add_argument("--out", required=True, type=Path,
                         help="table to write, with the counterfactual columns (and OUT.recipe.json beside it)")
    counter.add_argument("--text", choices=TEXT_FIELDS, default="summary", help="text field (default: summary)")
    counter.add_argument("--recipe", choices=cf_spec.RECIPES, default=None,
                         help="paper or offline (default: paper when its models are on this machine, else offline)")
    counter.add_argument("--tagger", default=None,
                         help="rule, names:FILE (one name a line, or a synthetic world.json), spacy[:PIPELINE], "
                              "hf:MODEL, or auto: the world's names when world.json sits beside the table, else rule "
                              "(default: the recipe's)")
    counter.add_argument("--infiller", default=None,
                         help=f"swap (another PERSON name of the corpus) or mlm[:MODEL] (masked LM, default "
                              f"{cf_spec.PAPER_MLM}) (default: the recipe's)")
    counter.add_argument("--temperature", type=float, default=None,
                         help=f"masked-LM sampling temperature (the paper: {cf_spec.PAPER_TEMPERATURE:g})")
    counter.add_argument("--max-tries", type=int, default=None, help=f"(the paper: {cf_spec.PAPER_MAX_TRIES})")
    counter.add_argument("--per-text", type=int, default=1, help="counterfactuals to keep per text")
    counter.add_argument("--budget", type=float, default=cf_spec.PAPER_BUDGET,
                         help="largest fraction of a text masked (the paper: 0.3)")
    counter.add_argument("--seed", type=int, default=0)
    counter.add_argument("--model", default=None,
                         help="model for the CLIP filter (keep a candidate only if it scores lower than the original): "
                              "the model you will train; none keeps the first differing candidate (default: "
                              f"{models.DEFAULT_MODEL} for the paper's recipe, none for the offline one)")
    counter.add_argument("--vocabulary", choices=cf_spec.VOCABULARIES, default=None,
                         help="what the masked LM may sample: whole-words (default) or any piece (the original code)")
    counter.add_argument("--long-texts", choices=cf_spec.LONG_TEXTS, default=None,
                         help="texts over the filter model's token window: truncate (default; changes the model "
                              "cannot see are never kept) or drop (status too_long, the original code)")
    counter.add_argument("--replicate-original", action="store_true",
                         help="the released code's choices: any vocabulary piece, long texts dropped")
    counter.add_argument("--device", default=None, help="torch device for the models (default: cuda if available)")
    counter.add_argument("--trust-pickle", action="store_true",
                         help="allow reading a pickled DataFrame (runs code from the file: only for your own files)")
    add_layout_arguments(counter)
    counter.set_defaults(run=run_counterfactual)


def add_convert_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    convert = commands.add_parser("convert", help="write a distributed dataset (NewsTT, a pre-training corpus) as a "
                                                  "table in the product's layout")
    convert.add_argument("--data", required=True, type=Path, help="the dataset file (or, for m3ls, its folder)")
    convert.add_argument("--out", required=True, type=Path,
                         help="table to write (.csv, .jsonl, .parquet), in the folder of the data's images or above it")
    convert.add_argument("--skip-bad-rows", action="store_true", help="write the valid rows of a file with errors")
    convert.add_argument("--val-fraction", type=float, default=None,
                         help="mark this share of the rows 'val' and the rest 'train' (seeded by --seed), e.g. 0.05 for "
                              "a corpus to train on; rows keep their own split without it")
    convert.add_argument("--seed", type=int, default=0, help="for --val-fraction")
    convert.add_argument("--trust-pickle", action="store_true",
                         help="allow reading a pickled DataFrame (runs code from the file: only for your own files)")
    add_layout_arguments(convert, required=True)
    convert.set_defaults(run=run_convert)


def add_layout_arguments(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    parser.add_argument("--layout", choices=list(LAYOUTS), default=None, required=required,
                        help="read a dataset as distributed: " + "; ".join(f"{name}: {layout.description}"
                                                                           for name, layout in LAYOUTS.items()))
    parser.add_argument("--map", default=None, metavar="COLUMN=SOURCE,...",
                        help="with --layout: take a table column from another source column, e.g. image=img_path")
    parser.add_argument("--images", default=None, metavar="DIR",
                        help="with --layout: the images' folder, relative to the data's folder (default: the layout's)")


def read_layout_table(args: argparse.Namespace, *, skip_bad_rows: bool = False) -> Table:
    """``args.data`` read in the product's layout or, with ``--layout``, as distributed."""
    return load_table(args.data, args.layout, mapping=parse_mapping(args.map), image_dir=args.images,
                      skip_bad_rows=skip_bad_rows, allow_pickle=args.trust_pickle)


def run_convert(args: argparse.Namespace) -> int:
    table = read_layout_table(args, skip_bad_rows=args.skip_bad_rows)
    for problem in table.skipped:
        print(f"skipped: {problem}", file=sys.stderr)
    records = relocated(table.records, table.base_dir, args.out)
    if args.val_fraction is not None:
        records = with_val_split(records, args.val_fraction, args.seed)
    write_table(records, args.out)
    print(f"wrote {len(records)} items ({args.layout} layout) to {args.out}")
    return 0


def relocated(records: Sequence[Record], base_dir: Path, out: Path) -> list[Record]:
    """The records with image paths relative to ``out``'s folder, which must be ``base_dir`` or above it."""
    out_dir = out.resolve().parent
    if not base_dir.is_relative_to(out_dir):
        raise ConfigError(f"Write the table in {base_dir} or a folder above it (its image paths start there), "
                          f"not in {out_dir}.")
    prefix = base_dir.relative_to(out_dir)
    return [r if r.image_is_url else dataclasses.replace(r, image=(prefix / r.image).as_posix()) for r in records]


def with_val_split(records: Sequence[Record], fraction: float, seed: int) -> list[Record]:
    """``fraction`` of the records (at least one, seeded) marked 'val', the others 'train'."""
    if not 0 < fraction < 1:
        raise ConfigError(f"--val-fraction {fraction} is not valid; give a share between 0 and 1, such as 0.05.")
    import numpy as np

    n_val = max(1, round(fraction * len(records)))
    chosen = set(np.random.default_rng(seed).choice(len(records), size=n_val, replace=False).tolist())
    return [dataclasses.replace(r, split="val" if i in chosen else "train") for i, r in enumerate(records)]


def run_counterfactual(args: argparse.Namespace) -> int:
    options = _counterfactual_options(args)
    table = read_layout_table(args)
    plan = cf.plan_recipe(args.recipe, {"tagger": args.tagger, "infiller": args.infiller,
                                        "temperature": args.temperature, "filter_model": args.model,
                                        "max_tries": args.max_tries})
    if plan.fallback:
        print(f"warning: using the offline recipe, not the paper's: {plan.fallback}", file=sys.stderr)
    with tqdm(total=len(table.records), desc="counterfactuals", unit="text") as bar:
        made = cf.make_counterfactuals(
            table, plan, text_field=args.text, per_text=args.per_text, seed=args.seed, budget=args.budget,
            vocabulary=options["vocabulary"], long_texts=options["long_texts"], device=args.device,
            models_dir=instance_dir() / "models", progress=lambda done, total: bar.update(done - bar.n))
    if made.filter_is_tiny:
        print(f"note: '{plan.components.filter_model}' has random weights; its filter decisions carry no meaning.",
              file=sys.stderr)
    recipe, counts = made.recipe, made.counts
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_table(relocated(made.records, table.base_dir, args.out), args.out)
    sidecar = cf_spec.write_sidecar(args.out, recipe, counts)
    print(f"recipe {recipe.summary()}")
    print(f"counterfactuals for {len(made.records)} texts: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for status, why in (("no_person", "name no PERSON"), ("too_long", "are longer than the model's token window"),
                        ("beyond_window", "change only past the model's token window")):
        if counts[status]:
            print(f"note: {counts[status]} text(s) {why} and have no counterfactual; training skips them.",
                  file=sys.stderr)
    print(f"wrote {args.out} (recipe record {sidecar})")
    return 0


def _counterfactual_options(args: argparse.Namespace) -> dict[str, str]:
    """vocabulary and long_texts: the flags, else the preset's, else the product's defaults."""
    given = {name: value for name, value in (("vocabulary", args.vocabulary), ("long_texts", args.long_texts))
             if value is not None}
    if args.replicate_original:
        REPLICATE_ORIGINAL.check(given)
        return {**REPLICATE_ORIGINAL.counterfactual, **given}  # type: ignore[dict-item]
    return {"vocabulary": "whole-words", "long_texts": "truncate", **given}
