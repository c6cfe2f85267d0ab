"""Tests for the synthetic news-thumbnail world (cftclip_core.synthetic)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cftclip_core.cli import main as cli_main
from cftclip_core.errors import CftClipError, ConfigError, DataError
from cftclip_core.synthetic import (
    GLASSES,
    HAIR_COLOURS,
    HAT,
    OBJECT_COLOURS,
    SHIRT_COLOURS,
    TABLE_COLUMNS,
    TIE_DARK,
    TIE_LIGHT,
    World,
    WorldConfig,
    anonymize,
    caption_corpus,
    generate_dataset,
    load_world,
    read_image_negatives,
    swap_name,
)

TEXT_CHARS = re.compile(r"^[A-Za-z ,.]+$")


def read_rows(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def colours_in(image: Image.Image) -> set[tuple[int, int, int]]:
    arr = np.asarray(image.convert("RGB")).reshape(-1, 3)
    return {tuple(int(v) for v in row) for row in np.unique(arr, axis=0)}


def decode_appearance(image: Image.Image) -> tuple[str, str, str]:
    """Read (shirt, hair, accessory) back from a noise-free render, as a viewer would."""
    present = colours_in(image)
    shirts = [name for name, rgb in SHIRT_COLOURS.items() if rgb in present]
    hairs = [name for name, rgb in HAIR_COLOURS.items() if rgb in present]
    accessories = [acc for acc, rgbs in (("hat", {HAT}), ("glasses", {GLASSES}), ("tie", {TIE_DARK, TIE_LIGHT}))
                   if rgbs & present]
    assert len(shirts) == 1 and len(hairs) == 1 and len(accessories) <= 1, (shirts, hairs, accessories)
    return shirts[0], hairs[0], accessories[0] if accessories else "none"


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world() -> World:
    return World.from_config(WorldConfig())


@pytest.fixture(scope="module")
def clean_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 noise-free images, so each drawn person can be read back from the pixels."""
    out = tmp_path_factory.mktemp("clean")
    return generate_dataset(out, 200, WorldConfig(noise_std=0.0), seed=3)


# --- world ---------------------------------------------------------------------------------------
def test_default_world_has_16_people_and_128_contexts(world: World) -> None:
    assert len(world.people) == 16
    assert len(world.contexts) == 128
    assert len({(c.background, c.object, c.colour) for c in world.contexts}) == 128


def test_people_have_unique_looks_and_distinct_plain_two_word_names(world: World) -> None:
    assert len({p.appearance for p in world.people}) == len(world.people)
    words = [w for p in world.people for w in p.name.split(" ")]
    assert all(len(p.name.split(" ")) == 2 for p in world.people)
    assert all(re.fullmatch(r"[A-Z][a-z]+", w) for w in words)
    assert len(set(w.lower() for w in words)) == len(words), "each name word must identify one person"


def test_world_is_fixed_by_its_seed() -> None:
    a = World.from_config(WorldConfig(seed=5))
    b = World.from_config(WorldConfig(seed=5))
    c = World.from_config(WorldConfig(seed=6))
    assert a.people == b.people
    assert a.people != c.people


def test_name_seed_keeps_another_worlds_names_and_lets_the_seed_pick_looks_and_who_is_who() -> None:
    names = set(World.from_config(WorldConfig(seed=0)).names)
    a = World.from_config(WorldConfig(seed=101, name_seed=0))
    b = World.from_config(WorldConfig(seed=102, name_seed=0))
    own = World.from_config(WorldConfig(seed=101))
    assert set(a.names) == set(b.names) == names
    assert [p.appearance for p in a.people] == [p.appearance for p in own.people]  # looks: the seed's
    assert a.people != b.people and a.names != b.names
    assert {p.name: p.appearance for p in a.people} != {p.name: p.appearance for p in b.people}
    assert World.from_config(WorldConfig(seed=0, name_seed=0)).people == World.from_config(WorldConfig()).people
    assert World.from_config(WorldConfig(seed=101, name_seed=0)).people == a.people  # fixed by its seeds
    few = [World.from_config(WorldConfig(n_contexts=6, seed=s, name_seed=0)).contexts for s in (101, 102)]
    assert few[0] != few[1]


