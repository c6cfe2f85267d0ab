"""Counterfactual texts: the article's people replaced by others, for contrastive fine-tuning.

The pipeline follows the paper's released code (reference/method.md, section 2):

1. An entity tagger finds named entities (``taggers``): spaCy (the paper used ``en_core_web_trf``), a
   Hugging Face token-classification model, an offline rule-based PERSON tagger, or known names.
2. Entities with the chosen labels (PERSON by default) that pass the paper's sanity filter are kept, and
   a masking budget (30 % of the non-space characters) drops mentions at random (``entities``).
3. An infiller proposes replacements (``infillers``): a masked language model sampling one token per mask
   at temperature 2.0 (the paper), or an offline swap for another person's name.
4. The CLIP filter keeps a candidate only if the model scores it lower than the original and the model can
   tell it from the original within its token window (``filter``, ``generate``); up to 10 tries.
5. ``recipe`` names the paper's and the offline recipe and builds their components; every file records its
   recipe (``cftclip_core.specs.counterfactuals``).
"""

from cftclip_core.counterfactuals.entities import (
    MASK,
    Entity,
    EntityTagger,
    apply_budget,
    non_space_length,
    passes_sanity_filter,
    replace_spans,
)
from cftclip_core.counterfactuals.filter import ClipFilter, TokenWindow
from cftclip_core.counterfactuals.generate import (
    CounterfactualResult,
    Progress,
    Scorer,
    collect_names,
    counterfactual_table,
    generate_counterfactuals,
    name_of,
    status_counts,
)
from cftclip_core.counterfactuals.infillers import (
    DEFAULT_MLM,
    EntitySwapInfiller,
    Infiller,
    MaskedLMInfiller,
    word_start_tokens,
)
from cftclip_core.counterfactuals.recipe import Plan, build_infiller, build_tagger, plan_recipe
from cftclip_core.counterfactuals.run import Made, make_counterfactuals
from cftclip_core.counterfactuals.taggers import (
    HFTokenClassificationTagger,
    KnownNamesTagger,
    RuleBasedPersonTagger,
    SpacyTagger,
)
from cftclip_core.specs.counterfactuals import STATUSES, Recipe

__all__ = [
    "DEFAULT_MLM", "MASK", "STATUSES", "ClipFilter", "CounterfactualResult", "Entity", "EntitySwapInfiller",
    "EntityTagger", "HFTokenClassificationTagger", "Infiller", "KnownNamesTagger", "Made", "MaskedLMInfiller", "Plan",
    "Progress", "Recipe", "RuleBasedPersonTagger", "Scorer", "SpacyTagger", "TokenWindow", "apply_budget",
    "build_infiller", "build_tagger", "collect_names", "counterfactual_table", "generate_counterfactuals",
    "make_counterfactuals", "name_of",
    "non_space_length", "passes_sanity_filter", "plan_recipe", "replace_spans", "status_counts",
    "word_start_tokens",
]
