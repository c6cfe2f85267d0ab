"""The Annotate page through Streamlit's AppTest: votes, reasons by number keys, double clicks, undo,
the end screen and its dataset switch, my labels, the score after a vote, and what it does for
accessibility (what a browser-free test can see; the rest is in tests/e2e/test_annotation_browser.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select, update

from annotations.importer import import_dataset
from annotations.labeling import REASONS, cast_vote, next_item
from annotations.models import Dataset, Label, LabelEvent, Lease, utcnow
from annotations.score_sets import store_score_set
from annotations.users import create_user
from cftclip_core.formats import read_table
from studio.annotate import actions
from studio.annotate.keys import KEYS
from tests.conftest import app_test, labels_in, make_image, sessions

ANNOTATOR = ("ann", "annotator")
ADMIN = ("ada", "admin")




def looked_at_card(at, settings) -> None:  # noqa: ANN001
    """The annotator has looked at the card for two minutes (AppTest clicks at once after a run): it was
    handed out and drawn that long ago."""
    with sessions(settings).begin() as session:
        session.execute(update(Lease).values(leased_at=utcnow() - timedelta(minutes=2)))
    at.session_state[actions.DRAWN_AT] = utcnow() - timedelta(minutes=2)


@pytest.fixture
def quick_clicks_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A click within a minute of its card is "too soon": every click not after ``looked_at_card`` is one,
    however long AppTest takes between runs (the page's real minimum is a fraction of a second)."""
    monkeypatch.setattr(actions, "MIN_SECONDS_SHOWN", 60.0)


def button(at, label: str):  # noqa: ANN001, ANN201
    return next(b for b in at.button if b.label == label)


def press(at, settings, label: str):  # noqa: ANN001, ANN201
    """Click a card button after having looked at the card."""
    looked_at_card(at, settings)
    return button(at, label).click().run()


def status(at) -> str:  # noqa: ANN001
    """The page's one status line (a live region)."""
    lines = [h.value for h in at.get("html") if 'role="status"' in h.value]
    assert len(lines) == 1, lines
    return lines[0]


def small_dataset(settings, tmp_path: Path, name: str, n: int, **columns) -> int:  # noqa: ANN001, ANN003
    rows = []
    for i in range(n):
        make_image(tmp_path / name / f"{i}.jpg", colour=(30 * i % 256, 90, 20))
        rows.append({"id": f"{name}-{i}", "image": f"{i}.jpg", "title": f"{name} title {i}", "summary": f"summary {i}",
                     **{k: v[i] for k, v in columns.items()}})
    pd.DataFrame(rows).to_csv(tmp_path / name / "t.csv", index=False)
    return import_dataset(sessions(settings), settings, read_table(tmp_path / name / "t.csv"), name).id


def annotate(settings, dataset: str | None = None):  # noqa: ANN001, ANN201
    at = app_test(settings, "pages/annotate.py", user=ANNOTATOR)
    if dataset:
        at.session_state["annotate_dataset"] = dataset
    return at.run()


def test_keyboard_flow_vote_reasons_skip_flag_undo(app_instance) -> None:  # noqa: ANN001
    app_test(app_instance, user=ADMIN).run()  # first start imports the demo dataset
    at = annotate(app_instance)
    assert not at.exception
    shown = [m.value for m in at.get("html")]
    assert any("Collins" in h for h in shown)  # the first item's title, as plain text
    assert not at.metric and not any("similarity" in c.value.lower() for c in at.caption)  # blind

    press(at, app_instance, "Yes")
    assert [v for _, _, v in labels_in(app_instance)] == [1]
    assert "Saved" in status(at) and "yes, shows an actor" in status(at)
    button(at, f"3 {REASONS[2]}").click().run()  # key 3: a reason for a "no"
    assert button(at, f"3 {REASONS[2]} (picked)")  # marked as picked
    assert "Reason picked: wrong person" in status(at)
    press(at, app_instance, "No")
    press(at, app_instance, "Flag")
    assert "Flagged for review" in status(at) and not at.warning  # said once, not an alert on every run
    press(at, app_instance, "Skip")
    assert sorted((v is None) for _, _, v in labels_in(app_instance)) == [False, False, True]
    with sessions(app_instance)() as session:
        no = session.scalars(select(Label).where(Label.value == 0)).one()
        skipped = session.scalars(select(Label).where(Label.value.is_(None))).one()
        assert no.reasons == ["wrong person"] and skipped.flagged and no.seconds_spent is not None
    press(at, app_instance, "Undo")
    assert len(labels_in(app_instance)) == 2
    assert "Undone" in status(at)
    with sessions(app_instance)() as session:
        assert session.scalar(select(func.count()).select_from(LabelEvent)) == 4  # vote, vote, skip, undo


