"""A browser tab on the Annotate page, as the e2e tests drive it: read the card, press a key, wait."""

from __future__ import annotations

import re

from playwright.sync_api import Locator, Page, expect

SETTLE_MS = 500  # the buttons' keyboard shortcuts are bound a moment after the card is painted
KEY_RETRIES = 3


class AnnotateTab:
    def __init__(self, page: Page, items: dict[str, tuple[int, str]]) -> None:
        self.page = page
        self.items = items  # card title -> (item id, external id)

    @property
    def confirmation(self) -> Locator:
        return self.page.get_by_test_id("stCaptionContainer").filter(has_text=re.compile(r"^(Saved|Undone|Nothing saved)"))

    def title(self) -> str:
        return self.page.get_by_test_id("stMain").get_by_test_id("stHtml").first.inner_text().strip()

    def card(self) -> str:
        """The external id of the item on the card, once the whole card is drawn: while Streamlit redraws,
        elements of the previous run stay on the page marked stale, the previous card's buttons included."""
        expect(self.page.get_by_role("button", name="Yes").first).to_be_visible()  # the page is up
        expect(self.page.locator("[data-stale=true]")).to_have_count(0)
        item_id, external_id = self.items[self.title()]
        expect(self.page.locator(f".st-key-y-{item_id}")).to_be_visible()  # the buttons are this card's
        return external_id

    def settled_card(self) -> str:
        """The card's external id, once drawn and its shortcuts had a moment to be bound."""
        external_id = self.card()
        self.page.wait_for_timeout(SETTLE_MS)
        return external_id

    def press_vote(self, key: str, said: str) -> str:
        """Press ``key`` (Y, N or S) until the page confirms the vote as ``said``; returns the item's external id.

        Streamlit can lose a key pressed while it re-binds shortcuts after a redraw (a known limitation).
        Pressing again is what an annotator does, and it is safe: a press on the same card carries the same
        request id, and one meant for a card already gone is dropped."""
        external_id = self.card()
        saved = f"Saved {external_id}: {said}. Press U to undo."
        for _ in range(KEY_RETRIES - 1):
            self.page.keyboard.press(key)
            try:
                expect(self.confirmation).to_have_text(saved, timeout=8_000)
                return external_id
            except AssertionError:
                if self.card() != external_id:
                    raise
        self.page.keyboard.press(key)
        expect(self.confirmation).to_have_text(saved)
        return external_id