def test_render_without_a_person_shows_nobody(world: World) -> None:
    clean = World.from_config(WorldConfig(noise_std=0.0))
    image = clean.render(None, clean.contexts[0], np.random.default_rng(0))
    present = colours_in(image)
    assert not present & (set(SHIRT_COLOURS.values()) | set(HAIR_COLOURS.values()))


def test_every_person_can_be_told_apart_from_the_pixels() -> None:
    world = World.from_config(WorldConfig(n_people=40, noise_std=0.0, seed=1))
    for k, person in enumerate(world.people):
        image = world.render(person, world.contexts[k % len(world.contexts)], np.random.default_rng(k))
        assert decode_appearance(image) == person.appearance, person


def test_few_contexts_world_uses_six_different_backgrounds() -> None:
    contexts = World.from_config(WorldConfig(n_contexts=6)).contexts
    assert len(contexts) == 6
    assert len({c.background for c in contexts}) == 6


def test_render_respects_image_size(world: World) -> None:
    big = World.from_config(WorldConfig(image_size=224))
    image = big.render(big.people[0], big.contexts[0], np.random.default_rng(0))
    assert image.size == (224, 224) and image.mode == "RGB"


@pytest.mark.parametrize("kwargs", [
    {"n_people": 129}, {"n_people": 1}, {"n_contexts": 200}, {"image_size": 16}, {"noise_std": -0.1},
    {"n_backgrounds": 0}, {"seed": -1}, {"name_seed": -2}, {"name_seed": True},
])
def test_bad_world_config_is_refused_with_a_fix(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="use"):
        WorldConfig(**kwargs)


# --- texts ---------------------------------------------------------------------------------------
def test_captions_name_person_and_every_context_element(world: World) -> None:
    rng = np.random.default_rng(0)
    ctx = world.contexts[37]
    for _ in range(20):
        parts = world.draw_text_parts(rng)
        for text in (world.caption("Mara Velk", ctx, parts), world.summary("Mara Velk", ctx, parts)):
            assert "Mara Velk" in text
            for element in (ctx.background, ctx.object, ctx.colour):
                assert element in text


def test_anonymous_caption_says_a_person(world: World) -> None:
    parts = world.draw_text_parts(np.random.default_rng(1))
    title = world.caption(None, world.contexts[0], parts)
    assert title.startswith("A person ")
    assert not any(name in title for name in world.names)


def test_caption_corpus_is_plain_ascii_and_covers_every_name_and_context(world: World) -> None:
    corpus = list(caption_corpus(world))
    assert all(TEXT_CHARS.match(t) for t in corpus)
    joined = "\n".join(corpus)
    assert all(name in joined for name in world.names)
    assert all(c.description in joined for c in world.contexts)
    assert any(t.startswith("A person") for t in corpus)


def test_swap_name_and_anonymize_replace_whole_names_only() -> None:
    text = "On Monday, Mara Velk was seen waving near the red car at the park."
    assert swap_name(text, "Mara Velk", "Tovi Dorn") == text.replace("Mara Velk", "Tovi Dorn")
    assert anonymize("Mara Velk waves near the red car at the park", "Mara Velk").startswith("A person waves")
    assert "a person was seen" in anonymize(text, "Mara Velk")
    with pytest.raises(DataError, match="named_person"):
        swap_name(text, "Mara Vel", "Tovi Dorn")


# --- datasets ------------------------------------------------------------------------------------
def test_small_dataset_has_the_table_format_and_files(tmp_path: Path) -> None:
    csv_path = generate_dataset(tmp_path / "ds", 10)
    assert csv_path == tmp_path / "ds" / "data.csv"
    rows = read_rows(csv_path)
    assert len(rows) == 10
    assert tuple(rows[0].keys()) == TABLE_COLUMNS
    assert len({r["id"] for r in rows}) == 10
    for r in rows:
        assert r["title"] and r["summary"] and r["label"] in {"0", "1"}
        with Image.open(csv_path.parent / r["image"]) as im:
            assert im.size == (64, 64) and im.format == "PNG"
    meta = json.loads((tmp_path / "ds" / "world.json").read_text())
    assert [p["name"] for p in meta["people"]] == load_world(tmp_path / "ds").names
    assert not (tmp_path / "ds" / "data.csv.partial").exists()


