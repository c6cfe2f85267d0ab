"""A browser tab on the Annotate page, as the e2e tests drive it: read the card, press a key, wait."""

from __future__ import annotations

import re

from playwright.sync_api import Locator, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout

SETTLE_MS = 500  # the buttons' keyboard shortcuts are bound a moment after the card is painted
KEY_RETRIES = 3
DROPPED = "Dropped"  # how the status line begins when a press was refused (double click, previous card)


class AnnotateTab:
    def __init__(self, page: Page, items: dict[str, tuple[int, str]]) -> None:
        self.page = page
        self.items = items  # card title -> (item id, external id)

    @property
    def status(self) -> Locator:
        """The page's one status line (a polite live region): what the last action did."""
        return self.page.locator(".annotate-status")

    @property
    def confirmation(self) -> Locator:
        return self.status.filter(has_text=re.compile(rf"^(Saved|Undone|{DROPPED})"))

    def title(self) -> str:
        return self.page.locator(".card-title").first.inner_text().strip()

    def card(self) -> str:
        """The external id of the item on the card, once the whole card is drawn: while Streamlit redraws,
        elements of the previous run stay on the page marked stale, the previous card's buttons included."""
        expect(self.page.get_by_role("button", name="Yes").first).to_be_visible()  # the page is up
        expect(self.page.locator("[data-stale=true]")).to_have_count(0)
        item_id, external_id = self.items[self.title()]
        expect(self.page.locator(f".st-key-y-{item_id}")).to_be_visible()  # the buttons are this card's
        return external_id

    def settled_card(self) -> str:
        """The card's external id, once drawn and its shortcuts had a moment to be bound (which is also
        longer than the page's minimum time a card is on screen before a vote counts)."""
        external_id = self.card()
        self.page.wait_for_timeout(SETTLE_MS)
        return external_id

    def press_vote(self, key: str, said: str) -> str:
        """Press ``key`` (Y, N or S) until the page confirms the vote as ``said``; returns the item's external id.

        Streamlit can lose a key pressed while it re-binds shortcuts after a redraw (a known limitation), and
        the page drops a press that comes sooner after the card appeared than anyone reads it. Pressing again
        is what an annotator does, and it is safe: a press on the same card carries the same request id, and
        one meant for a card already gone is dropped."""
        external_id = self.card()
        saved = f"Saved {external_id}: {said}. Press U to undo."
        for _ in range(KEY_RETRIES - 1):
            before = self.status.inner_text()
            self.page.keyboard.press(key)
            try:  # saved, or a new "Dropped ..." (its text differs from any earlier one: it gives the time)
                self.page.wait_for_function(
                    "([saved, before, dropped]) => { const s = document.querySelector('.annotate-status');"
                    " const t = s ? s.innerText.trim() : ''; return t === saved || (t.startsWith(dropped) && t !== before) }",
                    arg=[saved, before.strip(), DROPPED], timeout=8_000)
                if self.status.inner_text().strip() == saved:
                    return external_id
                self.page.wait_for_timeout(SETTLE_MS)  # dropped as too soon: look at the card a moment
            except PlaywrightTimeout:  # the key was lost
                pass
            if self.card() != external_id:
                raise AssertionError(f"the card moved on from {external_id} without confirming the vote")
        self.page.keyboard.press(key)
        expect(self.confirmation).to_have_text(saved)
        return external_id
