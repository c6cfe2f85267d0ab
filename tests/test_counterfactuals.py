"""Tests for counterfactual text generation (cftclip_core.counterfactuals)."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from cftclip_core.counterfactuals import (
    MASK,
    STATUSES,
    CounterfactualResult,
    Entity,
    EntitySwapInfiller,
    KnownNamesTagger,
    RuleBasedPersonTagger,
    SpacyTagger,
    apply_budget,
    collect_names,
    counterfactual_table,
    generate_counterfactuals,
    passes_sanity_filter,
    status_counts,
)
from cftclip_core.errors import CftClipError, ConfigError, CounterfactualError, ModelError
from cftclip_core.formats import Record, read_table, write_table

README_1 = "In their first call, Biden presses Putin on Navalny arrest, cyberattacks, bounties on U.S. troops"
README_2 = "Pastor of 'Progressive Church' in California works in Adult Entertainment Industry"
PEOPLE = ["Mara Velk", "Dora Nim", "Rufo Kale", "Tom Bell", "Ann Lee"]
# Long enough for a name to fit the 30 % masking budget (61 non-space characters -> 18).
MARA = "Mara Velk waves beside the red ball at the park on Friday, witnesses said."


def spans(entities: Sequence[Entity]) -> list[tuple[str, int, int]]:
    return [(e.text, e.start, e.end) for e in entities]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- taggers ----------------------------------------------------------------------------------------
def test_rule_based_tagger_on_the_readme_examples() -> None:
    tagger = RuleBasedPersonTagger()
    assert spans(tagger.tag(README_1)) == [("Biden", 21, 26), ("Putin", 35, 40), ("Navalny", 44, 51)]
    assert all(e.label == "PERSON" for e in tagger.tag(README_1))
    # "Pastor" starts the sentence; the church, the state and the industry are not people.
    assert tagger.tag(README_2) == []


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("Russian President Vladimir Putin met Donald J. Trump's envoy in New York on Monday.",
         ["Vladimir Putin", "Donald J. Trump"]),
        ("Biden left. Joe Biden returned, and Mr. Smith stayed.", ["Joe Biden", "Smith"]),
        ("Critics of Ludwig van Beethoven and Bashar al-Assad met at the Supreme Court.",
         ["Ludwig van Beethoven", "Bashar al-Assad"]),
        ("On Monday, Mara Velk was seen near the red ball.", ["Mara Velk"]),
        ("the mayor spoke to NATO officials in Kyiv on Twitter.", []),
        ("Talks ended\nPutin left with Navalny", ["Navalny"]),
    ],
)
def test_rule_based_tagger_rules(text: str, names: list[str]) -> None:
    found = RuleBasedPersonTagger().tag(text)
    assert [e.text for e in found] == names
    assert all(text[e.start:e.end] == e.text for e in found)


def test_known_names_tagger_matches_whole_names_exactly() -> None:
    tagger = KnownNamesTagger(["Mara", "Mara Velk", "Dora Nim"])
    text = "Mara Velk met Marat, mara and Mara; Dora Nims left."
    assert spans(tagger.tag(text)) == [("Mara Velk", 0, 9), ("Mara", 30, 34)]
    with pytest.raises(ConfigError, match="at least one name"):
        KnownNamesTagger(["", "  "])


def test_spacy_tagger_needs_spacy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "spacy", None)  # import fails as if spaCy were not installed
    with pytest.raises(ModelError, match="spaCy is not installed.*rule-based"):
        SpacyTagger()


def test_spacy_tagger_maps_spacy_entities(monkeypatch: pytest.MonkeyPatch) -> None:
    class Span:
        def __init__(self, text: str, label: str, start: int) -> None:
            self.text, self.label_, self.start_char, self.end_char = text, label, start, start + len(text)

    def load(model: str):  # noqa: ANN202 - a stand-in for spacy.load
        if model != "en_core_web_trf":
            raise OSError(f"[E050] Can't find model '{model}'.")
        return lambda text: types.SimpleNamespace(ents=[Span("Biden", "PERSON", 21), Span("U.S.", "GPE", 86)])

    monkeypatch.setitem(sys.modules, "spacy", types.SimpleNamespace(load=load))
    tagger = SpacyTagger()
    assert tagger.name == "spacy:en_core_web_trf"
    assert tagger.tag(README_1) == [Entity("Biden", "PERSON", 21, 26), Entity("U.S.", "GPE", 86, 90)]
    with pytest.raises(ModelError, match="spacy download en_core_web_sm"):
        SpacyTagger("en_core_web_sm")


# --- the paper's rules --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "passes"), [("Li", True), ("J.", True), ("Mara Velk", True), ("A", False), ("--", False), ("'.'", False)]
)
def test_sanity_filter(text: str, passes: bool) -> None:
    assert passes_sanity_filter(Entity(text, "PERSON", 0, len(text))) is passes


def test_budget_hand_example() -> None:
    # 23 non-space characters -> budget int(0.3 * 23) = 6. "Ann Lee" has 6 (fits exactly), "Bob Smith" 8.
    text = "Ann Lee met Bob Smith at noon"
    ann, bob = Entity("Ann Lee", "PERSON", 0, 7), Entity("Bob Smith", "PERSON", 12, 21)
    outcomes = {tuple(e.text for e in apply_budget(text, [ann, bob], 0.3, rng(seed))) for seed in range(40)}
    # Dropping Bob first leaves Ann (6 <= 6); dropping Ann first leaves Bob (8 > 6), who goes too.
    assert outcomes == {("Ann Lee",), ()}
    assert apply_budget(text, [ann, bob], 1.0, rng()) == [ann, bob]


def test_statuses_for_no_person_over_budget_and_empty_text() -> None:
    texts = ["A red ball waits in the park.", "Bartholomew Fitzgerald spoke.", "   ", MARA]
    results = generate_counterfactuals(texts, RuleBasedPersonTagger(), EntitySwapInfiller(PEOPLE))
    assert [r.status for r in results] == ["no_person", "over_budget", "empty_text", "ok"]
    assert [r.id for r in results] == ["0", "1", "2", "3"]
    assert results[1].entities[0].text == "Bartholomew Fitzgerald" and results[1].masked == ()
    assert status_counts(results) == {"ok": 1, "no_person": 1, "over_budget": 1, "filter_failed": 0, "empty_text": 1,
                                      "too_long": 0, "beyond_window": 0}
    assert list(status_counts([])) == list(STATUSES)


def test_every_mention_is_one_mask_and_only_chosen_labels_are_masked() -> None:
    class Tagger:
        name = "fixed"

        def tag(self, text: str) -> list[Entity]:
            return [Entity("Ann Lee", "PERSON", 0, 7), Entity("Acme Corp", "ORG", 13, 22),
                    Entity("Ann Lee", "PERSON", 27, 34)]

    text = "Ann Lee left Acme Corp and Ann Lee smiled, they said"
    [person_only] = generate_counterfactuals([text], Tagger(), EntitySwapInfiller(PEOPLE), budget=1.0)
    assert person_only.masked_text == f"{MASK} left Acme Corp and {MASK} smiled, they said"
    [first, second] = person_only.replacements[0]
    assert first == second != "Ann Lee"  # both mentions of one name get the same new name
    assert person_only.counterfactual == f"{first} left Acme Corp and {first} smiled, they said"
    assert len(person_only.entities) == 3
    [every_label] = generate_counterfactuals([text], Tagger(), EntitySwapInfiller(PEOPLE), budget=1.0,
                                             entity_labels=None)
    assert every_label.masked_text == f"{MASK} left {MASK} and {MASK} smiled, they said"


def test_tagger_spans_that_do_not_match_the_text_are_reported() -> None:
    class Broken:
        name = "broken"

        def tag(self, text: str) -> list[Entity]:
            return [Entity("Biden", "PERSON", 0, 5)]

    with pytest.raises(CounterfactualError, match="text\\[start:end\\]"):
        generate_counterfactuals(["Putin spoke"], Broken(), EntitySwapInfiller(PEOPLE))


# --- entity swap --------------------------------------------------------------------------------------
def test_swap_never_returns_the_same_name_and_tries_differ() -> None:
    infiller = EntitySwapInfiller(PEOPLE + ["mara velk"])  # a case variant is the same person
    assert len(infiller.pool) == 5
    text = "Mara Velk waves at Dora Nim."
    people = [Entity("Mara Velk", "PERSON", 0, 9), Entity("Dora Nim", "PERSON", 19, 27)]
    for seed in range(30):
        proposals = infiller.propose(text, people, rng(seed), 3)
        for mara, dora in proposals:
            # never the replaced name, nor the other person already in the text, nor each other
            assert {mara.casefold(), dora.casefold()}.isdisjoint({"mara velk", "dora nim"})
            assert mara != dora
        assert len({p[0] for p in proposals}) == 3  # three tries, three different names


def test_swap_is_seeded() -> None:
    infiller = EntitySwapInfiller(PEOPLE)
    mara = [Entity("Mara Velk", "PERSON", 0, 9)]
    draws = {seed: infiller.propose("Mara Velk waves.", mara, rng(seed), 4) for seed in range(6)}
    assert infiller.propose("Mara Velk waves.", mara, rng(3), 4) == draws[3]
    assert len({json.dumps(d) for d in draws.values()}) > 1


def test_swap_needs_two_names() -> None:
    with pytest.raises(ConfigError, match="at least 2"):
        EntitySwapInfiller(["Mara Velk", "MARA VELK", ""])


# --- the CLIP filter and generation ---------------------------------------------------------------------
def scripted_scorer(script: Sequence[float], original: float = 0.5, calls: list | None = None):  # noqa: ANN201
    """Similarity `original` for the original text, then `script[i]` for candidate i (repeating the last)."""

    def score(key: str, texts: Sequence[str]) -> list[float]:
        if calls is not None:
            calls.append((key, list(texts)))
        return [original] + [script[min(i, len(script) - 1)] for i in range(len(texts) - 1)]

    return score


def swap_run(texts: Sequence[str | Record], **options):  # noqa: ANN003, ANN201
    return generate_counterfactuals(texts, KnownNamesTagger(PEOPLE), EntitySwapInfiller(PEOPLE), **options)


def test_filter_accepts_the_first_candidate_scored_lower() -> None:
    calls: list = []
    [result] = swap_run([MARA], scorer=scripted_scorer([0.9, 0.5, 0.2, 0.1], calls=calls))
    assert result.status == "ok" and result.tries == 3  # 0.9 and 0.5 (a tie) are not lower than 0.5
    key, texts = calls[0]
    assert key == "0" and texts[0] == MARA and len(texts) == 11
    assert result.counterfactual == texts[3]
    assert result.original_similarity == 0.5 and result.counterfactual_similarity == 0.2
    assert result.replacements == ((result.counterfactual.split(" waves")[0],),)


def test_filter_gives_up_after_max_tries() -> None:
    [result] = swap_run([MARA], scorer=scripted_scorer([0.7]), max_tries=4)
    assert result.status == "filter_failed" and result.tries == 4
    assert result.counterfactual is None and result.counterfactuals == () and result.similarities == ()
    assert result.original_similarity == 0.5 and result.masked  # the choices are still recorded


def test_a_candidate_equal_to_the_original_ignoring_case_is_rejected() -> None:
    class Shouting:
        name = "shouting"

        def propose(self, text: str, spans: Sequence[Entity], rng: np.random.Generator, n: int) -> list[list[str]]:
            return [[s.text.upper() for s in spans] for _ in range(n)]

    [result] = generate_counterfactuals([MARA], KnownNamesTagger(PEOPLE), Shouting(),
                                        scorer=scripted_scorer([0.1]))
    assert result.status == "filter_failed" and result.tries == 10


def test_several_distinct_counterfactuals_per_text() -> None:
    [result] = swap_run([MARA], per_text=3)
    assert result.status == "ok" and len(set(result.counterfactuals)) == 3 and result.tries == 3
    assert all("Mara Velk" not in c for c in result.counterfactuals)
    [too_many] = swap_run([MARA], per_text=5, max_tries=5)  # only 4 other people exist
    assert too_many.status == "filter_failed"


def test_scorer_must_return_one_similarity_per_text() -> None:
    with pytest.raises(CounterfactualError, match="one per text"):
        swap_run([MARA], scorer=lambda key, texts: [0.5])


def test_same_seed_same_counterfactuals_whatever_the_order() -> None:
    records = [Record(f"r{i}", f"img{i}.png", "t", f"{name} waves near the ball on day {i}.")
               for i, name in enumerate(PEOPLE * 3)]
    first = swap_run(records, seed=5)
    assert swap_run(records, seed=5) == first
    shuffled = swap_run(list(reversed(records)), seed=5)
    assert list(reversed(shuffled)) == first
    other = swap_run(records, seed=6)
    assert [r.counterfactual for r in other] != [r.counterfactual for r in first]


def test_records_use_the_chosen_text_field_and_their_image_as_key() -> None:
    record = Record("a1", "img/a1.png", "Dora Nim smiles at the crowd outside the library", MARA)
    calls: list = []
    [result] = swap_run([record], text_field="title", scorer=scripted_scorer([0.1], calls=calls))
    assert result.id == "a1" and result.text == "Dora Nim smiles at the crowd outside the library"
    assert calls[0][0] == "img/a1.png"
    with pytest.raises(CftClipError, match="Unknown text field"):
        swap_run([record], text_field="body")


@pytest.mark.parametrize(
    "options",
    [{"max_tries": 0}, {"per_text": 0}, {"per_text": 11}, {"seed": -1}, {"budget": 0}, {"budget": 1.5}],
)
def test_bad_options_are_refused(options: dict) -> None:
    with pytest.raises(ConfigError):
        swap_run([MARA], **options)


def test_collect_names_builds_a_swap_pool() -> None:
    texts = [README_1, "Later, Putin met Navalny's lawyer.", "Putin said nothing to Biden.", "Critics say Putin lied."]
    assert collect_names(texts, RuleBasedPersonTagger()) == ["Putin", "Biden", "Navalny"]


def test_counterfactual_table_round_trips_through_write_table(tmp_path: Path) -> None:
    records = [
        Record("a", "a.png", "t", MARA, label=1, split="train", extra={"person": "Mara Velk"}),
        Record("b", "b.png", "t", "A ball waits in the park."),
    ]
    rows = counterfactual_table(records, "summary", KnownNamesTagger(PEOPLE), EntitySwapInfiller(PEOPLE),
                                scorer=scripted_scorer([0.2]), per_text=2)
    assert rows[0].id == "a" and rows[0].extra["person"] == "Mara Velk"
    path = write_table(rows, tmp_path / "cf.csv")
    table = read_table(path, check_images=False)
    a, b = table.records
    assert a.extra["cf_status"] == "ok" and b.extra["cf_status"] == "no_person"
    assert a.extra["counterfactual"] != a.extra["counterfactual_2"]
    assert a.extra["counterfactual"].endswith(MARA[9:]) and float(a.extra["cf_similarity_2"]) == 0.2
    assert json.loads(a.extra["cf_masked"]) == [{"text": "Mara Velk", "label": "PERSON", "start": 0, "end": 9}]
    assert len(json.loads(a.extra["cf_replacements"])) == 2
    assert not b.extra["counterfactual"] and json.loads(b.extra["cf_entities"]) == []
    assert int(a.extra["cf_tries"]) == 2 and float(a.extra["cf_original_similarity"]) == 0.5


def test_result_records_everything() -> None:
    [result] = swap_run(["Tom Bell met Ann Lee at noon."], budget=1.0, scorer=scripted_scorer([0.3]))
    assert isinstance(result, CounterfactualResult)
    assert [e.text for e in result.entities] == ["Tom Bell", "Ann Lee"] == [e.text for e in result.masked]
    assert result.masked_text == f"{MASK} met {MASK} at noon."
    new_tom, new_ann = result.replacements[0]
    assert result.counterfactual == f"{new_tom} met {new_ann} at noon."
    assert {new_tom, new_ann}.isdisjoint({"Tom Bell", "Ann Lee"}) and new_tom != new_ann


# --- the token window: no negative identical to its positive; long texts dropped on request -------------
def test_candidates_the_model_cannot_tell_from_the_original_are_never_kept(tiny_model) -> None:  # noqa: ANN001
    from cftclip_core.counterfactuals import TokenWindow

    window = TokenWindow(tiny_model.tokenizer, 12)
    late = "the park was quiet and the red ball waited near the old gate for a long time until Mara Velk came."
    early = "Mara Velk waves beside the red ball at the park on Friday, witnesses said and left."
    assert window.too_long(late) and window.same_within(late, late.replace("Mara Velk", "Dora Nim"))
    [beyond, fine] = swap_run([late, early], window=window, budget=1.0)
    assert beyond.status == "beyond_window" and beyond.counterfactuals == () and beyond.tries == 10
    assert fine.status == "ok" and not window.same_within(early, fine.counterfactual)
    [too_long, _] = swap_run([late, early], window=window, budget=1.0, long_texts="drop")
    assert too_long.status == "too_long" and too_long.entities == ()  # dropped before tagging, as the original
    with pytest.raises(ConfigError, match="long_texts='drop' needs the model's token window"):
        swap_run([late], long_texts="drop")


# --- spaCy, with a pipeline built here (the real en_core_web_trf: tests/test_paper_models.py) ---------------
def test_spacy_tagger_with_a_pipeline_built_in_the_test(tmp_path: Path) -> None:
    spacy = pytest.importorskip("spacy", reason="spaCy is not installed (pip install -r requirements-paper.txt)")
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "PERSON", "pattern": "Mara Velk"},
                                                {"label": "GPE", "pattern": "Ukraine"}])
    nlp.to_disk(tmp_path / "pipeline")
    tagger = SpacyTagger(str(tmp_path / "pipeline"))
    assert tagger.tag("Mara Velk flew to Ukraine.") == [Entity("Mara Velk", "PERSON", 0, 9),
                                                        Entity("Ukraine", "GPE", 18, 25)]
    [result] = generate_counterfactuals([MARA + " She flew to Ukraine."], tagger, EntitySwapInfiller(PEOPLE))
    assert result.status == "ok" and [e.text for e in result.masked] == ["Mara Velk"]
    with pytest.raises(ModelError, match="python -m spacy download en_core_web_trf"):
        SpacyTagger("en_core_web_trf") if not _spacy_pipeline_installed() else pytest.skip("the pipeline is here")


def _spacy_pipeline_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("en_core_web_trf") is not None
