"""The texts of the synthetic world: templates, the words that cannot be seen in an image, and the
name operations counterfactuals and anonymous captions are made with."""

from __future__ import annotations

import itertools
import re
from typing import TYPE_CHECKING

from cftclip_core.errors import DataError
from cftclip_core.synthetic.palette import BACKGROUNDS, OBJECT_COLOURS, OBJECTS

if TYPE_CHECKING:
    from cftclip_core.synthetic.world import Context, TextParts

ANONYMOUS = "a person"
VERBS = (
    ("waves", "waving"), ("smiles", "smiling"), ("speaks", "speaking"), ("laughs", "laughing"),
    ("points", "pointing"), ("poses", "posing"), ("listens", "listening"), ("arrives", "arriving"),
)
PREPOSITIONS = ("near", "beside", "next to")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
TITLE_TEMPLATE = "{Name} {verbs} {prep} the {colour} {object} at the {background}"
SUMMARY_TEMPLATES = (
    "{Name} {verbs} {prep} the {colour} {object} at the {background} on {day}, witnesses said.",
    "On {day}, {name} was seen {verbing} {prep} the {colour} {object} at the {background}.",
    "Photographers caught {name} {verbing} {prep} the {colour} {object} during a visit to the {background}.",
    "At the {background}, {name} {verbs} {prep} the {colour} {object} as a small crowd gathers.",
)



def fill_template(template: str, name: str | None, context: Context, parts: TextParts) -> str:
    verbs, verbing = VERBS[parts.verb]
    shown = name if name is not None else ANONYMOUS
    return template.format(
        Name=shown[0].upper() + shown[1:], name=shown, verbs=verbs, verbing=verbing,
        prep=PREPOSITIONS[parts.preposition], colour=context.colour, object=context.object,
        background=context.background, day=DAYS[parts.day],
    )


def text_vocabulary() -> set[str]:
    """Lower-cased words any text can contain apart from names; names must avoid them."""
    pieces = [TITLE_TEMPLATE, *SUMMARY_TEMPLATES, ANONYMOUS, *PREPOSITIONS, *DAYS, *BACKGROUNDS, *OBJECTS,
              *OBJECT_COLOURS, *itertools.chain.from_iterable(VERBS)]
    words: set[str] = set()
    for piece in pieces:
        words.update(re.findall(r"[a-z]+", re.sub(r"\{[^}]*\}", " ", piece).lower()))
    return words


def _name_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![A-Za-z]){re.escape(name)}(?![A-Za-z])")


def swap_name(text: str, old_name: str, new_name: str) -> str:
    """Replace every whole-word occurrence of ``old_name`` (a counterfactual text)."""
    pattern = _name_pattern(old_name)
    if not pattern.search(text):
        raise DataError(f"The text does not name {old_name!r}, so it cannot be swapped for {new_name!r}: "
                        f"{text!r}. Pass the name the text actually contains (column 'named_person').")
    return pattern.sub(lambda _: new_name, text)


def anonymize(text: str, name: str) -> str:
    """Replace ``name`` by "a person" ("A person" at the start), as in the anonymous captions."""
    swapped = swap_name(text, name, ANONYMOUS)
    return swapped[0].upper() + swapped[1:] if swapped.startswith(ANONYMOUS) else swapped

