"""Two annotators label with the keyboard in a real headless Chromium; a researcher sees the agreement.

The instance is prepared before the server starts: three accounts, the demo dataset, and a model
score for every item (so "no score before the vote" is a real check, not a trivially empty page).
Each key press is followed by waiting for what it must change on the page (the "Saved ..."
confirmation and the progress text), never by a blind sleep, and every vote is then checked in the
database: exactly the votes cast, per annotator, and nothing else. One key is pressed the instant the
next card's title shows, as fast annotators do, while the previous card's buttons (which answer the
same keys) are still on the page: it must never change the previous item.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from annotate_tab import DROPPED, AnnotateTab
from playwright.sync_api import Locator, Page, expect
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from annotations.db import write_session
from annotations.importer import ensure_demo_dataset
from annotations.models import Item, Label, LabelEvent, Score, ScoreSet, User
from annotations.settings import Settings
from annotations.users import create_user

pytestmark = pytest.mark.e2e

PASSWORD = "a long test password"
ANNOTATORS = ("alice", "bruno")
RESEARCHER = "rita"
N_ITEMS = 26  # the demo dataset
OVERLAP = 3  # the default
SAID = {1: "yes, shows an actor", 0: "no actor", None: "skipped"}
KEYS = {1: "y", 0: "n", None: "s"}
# What the model "said" about item number i (distinctive 3-decimal values, none of them in the demo texts).
SIMILARITIES = [round(0.7013 + 0.0071 * i, 4) for i in range(N_ITEMS)]


@pytest.fixture
def e2e_setup(e2e_instance: Path, e2e_db: sessionmaker[Session]) -> None:
    for name in ANNOTATORS:
        create_user(e2e_db, name, PASSWORD, "annotator")
    create_user(e2e_db, RESEARCHER, PASSWORD, "researcher")
    demo = ensure_demo_dataset(Settings.for_instance(e2e_instance), e2e_db)
    assert demo is not None and demo.overlap == OVERLAP
    with write_session(e2e_db) as session:
        items = session.scalars(select(Item.id).where(Item.dataset_id == demo.id).order_by(Item.position)).all()
        assert len(items) == N_ITEMS
        score_set = ScoreSet(dataset_id=demo.id, model_name="e2e-fixed", model_fingerprint="e2e", text_field="title",
                             n_items=len(items), n_truncated=0)
        session.add(score_set)
        session.flush()
        session.add_all(Score(score_set_id=score_set.id, item_id=item_id, similarity=similarity, truncated=False)
                        for item_id, similarity in zip(items, SIMILARITIES))


def labels_of(factory: sessionmaker[Session], username: str) -> dict[str, tuple[int | None, bool]]:
    """external id -> (value, flagged) of every label of the user, straight from the database."""
    with factory() as session:
        rows = session.execute(
            select(Item.external_id, Label.value, Label.flagged)
            .join(Item, Item.id == Label.item_id).join(User, User.id == Label.user_id)
            .where(User.username == username)
        ).all()
    return {external_id: (value, bool(flagged)) for external_id, value, flagged in rows}


class Annotator(AnnotateTab):
    """One annotator's browser tab on the Annotate page, and what they have done there."""

    def __init__(self, page: Page, username: str, items: dict[str, tuple[int, str]]) -> None:
        super().__init__(page, items)
        self.username = username
        self.labelled = 0
        self.skipped = 0
        self.team = 0  # in these tests nobody else votes while this annotator does
        self.voted: list[str] = []  # external ids in the order their votes were confirmed

    @property
    def progress(self) -> Locator:
        return self.page.get_by_test_id("stProgress")

    def expect_progress(self) -> None:
        expect(self.progress).to_have_text(
            f"You: {self.labelled} labelled, {self.skipped} skipped · Team: {self.team} of "
            f"{N_ITEMS * OVERLAP} labels, 0 of {N_ITEMS} items complete"
        )

    def count(self, external_id: str, value: int | None) -> None:
        self.labelled += value is not None
        self.team += value is not None
        self.skipped += value is None
        self.voted.append(external_id)

    def vote(self, value: int | None) -> str:
        """Press Y, N or S and wait until the page confirms the vote; returns the item's external id."""
        external_id = self.press_vote(KEYS[value], SAID[value])
        self.count(external_id, value)
        self.expect_progress()
        return external_id

    def vote_then_vote_at_once(self, first: int | None, second: int | None) -> tuple[str, str]:
        """Vote, then press the next key the instant the next card's title shows, as a fast annotator
        does, before Streamlit has redrawn the buttons under it. That key must not reach the previous
        item: it may count for the card on screen, or be refused or lost (then it is pressed again).
        Returns the two items' external ids."""
        external_id = self.settled_card()  # the first key must not be lost: the test waits for its redraw
        self.page.keyboard.press(KEYS[first])
        new_title = self.page.wait_for_function(  # checked every animation frame; expect() polls 100 ms+ apart
            "old => { const t = document.querySelector('.card-title');"
            " return t && t.innerText.trim() !== old ? t.innerText.trim() : null }",
            arg=self.title(), polling="raf",
        ).json_value()
        self.page.keyboard.press(KEYS[second])
        next_id = self.items[new_title][1]
        first_caption = f"Saved {external_id}: {SAID[first]}. Press U to undo."
        try:  # the second key's rerun replaces the first vote's confirmation, unless the key was lost
            expect(self.confirmation).not_to_have_text(first_caption, timeout=5_000)
        except AssertionError:
            pass
        expect(self.page.locator("[data-stale=true]")).to_have_count(0)
        caption = self.confirmation.inner_text()
        self.count(external_id, first)
        if caption == f"Saved {next_id}: {SAID[second]}. Press U to undo.":  # counted for the card on screen
            self.count(next_id, second)
            self.expect_progress()
            return external_id, next_id
        assert caption == first_caption or caption.startswith(DROPPED), (
            f"the key pressed once the next card ({next_id}) showed went elsewhere: {caption!r}"
        )
        self.expect_progress()  # refused or lost: nothing was saved for it; press it again
        assert self.vote(second) == next_id
        return external_id, next_id

    def undo(self) -> str:
        """Press U; the undone item comes back on the card. Returns its external id."""
        undone = self.voted.pop()
        self.settled_card()  # pressed once only: a second U would undo the vote before
        self.page.keyboard.press("u")
        expect(self.confirmation).to_have_text("Undone: that item is back for you.")
        self.labelled -= 1
        self.team -= 1
        self.expect_progress()
        assert self.card() == undone
        return undone

    def flag(self) -> None:
        self.settled_card()
        self.page.keyboard.press("f")
        expect(self.status).to_have_text("Flagged for review: vote as usual.")  # said once...
        expect(self.page.get_by_text("Flagged for review: vote as usual.")).to_have_count(2)  # ...and marked
        expect(self.page.get_by_role("alert")).to_have_count(0)  # not an alert repeated on every redraw

    def twice(self, press: Callable[[], None], first_value: int) -> tuple[str, str]:
        """Press (click or key) twice, 80 ms apart, on a card looked at: only the first press may count, the
        next card must stay untouched. Returns the two items' external ids."""
        external_id = self.settled_card()
        press()
        self.page.wait_for_timeout(80)
        press()
        expect(self.page.locator("[data-stale=true]")).to_have_count(0)
        next_id = self.card()
        assert next_id != external_id
        said = self.status.inner_text()
        assert said == f"Saved {external_id}: {SAID[first_value]}. Press U to undo." or said.startswith(DROPPED), said
        self.count(external_id, first_value)
        self.expect_progress()
        return external_id, next_id


