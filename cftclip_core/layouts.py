"""Datasets as they are distributed, read without a hand conversion: a layout maps their columns onto a table's.

* ``newstt``: NewsTT as its authors hand it out (reference/method.md, section 1.2): a pandas DataFrame
  (pickle, or CSV/JSONL/Parquet) with ``image_id`` (the image's file name, extension included), ``summary``,
  ``label`` and, where present, ``title``; the images in a folder beside it (``images/`` by default). A
  missing title becomes the summary.
* ``cft-original``: the released code's training and validation pickles (``train_ntt_cossim_CFT.pkl``):
  ``image_id``, ``summary`` and the counterfactual in ``predict_t2_0``; images in ``imagefolder/``.
* ``m3ls``: a BBC / M3LS-style pre-training corpus, as a table with an image, a title and a summary, or as a
  folder of one JSON object per article (M3LS's ``processed/`` beside its ``imagefolder/``). The JSON
  keys of M3LS could not be checked against its files; ``--map`` names yours (e.g. ``--map image=img``).

Column names match case-insensitively (``Image``, ``Summary``...). ``mapping`` (``{table column: source
column}``) overrides a layout's choice; ``image_dir`` is the folder of the images, relative to the table's
folder (it must lie inside it). Pickles are read only with ``allow_pickle`` (never for uploads).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from cftclip_core.errors import DataError
from cftclip_core.formats import Table, is_url, read_table, table_from_frame
from cftclip_core.specs.counterfactuals import counterfactual_column

TABLE_COLUMNS = ("id", "image", "title", "summary", "label", "split", counterfactual_column(0))


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    sources: Mapping[str, tuple[str, ...]]  # table column -> source columns to look for, first found wins; without
    # an id column, the image's file name (without extension) is the id
    image_dir: str | None = None  # images are file names inside this folder (None: paths as given)
    title_from_summary: bool = False  # a table without a title column takes the summary as its title
    json_folder: str | None = None  # a directory given as the data holds one JSON article a file, here
    required: tuple[str, ...] = ("image", "summary")
    defaults: Mapping[str, Any] = field(default_factory=dict)


LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (
    Layout("newstt", "NewsTT as distributed: image_id, summary, label (title optional), images/ beside it",
           {"id": ("id", "image_id"), "image": ("image", "image_id"), "title": ("title",),
            "summary": ("summary",), "label": ("label",), "split": ("split",)}, image_dir="images",
           title_from_summary=True),
    Layout("cft-original", "the released code's pickles: image_id, summary, predict_t2_0 (the counterfactual)",
           {"id": ("id", "image_id"), "image": ("image", "image_id"), "title": ("title",), "summary": ("summary",),
            "split": ("split",), counterfactual_column(0): ("predict_t2_0",)},
           image_dir="imagefolder", title_from_summary=True),
    Layout("m3ls", "a BBC / M3LS-style corpus: image, title, summary; a table or a folder of JSON articles",
           {"id": ("id", "image_id"), "image": ("image", "image_id", "images"), "title": ("title",),
            "summary": ("summary",), "split": ("split",)},
           image_dir="imagefolder", title_from_summary=True, json_folder="processed"),
)}


def parse_mapping(text: str | None) -> dict[str, str]:
    """``image=img_path,summary=text`` -> ``{"image": "img_path", "summary": "text"}`` (what ``--map`` takes)."""
    mapping: dict[str, str] = {}
    for part in (p.strip() for p in (text or "").split(",") if p.strip()):
        target, sep, source = (s.strip() for s in part.partition("="))
        if not sep or not target or not source:
            raise DataError(f"--map '{part}' is not TABLE_COLUMN=SOURCE_COLUMN; e.g. --map image=img_path,summary=text.")
        if target.lower() not in TABLE_COLUMNS:
            raise DataError(f"--map names '{target}', which is not a table column; use {', '.join(TABLE_COLUMNS)}.")
        mapping[target.lower()] = source
    return mapping


def get_layout(name: str) -> Layout:
    if name not in LAYOUTS:
        raise DataError(f"Unknown layout '{name}'; choose one of {', '.join(LAYOUTS)}.")
    return LAYOUTS[name]


def apply_layout(frame: pd.DataFrame, layout: Layout, mapping: Mapping[str, str] | None = None,
                 image_dir: str | None = None, *, source: str = "the table") -> pd.DataFrame:
    """``frame`` with the table's columns, taken from the layout's (or the mapping's) source columns. Columns the
    layout does not use stay as extra columns. Refuses, naming what it found, a frame lacking a required one."""
    by_name = {str(c).strip().lower(): c for c in frame.columns}
    chosen: dict[str, Any] = {}
    for target, candidates in layout.sources.items():
        wanted = (mapping or {}).get(target)
        names = (wanted,) if wanted else candidates
        found = next((by_name[n.lower()] for n in names if n.lower() in by_name), None)
        if wanted and found is None:
            raise DataError(f"--map {target}={wanted}: {source} has no column '{wanted}' (it has "
                            f"{', '.join(map(str, frame.columns))}).")
        if found is not None:
            chosen[target] = found
    missing = [c for c in layout.required if c not in chosen]
    if missing:
        raise DataError(
            f"{source} does not look like the {layout.name} layout ({layout.description}): no column for "
            f"{', '.join(missing)} (it has {', '.join(map(str, frame.columns)) or 'none'}). Name them with --map, e.g. "
            f"--map {missing[0]}=YOUR_COLUMN.")
    out = pd.DataFrame({target: frame[column].to_numpy() for target, column in chosen.items()})
    if "title" not in out and layout.title_from_summary:
        out["title"] = out["summary"]
    folder = image_dir if image_dir is not None else layout.image_dir
    if folder:
        out["image"] = [_in_folder(folder, value) for value in out["image"]]
    if "id" not in chosen or chosen["id"] == chosen["image"]:  # no id column: the image's name is the id
        out["id"] = [_stem(value) for value in frame[chosen["image"]]]
    used = set(chosen.values())
    for column in frame.columns:
        name = str(column).strip().lower()
        if column not in used and name not in out:
            out[name] = frame[column].to_numpy()
    return out


def _first_image(value: Any) -> Any:
    """An image given as a list (an article's images, e.g. [name, caption] pairs) is its first one."""
    while isinstance(value, (list, tuple)) and value:
        value = value[0]
    if isinstance(value, dict):
        value = value.get("name") or value.get("image") or value.get("path")
    return value


def _in_folder(folder: str, value: Any) -> Any:
    value = _first_image(value)
    if not isinstance(value, str) or not value.strip() or is_url(value):
        return value
    return str(PurePosixPath(folder.replace("\\", "/")) / value.strip())


def _stem(value: Any) -> Any:
    value = _first_image(value)
    return PurePosixPath(value).stem if isinstance(value, str) and value.strip() and not is_url(value) else value


def read_json_folder(folder: Path) -> pd.DataFrame:
    """One row per ``*.json`` file of ``folder`` (each a JSON object), in file-name order."""
    files = sorted(folder.glob("*.json"))
    if not files:
        raise DataError(f"No .json files in {folder}; give the folder of one-article JSON files (M3LS: processed/).")
    rows = []
    for path in files:
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{path.name} is not a UTF-8 JSON file ({exc}); fix or remove it.") from None
        if not isinstance(value, dict):
            raise DataError(f"{path.name} holds a {type(value).__name__}, not a JSON object (one article a file).")
        rows.append({"source_file": path.name, **value})
    return pd.DataFrame(rows)


def load_table(
    path: str | Path,
    layout: str | None = None,
    *,
    mapping: Mapping[str, str] | None = None,
    image_dir: str | None = None,
    skip_bad_rows: bool = False,
    check_images: bool = True,
    allow_pickle: bool = False,
) -> Table:
    """A table from a file in the product's layout (``layout=None``) or a distributed one (see the module
    docstring). For the ``m3ls`` layout ``path`` may be the corpus folder (its ``processed/`` JSON files and
    ``imagefolder/``) or the JSON folder itself."""
    if layout is None:
        if mapping or image_dir:
            raise DataError("--map and --images go with --layout; name the layout (e.g. --layout newstt).")
        return read_table(path, skip_bad_rows=skip_bad_rows, check_images=check_images, allow_pickle=allow_pickle)
    chosen = get_layout(layout)
    path = Path(path)
    if path.is_dir():
        if chosen.json_folder is None:
            raise DataError(f"'{path}' is a folder; the {layout} layout reads a table file (pickle, CSV, JSONL, Parquet).")
        json_dir = path / chosen.json_folder if (path / chosen.json_folder).is_dir() else path
        base = path if json_dir != path else path.parent
        frame = apply_layout(read_json_folder(json_dir), chosen, mapping, image_dir, source=str(json_dir))
        return table_from_frame(frame, base_dir=base, source=json_dir, skip_bad_rows=skip_bad_rows,
                                check_images=check_images)
    return read_table(path, skip_bad_rows=skip_bad_rows, check_images=check_images, allow_pickle=allow_pickle,
                      layout=lambda frame: apply_layout(frame, chosen, mapping, image_dir, source=str(path)))
