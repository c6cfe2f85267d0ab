"""Counterfactuals made with models: the masked-LM infiller and the token-classification tagger (tiny BERTs
built and saved here), and the choice of recipe (the paper's when its models are here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cftclip_core.counterfactuals import (
    Entity,
    HFTokenClassificationTagger,
    MaskedLMInfiller,
    word_start_tokens,
)
from cftclip_core.errors import ConfigError, ModelError

# --- a tiny WordPiece BERT, built and saved locally ---------------------------------------------------
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]"]
WORDS = "the a of in on at and was seen waves near red ball park said met mara velk dora nim rufo kale tom".split()
PIECES = ["##s", "##ing", "##ed", ",", ".", "!"]
VOCAB = SPECIALS + WORDS + PIECES


def _bert_tokenizer():  # noqa: ANN202 - a transformers BertTokenizer
    from transformers import BertTokenizer

    return BertTokenizer(vocab={token: i for i, token in enumerate(VOCAB)})


@pytest.fixture(scope="module")
def tiny_mlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight BertForMaskedLM whose output bias strongly favours tokens that must never be
    sampled (special tokens, '##' pieces, punctuation) and, among words, 'velk'."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=24)
    model = BertForMaskedLM(config)
    with torch.no_grad():
        bias = model.get_output_embeddings().bias
        for token in SPECIALS + PIECES:
            bias[VOCAB.index(token)] += 30.0
        bias[VOCAB.index("velk")] += 5.0
    out = tmp_path_factory.mktemp("mlm") / "tiny-bert"
    model.save_pretrained(out)
    _bert_tokenizer().save_pretrained(out)
    return out


def test_hf_token_classification_tagger_with_a_local_model(tmp_path: Path) -> None:
    from transformers import BertConfig, BertForTokenClassification

    config = BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=24,
                        id2label={0: "O", 1: "B-PER", 2: "I-PER"}, label2id={"O": 0, "B-PER": 1, "I-PER": 2})
    model = BertForTokenClassification(config)
    with torch.no_grad():  # every token is the start of a person: each word becomes one entity
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 10.0, 0.0]))
    model.save_pretrained(tmp_path / "ner")
    _bert_tokenizer().save_pretrained(tmp_path / "ner")
    tagger = HFTokenClassificationTagger(str(tmp_path / "ner"))
    text = "Mara Velk waves"
    assert tagger.tag(text) == [Entity("Mara", "PERSON", 0, 4), Entity("Velk", "PERSON", 5, 9),
                                Entity("waves", "PERSON", 10, 15)]
    ungrouped = HFTokenClassificationTagger(str(tmp_path / "ner"), aggregation_strategy="none")
    assert {e.label for e in ungrouped.tag(text)} == {"PERSON"}  # "B-PER" tags without grouping
    with pytest.raises(ModelError, match="No model folder"):
        HFTokenClassificationTagger(str(tmp_path / "missing"))


# --- masked LM ----------------------------------------------------------------------------------------
ALLOWED = set(WORDS)


def test_mlm_infiller_samples_only_whole_words(tiny_mlm: Path) -> None:
    text = "mara velk waves near the red ball"
    spans_ = [Entity("mara velk", "PERSON", 0, 9)]
    for temperature in (0.05, 2.0, 100.0):
        infiller = MaskedLMInfiller(str(tiny_mlm), temperature=temperature)
        words = {w for [w] in infiller.propose(text, spans_, np.random.default_rng(1), 200)}
        assert words <= ALLOWED, words - ALLOWED  # no [CLS], [unused0], '##s' or ',' despite their huge logits


def test_mlm_temperature_spreads_the_samples(tiny_mlm: Path) -> None:
    text = "mara velk waves near the red ball"
    spans_ = [Entity("mara velk", "PERSON", 0, 9)]

    def share_of_favourite(temperature: float) -> float:
        samples = MaskedLMInfiller(str(tiny_mlm), temperature=temperature).propose(text, spans_, np.random.default_rng(2), 400)
        return sum(w == "velk" for [w] in samples) / len(samples)

    # Near-greedy at a low temperature, near-uniform over the 23 allowed words at a high one.
    assert share_of_favourite(0.05) == 1.0
    assert 0.2 < share_of_favourite(2.0) < 0.6
    assert share_of_favourite(100.0) < 0.12


def test_mlm_infiller_is_seeded_and_fills_every_span(tiny_mlm: Path) -> None:
    infiller = MaskedLMInfiller(str(tiny_mlm), temperature=50.0)
    assert infiller.name.endswith("@T=50")
    text = "mara met dora at the park"
    two = [Entity("mara", "PERSON", 0, 4), Entity("dora", "PERSON", 9, 13)]
    first = infiller.propose(text, two, np.random.default_rng(7), 5)
    assert first == infiller.propose(text, two, np.random.default_rng(7), 5)
    assert first != infiller.propose(text, two, np.random.default_rng(8), 5)
    assert all(len(candidate) == 2 for candidate in first)


def test_mlm_infiller_handles_texts_longer_than_its_window(tiny_mlm: Path) -> None:
    infiller = MaskedLMInfiller(str(tiny_mlm), temperature=2.0)
    assert infiller.max_length == 24
    text = "mara " + "waves near the red ball in the park " * 6 + "tom"  # 44 word pieces, masks at both ends
    ends = [Entity("mara", "PERSON", 0, 4), Entity("tom", "PERSON", len(text) - 3, len(text))]
    proposals = infiller.propose(text, ends, np.random.default_rng(0), 3)
    assert len(proposals) == 3 and all(len(p) == 2 and set(p) <= ALLOWED for p in proposals)


def test_mlm_infiller_fails_fast_without_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="offline.*hf download bert-base-uncased"):
        MaskedLMInfiller()
    with pytest.raises(ModelError, match="No model folder"):
        MaskedLMInfiller(str(tmp_path / "nowhere" / "bert"))
    with pytest.raises(ConfigError, match="temperature"):
        MaskedLMInfiller(temperature=0)


def test_word_start_tokens_for_bpe_and_wordpiece_vocabularies() -> None:
    bpe = ["<s>", "</s>", "<mask>", "Ġthe", "the", "Ġ,", "ĠMara", "ing", "Ġ2020"] + [f"Ġw{i}" for i in range(5)]
    assert word_start_tokens(bpe, {"<s>", "</s>", "<mask>"})[:9] == [False, False, False, True, False, False, True,
                                                                      False, True]
    wordpiece = ["[CLS]", "[unused3]", "the", "##s", ",", "2020"]
    assert word_start_tokens(wordpiece, {"[CLS]"}) == [False, False, True, False, False, True]


def test_mlm_any_vocabulary_samples_what_the_original_code_could(tiny_mlm: Path) -> None:
    text = "mara velk waves near the red ball"
    spans_ = [Entity("mara velk", "PERSON", 0, 9)]
    infiller = MaskedLMInfiller(str(tiny_mlm), temperature=2.0, vocabulary="any")
    words = {w for [w] in infiller.propose(text, spans_, np.random.default_rng(1), 200)}
    assert words - ALLOWED, "any piece may be drawn: special tokens, '##' pieces, punctuation"
    assert words & set(SPECIALS + PIECES)  # their logits are 30 higher: they dominate
    assert infiller.name.endswith("(any piece)")
    with pytest.raises(ConfigError, match="vocabulary="):
        MaskedLMInfiller(str(tiny_mlm), vocabulary="most")


# --- recipes -----------------------------------------------------------------------------------------
def test_default_recipe_falls_back_to_offline_saying_which_models_are_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from cftclip_core.counterfactuals import plan_recipe
    from cftclip_core.counterfactuals import recipe as recipes

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(recipes, "spacy_pipeline_missing", lambda name: f"the spaCy pipeline '{name}' is missing")
    plan = plan_recipe(None)
    assert plan.name == "offline" and plan.components == recipes.OFFLINE
    for missing in ("en_core_web_trf", "bert-base-uncased", "openai/clip-vit-large-patch14"):
        assert missing in plan.fallback
    assert "hf download bert-base-uncased" in plan.fallback
    with pytest.raises(ModelError, match="paper's recipe cannot run here.*en_core_web_trf.*--recipe offline"):
        plan_recipe("paper")
    assert plan_recipe("offline").fallback is None


def test_default_recipe_is_the_papers_when_its_models_are_here(monkeypatch: pytest.MonkeyPatch, tiny_mlm: Path,
                                                               tiny_model_dir: Path) -> None:
    from cftclip_core.counterfactuals import plan_recipe
    from cftclip_core.counterfactuals import recipe as recipes

    monkeypatch.setattr(recipes, "spacy_pipeline_missing", lambda name: None)  # as if en_core_web_trf were installed
    plan = plan_recipe(None, {"infiller": f"mlm:{tiny_mlm}", "filter_model": str(tiny_model_dir)})
    assert plan.fallback is None and plan.components.tagger == "spacy:en_core_web_trf"
    assert plan.name == "custom"  # another masked LM than bert-base-uncased: not the paper's recipe any more
    monkeypatch.setattr(recipes, "PAPER", recipes.Components("spacy:en_core_web_trf", f"mlm:{tiny_mlm}", 2.0,
                                                             recipes.PAPER.filter_model, 10))
    plan = plan_recipe(None, {"filter_model": str(tiny_model_dir)})
    assert (plan.name, plan.fallback) == ("paper", None)  # the filter is the training model, whichever it is
    assert plan_recipe(None, {"filter_model": str(tiny_model_dir), "tagger": "rule"}).name == "custom"
    assert plan_recipe("offline", {"filter_model": "tiny-demo"}).name == "offline"