def check_accessibility(tab: Annotator, screenshot: Callable[[Page, str], Path]) -> None:
    """Zoom and keys dialogs by key; Yes and No look alike; the image says what it shows; one live region;
    at 390 px the summary and the vote buttons are on the first screen, after a short image."""
    page = tab.page
    tab.settled_card()
    title = tab.title()
    image = page.get_by_test_id("stImage").locator("img").first
    assert image.get_attribute("alt") == f"Thumbnail of the article: {title}"
    page.keyboard.press("z")
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("img", name=f"Thumbnail of the article: {title}")).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    tab.settled_card()
    page.keyboard.press("h")
    keys = dialog.get_by_role("table")
    expect(keys).to_be_visible()
    for key in ("Y", "N", "1", "6", "S", "U", "F", "Z", "G", "H"):
        expect(keys.get_by_role("cell", name=key, exact=True)).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)

    def look(name: str) -> dict[str, str]:
        return page.locator(f".st-key-{name}-{tab.items[title][0]}").get_by_role("button").first.evaluate(
            "b => { const s = getComputedStyle(b); return {bg: s.backgroundColor, fg: s.color, border: s.borderColor} }")

    page.mouse.move(1, 1)  # neither hovered nor focused
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    assert look("y") == look("n")  # a blind vote: neither answer is favoured
    expect(page.locator("[role=status], [aria-live]")).to_have_count(1)
    expect(page.get_by_role("alert")).to_have_count(0)

    size = page.viewport_size
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        page.wait_for_timeout(300)  # the layout follows the width
        screenshot(page, "annotate-phone")
        scroller = page.get_by_test_id("stMain")
        assert scroller.evaluate("m => m.scrollTop") == 0
        image_box = image.bounding_box()
        item_id = tab.items[title][0]
        for needed in (page.locator(".card-title"), page.locator(".card-summary"),
                       page.locator(f".st-key-y-{item_id}").get_by_role("button", name=re.compile("^Yes")),
                       page.locator(f".st-key-n-{item_id}").get_by_role("button", name=re.compile("^No"))):
            box = needed.bounding_box()
            assert box is not None and box["y"] >= image_box["y"] + image_box["height"] - 1  # after the image...
            assert box["y"] + box["height"] <= 844, needed  # ...and on the first screen, without scrolling
    finally:
        page.set_viewport_size(size)


