"""The paper's recipe with its real models: spaCy ``en_core_web_trf``, ``bert-base-uncased`` and CLIP ViT-L/14.

Each test runs when its model is on this machine (installed, or in the Hugging Face cache) and is skipped,
saying what is missing and how to get it, otherwise. The rest of the suite tests the same code with
stand-ins built in the tests (a spaCy pipeline with an entity ruler, a tiny BERT, the tiny CLIP).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cftclip_core.counterfactuals import Entity, MaskedLMInfiller, SpacyTagger, plan_recipe
from cftclip_core.counterfactuals.loading import hub_model_missing, spacy_pipeline_missing
from cftclip_core.specs.counterfactuals import PAPER_MLM, PAPER_SPACY_PIPELINE
from cftclip_core.specs.training import DEFAULT_MODEL

README_1 = "In their first call, Biden presses Putin on Navalny arrest, cyberattacks, bounties on U.S. troops"


def needs(missing: str | None) -> None:
    if missing:
        pytest.skip(missing)


def test_en_core_web_trf_finds_the_readme_example_people() -> None:
    needs(spacy_pipeline_missing(PAPER_SPACY_PIPELINE))
    people = [e.text for e in SpacyTagger().tag(README_1) if e.label == "PERSON"]
    assert {"Biden", "Putin", "Navalny"} <= set(people)


def test_bert_base_uncased_fills_a_name_with_whole_words() -> None:
    needs(hub_model_missing(PAPER_MLM, "masked language model"))
    import numpy as np

    infiller = MaskedLMInfiller()
    proposals = infiller.propose(README_1, [Entity("Putin", "PERSON", 35, 40)], np.random.default_rng(0), 20)
    assert len(proposals) == 20 and all(len(p) == 1 and p[0] and not p[0].startswith("##") for p in proposals)


def test_clip_vit_l14_filter_scores_the_demo_pairs(tmp_path: Path) -> None:
    needs(hub_model_missing(DEFAULT_MODEL, "CLIP model"))
    from cftclip_core.counterfactuals import ClipFilter, TokenWindow
    from cftclip_core.demo import demo_table_path
    from cftclip_core.formats import read_table
    from cftclip_core.models import load_model

    loaded = load_model(DEFAULT_MODEL, cache_dir=tmp_path)
    table = read_table(demo_table_path())
    record = table.records[0]
    scores = ClipFilter(loaded, {record.image: table.image_path(record)})(record.image, [record.summary, "a cat"])
    assert len(scores) == 2 and all(-1 <= s <= 1 for s in scores)
    assert TokenWindow.of(loaded).max_tokens == 77


def test_the_papers_recipe_is_the_default_and_runs_end_to_end(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    for missing in (spacy_pipeline_missing(PAPER_SPACY_PIPELINE), hub_model_missing(PAPER_MLM, "masked LM"),
                    hub_model_missing(DEFAULT_MODEL, "CLIP model")):
        needs(missing)
    import shutil

    from cftclip_core.cli import main
    from cftclip_core.demo import demo_table_path

    assert plan_recipe(None).name == "paper"
    monkeypatch.setenv("CFTCLIP_INSTANCE", str(tmp_path / "instance"))
    shutil.copytree(demo_table_path().parent, tmp_path / "demo")
    out = tmp_path / "demo" / "cf.csv"
    assert main(["counterfactual", "--data", str(tmp_path / "demo" / demo_table_path().name), "--out", str(out)]) == 0
    record = json.loads(out.with_name(out.name + ".recipe.json").read_text())
    assert record["recipe"]["name"] == "paper" and record["recipe"]["fallback"] is None
    assert record["recipe"]["versions"]["spacy_pipeline"].startswith("en_core_web_trf")
