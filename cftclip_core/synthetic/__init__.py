"""A deterministic synthetic "news thumbnail" world, so the method can run end to end on a CPU.

Fictional people are drawn as simple figures whose look (shirt colour, hair colour, accessory)
is unique to each of them; each image also shows a context (a background plus an object of
some colour). Texts name the person and every context element, plus a verb, a preposition and
a weekday that cannot be seen. Label 1 means the text names the person drawn; label 0 means the
same text with another person's name. With many contexts, random in-batch negatives almost never
share the positive's context, which is the regime where counterfactual (name-swapped) negatives
matter; ``WorldConfig(n_contexts=6)`` gives the opposite regime.

Everything depends only on the seeds: the same arguments give byte-identical images and tables.
Command line: ``python -m cftclip_core synthetic OUT_DIR --items 2000``.

Modules: ``palette`` (colours, objects, backgrounds), ``texts`` (templates, name swaps), ``drawing``
(people, objects, backgrounds), ``world`` (``WorldConfig``, ``World``), ``dataset`` (rendering a
dataset folder and reading it back). No torch anywhere here.
"""

from cftclip_core.synthetic.dataset import (
    IMAGE_NEGATIVE_COLUMNS,
    IMAGE_NEGATIVES_FILE,
    SPLIT_NAMES,
    TABLE_COLUMNS,
    generate_dataset,
    load_world,
    read_image_negatives,
)
from cftclip_core.synthetic.palette import (
    ACCESSORIES,
    BACKGROUNDS,
    GLASSES,
    HAIR_COLOURS,
    HAT,
    OBJECT_COLOURS,
    OBJECTS,
    SHIRT_COLOURS,
    TIE_DARK,
    TIE_LIGHT,
)
from cftclip_core.synthetic.texts import (
    ANONYMOUS,
    anonymize,
    swap_name,
    text_vocabulary,
)
from cftclip_core.synthetic.world import (
    WORLD_FORMAT,
    Context,
    Person,
    SceneLayout,
    TextParts,
    World,
    WorldConfig,
    caption_corpus,
)

__all__ = [
    "ACCESSORIES", "ANONYMOUS", "BACKGROUNDS", "GLASSES", "HAIR_COLOURS", "HAT", "IMAGE_NEGATIVES_FILE",
    "IMAGE_NEGATIVE_COLUMNS", "OBJECTS", "OBJECT_COLOURS", "SHIRT_COLOURS", "SPLIT_NAMES", "TABLE_COLUMNS", "TIE_DARK",
    "TIE_LIGHT", "WORLD_FORMAT", "Context", "Person", "SceneLayout", "TextParts", "World", "WorldConfig", "anonymize",
    "caption_corpus", "generate_dataset", "load_world", "read_image_negatives", "swap_name", "text_vocabulary",
]