def metric(page: Page, label: str) -> Locator:
    label_locator = page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True)
    return page.get_by_test_id("stMetric").filter(has=label_locator).get_by_test_id("stMetricValue")


def test_two_annotators_label_with_the_keyboard_and_a_researcher_sees_the_agreement(
    streamlit_server: str,
    e2e_db: sessionmaker[Session],
    new_page: Callable[[], Page],
    sign_in: Callable[[Page, str, str, str], None],
    screenshot: Callable[[Page, str], Path],
) -> None:
    with e2e_db() as session:
        items = {title: (item_id, external_id)
                 for item_id, title, external_id in session.execute(select(Item.id, Item.title, Item.external_id))}
        first_items = session.scalars(select(Item.external_id).order_by(Item.position).limit(7)).all()

    # Annotator A, in their own browser context: six votes (one undone and redone, one flagged), one skip.
    alice_page = new_page()
    sign_in(alice_page, streamlit_server, "alice", PASSWORD)
    expect(alice_page.get_by_role("heading", level=1)).to_have_text("Annotate")
    alice = Annotator(alice_page, "alice", items)
    alice.settled_card()
    alice.expect_progress()
    screenshot(alice_page, "annotate-card")
    alice.vote(1)
    alice.vote(0)
    third = alice.vote(1)
    assert labels_of(e2e_db, "alice")[third] == (1, False)
    assert alice.undo() == third
    assert third not in labels_of(e2e_db, "alice")  # the undo removed the label...
    with e2e_db() as session:  # ...and was logged
        assert session.scalar(select(LabelEvent.action).order_by(LabelEvent.id.desc()).limit(1)) == "undo"
    alice.vote(0)
    alice.flag()
    flagged = alice.vote(1)
    fifth, _ = alice.vote_then_vote_at_once(0, 1)
    with e2e_db() as session:  # the fast second key did not touch the fifth item
        assert session.scalar(select(func.count()).select_from(LabelEvent).join(Item).where(
            Item.external_id == fifth)) == 1
    alice.vote(None)
    assert alice.voted == first_items  # items in position order, the undone one voted again in place
    alice_votes = dict(zip(first_items, [1, 0, 0, 1, 0, 1, None]))
    assert labels_of(e2e_db, "alice") == {
        external_id: (value, external_id == flagged) for external_id, value in alice_votes.items()
    }
    # Alice's tab now holds the next item (the 8th); Bruno gets the items she already labelled.

    bruno_page = new_page()
    sign_in(bruno_page, streamlit_server, "bruno", PASSWORD)
    bruno = Annotator(bruno_page, "bruno", items)
    bruno.team = alice.labelled
    bruno.settled_card()
    bruno.expect_progress()
    bruno_votes = dict(zip(first_items, [1, 1, 0, 1, 0, 0]))
    for value in bruno_votes.values():
        # Blind: neither the other annotator's name nor any model score is on Bruno's page.
        text = bruno_page.locator("body").inner_text()
        assert "alice" not in text and "alice" not in bruno_page.content()
        assert "similarity" not in text.lower()
        assert not [s for s in SIMILARITIES if f"{s:.3f}" in text or f"{s:.2f}" in text]
        bruno.vote(value)
    assert bruno.voted == first_items[:6]  # Alice's items, including the one she skipped (7th) comes next
    assert bruno.card() == first_items[6]
    assert labels_of(e2e_db, "bruno") == {external_id: (value, False) for external_id, value in bruno_votes.items()}
    assert labels_of(e2e_db, "alice") == {
        external_id: (value, external_id == flagged) for external_id, value in alice_votes.items()
    }  # unchanged by Bruno's votes

    # Alice again, on her 8th item: a double click and a double key press count once each, and the next
    # card stays untouched; a number key picks a reason; Z zooms; H lists the keys; then at phone width.
    alice.team += bruno.labelled
    # A double click is two clicks at one point of the screen, 80 ms apart: the second goes to whatever is
    # there by then, the old card's Yes button, still shown while the next one is drawn, or the next card's.
    # (A locator's click would wait for a button it can act on, which on a slow machine can be the next
    # card's, long after it appeared: no longer a double click.)
    alice.settled_card()
    yes = alice_page.get_by_role("button", name="Yes").first.bounding_box()
    assert yes is not None
    clicked, spared = alice.twice(
        lambda: alice_page.mouse.click(yes["x"] + yes["width"] / 2, yes["y"] + yes["height"] / 2), 1)
    pressed, untouched = alice.twice(lambda: alice_page.keyboard.press("n"), 0)
    assert pressed == spared
    with e2e_db() as session:
        counts = dict(session.execute(select(Item.external_id, func.count(LabelEvent.id)).join(LabelEvent)
                                      .where(Item.external_id.in_([clicked, pressed, untouched]))
                                      .group_by(Item.external_id)).all())
    assert counts == {clicked: 1, pressed: 1}  # one event each, nothing on the card after them
    alice.settled_card()
    alice_page.keyboard.press("3")
    expect(alice.status).to_have_text("Reason picked: wrong person. Press N to vote no.")
    assert alice.vote(0) == untouched
    with e2e_db() as session:
        assert session.scalar(select(Label.reasons).join(Item).where(Item.external_id == untouched)) == ["wrong person"]
    alice_votes.update({clicked: 1, pressed: 0, untouched: 0})
    check_accessibility(alice, screenshot)

    # The researcher: 12 yes/no votes (the skip is not one) on 6 items, both annotators agree on 4 of them
    # (Alice's 3 later votes are on items with one vote: counted, but no agreement statistic uses them).
    # Half the votes are yes: Fleiss' kappa = (4/6 - 1/2) / (1 - 1/2) = 1/3; Krippendorff's alpha (nominal)
    # = 1 - (4/12) / (2*6*6 / (12*11)) = 7/18 = 0.389.
    rita_page = new_page()
    sign_in(rita_page, streamlit_server, RESEARCHER, PASSWORD)
    rita_page.get_by_test_id("stSidebar").get_by_role("link", name="Review").click()
    expect(rita_page.get_by_role("heading", level=1)).to_have_text("Review")
    expect(metric(rita_page, "Votes")).to_have_text("15")  # and Alice's 3 votes on items nobody else labelled
    expect(metric(rita_page, "Items with 2+ votes")).to_have_text(f"6 of {N_ITEMS}")
    expect(metric(rita_page, "Percent agreement")).to_have_text("66.7%")
    expect(metric(rita_page, "Fleiss' kappa")).to_have_text("0.333")
    expect(metric(rita_page, "Krippendorff's alpha")).to_have_text("0.389")
    screenshot(rita_page, "review-agreement")
    rita_page.get_by_role("tab", name="Review queue").click()
    # Two disagreements (the 2nd and 6th items) and Alice's flag on the 4th.
    expect(rita_page.get_by_text("3 item(s) with disagreement or a flag to settle.", exact=False)).to_be_visible()
    expect(rita_page.get_by_role("button", name="Save gold label")).to_be_visible()  # the form to settle one
    rita_page.get_by_role("tab", name="Team").click()  # the live view: Alice holds her next item
    expect(metric(rita_page, "Labels in the last hour")).to_have_text("15")
    expect(metric(rita_page, "Labels still needed")).to_have_text(str(N_ITEMS * OVERLAP - 15))
    expect(rita_page.get_by_text("Nobody holds an item")).to_have_count(0)
    rita_page.get_by_role("tab", name="Export").click()
    expect(rita_page.get_by_role("button", name="Download JSONL")).to_be_visible()  # the page's last element...
    expect(rita_page.get_by_test_id("stException")).to_have_count(0)  # ...so the whole page ran, without an error