def test_a_double_click_saves_one_vote_and_leaves_the_next_card_alone(app_instance, quick_clicks_dropped) -> None:  # noqa: ANN001
    app_test(app_instance, user=ADMIN).run()
    at = annotate(app_instance)
    press(at, app_instance, "Yes")  # the first click, on a card looked at
    first = labels_in(app_instance)
    button(at, "Yes").click().run()  # the second click lands on the next card the instant it is drawn
    assert labels_in(app_instance) == first  # one vote, the next card untouched
    message = status(at)
    assert message.startswith('<div class="annotate-status"') and "Dropped a click or key that came" in message
    assert "saved " in message and "yes, shows an actor" in message  # says what the first click saved
    press(at, app_instance, "No")  # later, a real vote on the card on screen is saved
    assert sorted(v for _, _, v in labels_in(app_instance)) == [0, 1]


def test_a_double_press_of_undo_undoes_one_vote(app_instance, quick_clicks_dropped) -> None:  # noqa: ANN001
    app_test(app_instance, user=ADMIN).run()
    at = annotate(app_instance)
    press(at, app_instance, "Yes")
    press(at, app_instance, "No")
    press(at, app_instance, "Undo")
    assert len(labels_in(app_instance)) == 1
    button(at, "Undo").click().run()  # the second U of a double press: the undone item just came back
    assert len(labels_in(app_instance)) == 1 and "Dropped" in status(at)


def test_blind_card_looks_neutral_and_describes_its_image(app_instance) -> None:  # noqa: ANN001
    app_test(app_instance, user=ADMIN).run()
    at = annotate(app_instance)
    assert button(at, "Yes").proto.type == button(at, "No").proto.type == "secondary"  # neither is favoured
    image = at.get("image")[0].proto.imgs[0]
    title = next(h.value for h in at.get("html") if 'class="card-title"' in h.value)
    assert image.alt.startswith("Thumbnail of the article: ") and image.alt.split(": ", 1)[1] in title


def test_the_keys_help_lists_every_key_the_page_answers(app_instance) -> None:  # noqa: ANN001
    app_test(app_instance, user=ADMIN).run()
    at = annotate(app_instance)
    shortcuts = {b.proto.shortcut.lower() for b in at.button if b.proto.shortcut}
    assert {"y", "n", "s", "u", "f", "z", "g", "h", "1", "6"} <= shortcuts
    button(at, "Keys").click().run()
    listed = {key.lower() for key in at.table[0].value["Key"]}
    assert shortcuts == listed == set(KEYS)


def test_end_screen_names_the_datasets_that_still_need_me_and_switches(app_instance, tmp_path: Path) -> None:  # noqa: ANN001
    small_dataset(app_instance, tmp_path, "alpha", 2)
    small_dataset(app_instance, tmp_path, "beta", 3)
    at = annotate(app_instance, "alpha")
    assert at.selectbox(key="annotate_dataset").value == "alpha"  # the switch is on the page, not in the sidebar
    press(at, app_instance, "Yes")
    press(at, app_instance, "No")
    assert any("Nothing left for you in this dataset" in s.value for s in at.success)
    switch = button(at, "Label beta (3 item(s) left for you)")
    assert at.expander and "My labels (2)" in at.expander[0].label  # my labels stay reachable there
    switch.click().run()
    assert at.selectbox(key="annotate_dataset").value == "beta"
    assert any("beta title 0" in h.value for h in at.get("html"))