def test_labels_match_the_person_drawn(clean_dataset: Path) -> None:
    world = load_world(clean_dataset.parent)
    rows = read_rows(clean_dataset)
    assert {r["label"] for r in rows} == {"0", "1"}
    for r in rows:
        shown = world.person(r["person"])
        with Image.open(clean_dataset.parent / r["image"]) as im:
            assert decode_appearance(im) == shown.appearance
        named = r["named_person"]
        for text in (r["title"], r["summary"]):
            assert named in text
            others = [n for n in world.names if n != named]
            assert not any(n in text for n in others)
        assert (r["label"] == "1") == (named == r["person"])


def test_texts_name_every_context_element_and_use_plain_characters(clean_dataset: Path) -> None:
    corpus_words = {w for t in caption_corpus(load_world(clean_dataset.parent)) for w in re.findall(r"[A-Za-z]+", t)}
    for r in read_rows(clean_dataset):
        for text in (r["title"], r["summary"]):
            assert TEXT_CHARS.match(text), text
            for element in (r["background"], r["object"], r["colour"]):
                assert element in text
            # A tokenizer trained on the corpus must know every word of every text.
            assert set(re.findall(r"[A-Za-z]+", text)) <= corpus_words


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "a", 12, seed=7)
    generate_dataset(tmp_path / "b", 12, seed=7)
    generate_dataset(tmp_path / "c", 12, seed=8)
    a, b, c = (tree_bytes(tmp_path / x) for x in "abc")
    assert a == b
    assert a["data.csv"] != c["data.csv"]
    images = [k for k in a if k.endswith(".png")]
    assert all(a[k] != c[k] for k in images)


def test_splits_and_negative_fraction_are_honoured(tmp_path: Path) -> None:
    done: list[tuple[int, int]] = []
    csv_path = generate_dataset(tmp_path / "ds", 2000, split_fractions=(0.7, 0.2, 0.1), negative_fraction=0.3,
                                progress=lambda d, t: done.append((d, t)))
    rows = read_rows(csv_path)
    counts = {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}
    assert counts == {"train": 1400, "val": 400, "test": 200}
    for split, n in counts.items():
        negatives = sum(r["label"] == "0" for r in rows if r["split"] == split)
        assert abs(negatives - 0.3 * n) <= 1
    assert done[-1] == (2000, 2000)
    assert [d for d, _ in done] == sorted(d for d, _ in done)
    # Uniform draws: every person and many contexts occur.
    assert len({r["person"] for r in rows}) == 16
    assert len({(r["background"], r["object"], r["colour"]) for r in rows}) > 100


def test_pairs_give_each_image_a_positive_and_a_negative_text(tmp_path: Path) -> None:
    rows = read_rows(generate_dataset(tmp_path / "ds", 20, pairs=True))
    assert len(rows) == 40
    by_image: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        by_image.setdefault(r["image"], []).append(r)
    assert len(by_image) == 20
    for pos, neg in by_image.values():
        assert (pos["label"], neg["label"]) == ("1", "0")
        assert pos["split"] == neg["split"] and pos["person"] == neg["person"]
        assert neg["named_person"] != pos["person"]
        assert swap_name(pos["title"], pos["person"], neg["named_person"]) == neg["title"]
        assert swap_name(pos["summary"], pos["person"], neg["named_person"]) == neg["summary"]


