"""How counts are written in sentences the app and the command line show."""

from __future__ import annotations


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 item', '2 items', '0 items'; ``many`` for an irregular plural ('1 was', '2 were')."""
    return f"{n} {word if n == 1 else many or word + 's'}"
