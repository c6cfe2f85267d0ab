"""What each click or key on the Annotate page does. Button callbacks run before the page is drawn
again, so the next card appears in the same run.

Two guards keep a click from reaching a card it was not meant for:
- a press on a card that is gone (its buttons stay on the page for a moment while the next card is
  drawn, and answer the same keys) is dropped;
- a vote or undo that comes less than ``MIN_SECONDS_SHOWN`` after the run that drew its card ended
  (or before it ended) is refused by the library (``TooSoonError``): the second click of a double
  click lands on the next card after its redraw, with a request id of its own, and its request
  often waits for that redraw to end, so the time since the card was handed out is not enough.
Each action says what it did once, in the page's one status line (``announce``).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime

import streamlit as st

from annotations.labeling import (
    REASONS,
    TooSoonError,
    cast_vote,
    relabel,
    score_after_vote,
    undo_last,
)
from annotations.models import utcnow
from cftclip_core.errors import CftClipError
from studio.common import Studio

MIN_SECONDS_SHOWN = 0.25  # after the run that drew the card: the browser's guard (card_guard.html) asks 0.4 s
SAID = {1: "yes, shows an actor", 0: "no actor", None: "skipped"}
ANNOUNCE = "annotate_announce"  # the message of the last action, shown once
LAST_SAVED = "annotate_last_saved"  # what the last saved action did, for the message of a dropped press
ERROR = "annotate_error"
SWITCHED = "annotate_switched"  # a button inside the card chose another dataset: the whole page must rerun
DATASET = "annotate_dataset"  # the dataset picker's key
DRAWN_AT = "card_drawn_at"  # when the run that drew the card on screen ended (None: not yet)


def announce(message: str) -> None:
    st.session_state[ANNOUNCE] = message


def reasons_key(item_id: int) -> str:
    return f"reasons-{item_id}"


@dataclass(frozen=True)
class Annotator:
    """The signed-in annotator working on one dataset in this browser tab."""

    app: Studio
    user_id: int
    dataset_id: int

    @property
    def tab(self) -> str:
        return st.session_state.setdefault("tab_id", uuid.uuid4().hex[:12])

    def show_card(self, item_id: int) -> None:
        """Called before a card is drawn: a new item starts its clock, unflagged, not drawn yet."""
        if st.session_state.get("card_item") != item_id:
            st.session_state.card_item = item_id
            st.session_state.card_shown_at = time.monotonic()
            st.session_state[DRAWN_AT] = None
            st.session_state.flagged = False

    @staticmethod
    def card_drawn() -> None:
        """Called once the run that draws the card has drawn all of it: votes count from now on."""
        if st.session_state.get(DRAWN_AT) is None:
            st.session_state[DRAWN_AT] = utcnow()

    @staticmethod
    def _shown_at() -> datetime:
        return st.session_state.get(DRAWN_AT) or utcnow()  # not fully drawn yet: shown for no time at all

    def request_id(self, action: str, item_id: int) -> str:
        """The same click on the same card always maps to the same id, so it is recorded once."""
        return f"{self.tab}:{action}:{item_id}:{st.session_state.get('card_shown_at', 0)}"

    def _on_current_card(self, item_id: int) -> bool:
        if item_id == st.session_state.get("card_item"):
            return True
        st.session_state.setdefault(ANNOUNCE, "Dropped a click or key meant for the previous card: it came while "
                                              "this one was loading." + self._before())
        return False

    def _before(self) -> str:
        before = st.session_state.get(LAST_SAVED)
        return f" The one before it: {before}" if before else ""

    def _too_soon(self, exc: TooSoonError) -> None:
        announce(f"Dropped a click or key that came {exc.seconds_shown * 1000:.0f} ms after this card was drawn, too "
                 f"soon to be meant for it (a double click?).{self._before()} Press again if you meant it.")

    def vote(self, item_id: int, external_id: str, value: int | None) -> None:
        if not self._on_current_card(item_id):
            return
        reasons = st.session_state.get(reasons_key(item_id)) or []
        try:
            result = cast_vote(self.app.sessions, self.user_id, item_id, value, reasons=reasons if value == 0 else (),
                               note=st.session_state.get(f"note-{item_id}", ""), flagged=st.session_state.flagged,
                               seconds_spent=time.monotonic() - st.session_state.card_shown_at,
                               request_id=self.request_id("skip" if value is None else "vote", item_id),
                               min_seconds_shown=MIN_SECONDS_SHOWN, shown_at=self._shown_at())
        except TooSoonError as exc:
            self._too_soon(exc)
            return
        except CftClipError as exc:
            st.session_state[ERROR] = exc
            return
        st.session_state[LAST_SAVED] = f"saved {external_id}: {SAID[value]}."
        message = f"Saved {external_id}: {SAID[value]}. Press U to undo."
        if result.had_previous and not result.replayed:  # e.g. answered in another tab already
            message += f" You had answered it before ({SAID[result.previous_value]}); that was replaced."
        announce(message + self._revealed(item_id, value))

    def _revealed(self, item_id: int, value: int | None) -> str:
        if value is None:
            return ""
        with self.app.sessions() as session:
            shown = score_after_vote(session, self.dataset_id, item_id, self.user_id)
        if shown is None:
            return ""
        text = (f" The model (score set #{shown.score_set_id}, {shown.model_name} on the {shown.text_field}) gave "
                f"similarity {shown.similarity:.3f} against a threshold of {shown.threshold:.3f} "
                f"({shown.threshold_source}): it predicts {SAID[shown.prediction]}.")
        return text + (" These are the tiny offline model's scores: they mean nothing." if shown.meaningless else "")

    def undo(self, item_id: int) -> None:
        if not self._on_current_card(item_id):
            return
        try:
            undone = undo_last(self.app.sessions, self.user_id, self.dataset_id,
                               request_id=self.request_id("undo", item_id), min_seconds_shown=MIN_SECONDS_SHOWN,
                               shown_at=self._shown_at())
        except TooSoonError as exc:
            self._too_soon(exc)
            return
        except CftClipError as exc:
            st.session_state[ERROR] = exc
            return
        message = "Undone: that item is back for you." if undone else "Nothing to undo."
        st.session_state[LAST_SAVED] = "undid a vote." if undone else "nothing to undo."
        announce(message)

    def flag(self, item_id: int) -> None:
        if not self._on_current_card(item_id):
            return
        st.session_state.flagged = not st.session_state.flagged
        announce("Flagged for review: vote as usual." if st.session_state.flagged else "Flag removed.")

    def toggle_reason(self, item_id: int, reason: str) -> None:
        if not self._on_current_card(item_id):
            return
        picked = list(st.session_state.get(reasons_key(item_id)) or [])
        if reason in picked:
            picked.remove(reason)
            announce(f"Reason dropped: {reason}.")
        else:
            picked.append(reason)
            announce(f"Reason picked: {reason}. Press N to vote no.")
        st.session_state[reasons_key(item_id)] = [r for r in REASONS if r in picked]

    def relabel(self, item_id: int, external_id: str, value: int, version: str) -> None:
        """Change an earlier answer; the same click on the same label version is recorded once."""
        try:
            relabel(self.app.sessions, self.user_id, item_id, value,
                    request_id=f"{self.tab}:edit:{item_id}:{value}:{version}")
        except CftClipError as exc:
            st.session_state[ERROR] = exc
            return
        announce(f"Changed {external_id} to {SAID[value]}.")

    @staticmethod
    def switch_dataset(name: str) -> None:
        st.session_state[DATASET] = name
        st.session_state[SWITCHED] = True