def test_image_negatives_show_another_person_or_nobody_in_the_same_context(tmp_path: Path) -> None:
    config = WorldConfig(noise_std=0.0, seed=4, name_seed=0)
    csv_path = generate_dataset(tmp_path / "ds", 30, config, split_fractions=(0.5, 0.2, 0.3), pairs=True, seed=4,
                                image_negatives=("test",))
    world = load_world(csv_path.parent)
    rows = {r["id"].rsplit("-", 1)[0]: r for r in read_rows(csv_path) if r["label"] == "1"}
    negatives = read_image_negatives(csv_path.parent)
    assert set(negatives) == {i for i, r in rows.items() if r["split"] == "test"} and len(negatives) == 9
    for item, neg in negatives.items():
        row = rows[item]
        assert neg["other_person"] != row["person"]
        with Image.open(csv_path.parent / neg["other_image"]) as other, \
                Image.open(csv_path.parent / neg["empty_image"]) as empty:
            assert decode_appearance(other) == world.person(neg["other_person"]).appearance
            assert not colours_in(empty) & (set(SHIRT_COLOURS.values()) | set(HAIR_COLOURS.values()))
            context_colour = OBJECT_COLOURS[row["colour"]]
            assert context_colour in colours_in(other) and context_colour in colours_in(empty)  # the same object
    without = generate_dataset(tmp_path / "plain", 30, config, split_fractions=(0.5, 0.2, 0.3), pairs=True, seed=4)
    assert (without.parent / "data.csv").read_bytes() == csv_path.read_bytes()
    assert tree_bytes(without.parent / "images").items() <= tree_bytes(csv_path.parent / "images").items()


def test_image_negatives_of_an_unknown_split_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="image_negatives"):
        generate_dataset(tmp_path / "ds", 4, image_negatives=("tests",))
    assert not (tmp_path / "ds").exists()


def test_anonymous_dataset_has_no_names_and_no_labels(tmp_path: Path) -> None:
    csv_path = generate_dataset(tmp_path / "ds", 10, anonymous=True)
    names = load_world(csv_path.parent).names
    for r in read_rows(csv_path):
        assert r["title"].startswith("A person") and r["label"] == "" and r["named_person"] == ""
        assert not any(n in r["title"] + r["summary"] for n in names)


def test_images_do_not_depend_on_labels(tmp_path: Path) -> None:
    plain = tree_bytes(generate_dataset(tmp_path / "a", 6, negative_fraction=0.0).parent / "images")
    flipped = tree_bytes(generate_dataset(tmp_path / "b", 6, negative_fraction=1.0).parent / "images")
    assert plain == flipped


def test_image_size_option_reaches_the_files(tmp_path: Path) -> None:
    csv_path = generate_dataset(tmp_path / "ds", 3, WorldConfig(image_size=224))
    for r in read_rows(csv_path):
        with Image.open(csv_path.parent / r["image"]) as im:
            assert im.size == (224, 224)


def test_existing_dataset_is_kept_unless_overwrite(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "ds", 5)
    with pytest.raises(ConfigError, match="overwrite"):
        generate_dataset(tmp_path / "ds", 5)
    generate_dataset(tmp_path / "ds", 3, overwrite=True)
    assert len(read_rows(tmp_path / "ds" / "data.csv")) == 3
    assert len(list((tmp_path / "ds" / "images").rglob("*.png"))) == 3


@pytest.mark.parametrize("kwargs", [
    {"split_fractions": (0.5, 0.2, 0.2)}, {"negative_fraction": 1.5}, {"pairs": True, "anonymous": True},
    {"n_items": 0},
])
def test_bad_dataset_arguments_are_refused(tmp_path: Path, kwargs: dict) -> None:
    args = {"n_items": 5, **kwargs}
    with pytest.raises(CftClipError):
        generate_dataset(tmp_path / "ds", **args)
    assert not (tmp_path / "ds").exists(), "nothing is written when the arguments are wrong"


def test_load_world_rejects_a_foreign_file(tmp_path: Path) -> None:
    (tmp_path / "world.json").write_text('{"format": "something else"}')
    with pytest.raises(DataError, match="regenerate"):
        load_world(tmp_path)


def test_command_line_writes_a_dataset(tmp_path: Path) -> None:
    assert cli_main(["synthetic", str(tmp_path / "ds"), "--items", "8", "--contexts", "6", "--pairs", "--seed", "2"]) == 0
    rows = read_rows(tmp_path / "ds" / "data.csv")
    assert len(rows) == 16
    assert len({(r["background"], r["object"], r["colour"]) for r in rows}) <= 6