def test_any_of_my_labels_can_be_found_and_changed(app_instance, tmp_path: Path) -> None:  # noqa: ANN001
    dataset_id = small_dataset(app_instance, tmp_path, "many", 14)
    factory = sessions(app_instance)
    ann = create_user(factory, "ann", "correct horse battery", "annotator")
    for _ in range(13):  # more than a page of labels
        cast_vote(factory, ann.id, next_item(factory, dataset_id, ann.id).item_id, 0)
    at = annotate(app_instance, "many")
    assert "My labels (13)" in at.expander[0].label
    assert not [b for b in at.button if b.key == "edit-y-" + str(_item_id(app_instance, "many-0"))]  # page 2
    button(at, "Older").click().run()
    button_key = f"edit-y-{_item_id(app_instance, 'many-0')}"
    next(b for b in at.button if b.key == button_key).click().run()
    assert "Changed many-0 to yes" in status(at)
    at.text_input(key="my_labels_search").input("title 12").run()
    assert "1 found" in at.expander[0].label
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Label).where(Label.value == 1)) == 1


def _item_id(settings, external_id: str) -> int:  # noqa: ANN001
    from annotations.models import Item

    with sessions(settings)() as session:
        return session.scalar(select(Item.id).where(Item.external_id == external_id))


def test_the_score_after_a_vote_names_its_score_set_threshold_and_prediction(app_instance, tmp_path: Path) -> None:  # noqa: ANN001
    dataset_id = small_dataset(app_instance, tmp_path, "scored", 3, split=["val", "val", "test"])
    factory = sessions(app_instance)
    ids = [_item_id(app_instance, f"scored-{i}") for i in range(3)]
    store_score_set(factory, dataset_id, "clip-x", "fp", "title", {ids[0]: (0.31, False), ids[1]: (0.11, False),
                                                                   ids[2]: (0.5, False)})
    with factory.begin() as session:
        session.execute(update(Dataset).where(Dataset.id == dataset_id).values(reveal_score_after_vote=True))
    at = annotate(app_instance, "scored")
    press(at, app_instance, "No")
    message = status(at)
    assert "score set #1, clip-x on the title" in message and "similarity 0.310" in message
    assert "threshold of 0.210" in message and "val-median" in message  # the median of the two val items
    assert "it predicts yes, shows an actor" in message


def test_article_markup_shows_as_text(app_instance, tmp_path: Path) -> None:  # noqa: ANN001
    make_image(tmp_path / "a.jpg")
    pd.DataFrame([{"id": "x", "image": "a.jpg", "title": "<script>alert(1)</script> **bold**",
                   "summary": "![img](http://evil/x.png) <b>hi</b>"}]).to_csv(tmp_path / "t.csv", index=False)
    import_dataset(sessions(app_instance), app_instance, read_table(tmp_path / "t.csv"), "markup")
    at = annotate(app_instance, "markup")
    shown = " ".join(h.value for h in at.get("html"))
    assert "&lt;script&gt;alert(1)&lt;/script&gt; **bold**" in shown and "<b>" not in shown
    assert at.get("image")[0].proto.imgs[0].alt == "Thumbnail of the article: <script>alert(1)</script> **bold**"


def test_annotator_changes_an_earlier_answer_with_a_trace(app_instance) -> None:  # noqa: ANN001
    app_test(app_instance, user=ADMIN).run()  # first start imports the demo dataset
    at = annotate(app_instance)
    press(at, app_instance, "No")
    press(at, app_instance, "Yes")
    next(b for b in at.button if b.label == "Set yes" and not b.disabled).click().run()  # the earlier "no"
    assert not at.exception
    assert sorted(v for _, _, v in labels_in(app_instance)) == [1, 1]
    with sessions(app_instance)() as session:
        edit = session.scalars(select(LabelEvent).order_by(LabelEvent.id.desc())).first()
        assert (edit.value, edit.previous_value, edit.had_previous) == (1, 0, True)
    assert "Changed" in status(at)
