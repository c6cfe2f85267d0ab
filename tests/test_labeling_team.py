"""Team features of the labeling core, on every database: double clicks refused by the card's age,
datasets assigned to annotators, control items mixed into queues and the accuracy on them, comments
on flagged items, every past label reachable, and the live team view."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from annotations.comments import CommentError, add_comment, comments_on
from annotations.control import ControlError, clear_control_items, control_accuracy, make_control_items
from annotations.db import make_engine, session_factory, upgrade, write_session
from annotations.labeling import (
    LabelingError,
    NotAssignedError,
    TooSoonError,
    cast_vote,
    comments_on_my_flags,
    datasets_for,
    items_left_for,
    my_labels,
    next_item,
    set_annotation_settings,
    undo_last,
)
from annotations.models import ControlItem, Item, Label, LabelEvent, Lease, User, utcnow
from annotations.review import set_gold
from annotations.team import TeamError, assign, assigned_usernames, team_view
from tests.test_labeling import _import

T0 = utcnow().replace(microsecond=0)
LATER = T0 + timedelta(seconds=5)


@dataclasses.dataclass
class Team:
    factory: object
    dataset_id: int
    items: list[int]
    users: dict[str, int]

    def next(self, user: str, now=T0):  # noqa: ANN001, ANN201
        return next_item(self.factory, self.dataset_id, self.users[user], now=now)

    def vote(self, user: str, item_id: int, value: int | None, now=LATER, **kwargs):  # noqa: ANN001, ANN003, ANN201
        return cast_vote(self.factory, self.users[user], item_id, value, now=now, **kwargs)


@pytest.fixture
def team(instance, tmp_path: Path):  # noqa: ANN001, ANN201
    upgrade(instance.database_url)
    engine = make_engine(instance.database_url)
    factory = session_factory(engine)
    dataset_id = _import(factory, instance, tmp_path / "table", "news", 10)
    with write_session(factory) as session:
        for name, role in (("ann", "annotator"), ("bob", "annotator"), ("cat", "annotator"), ("rita", "researcher")):
            session.add(User(username=name, display_name=name, password_hash="x", role=role, active=True))
    with factory() as session:
        users = {u.username: u.id for u in session.scalars(select(User))}
        items = list(session.scalars(select(Item.id).where(Item.dataset_id == dataset_id).order_by(Item.position)))
    yield Team(factory, dataset_id, items, users)
    engine.dispose()


def _count(team: Team, model) -> int:  # noqa: ANN001
    with team.factory() as session:
        return session.scalar(select(func.count()).select_from(model))


# --- double clicks ---------------------------------------------------------------------------------


def test_a_vote_sooner_than_the_minimum_after_the_card_was_handed_out_saves_nothing(team: Team) -> None:
    card = team.next("ann")
    with pytest.raises(TooSoonError) as refused:
        team.vote("ann", card.item_id, 1, now=T0 + timedelta(milliseconds=80), min_seconds_shown=0.4)
    assert refused.value.seconds_shown == pytest.approx(0.08) and "80 ms" in str(refused.value)
    assert _count(team, Label) == _count(team, LabelEvent) == 0
    assert team.next("ann", T0 + timedelta(seconds=1)).item_id == card.item_id  # still leased to ann
    saved = team.vote("ann", card.item_id, 1, now=T0 + timedelta(seconds=1), min_seconds_shown=0.4)
    assert saved.lease_held and _count(team, LabelEvent) == 1


def test_a_double_click_reaching_the_next_card_is_refused_but_a_resent_first_click_is_answered(team: Team) -> None:
    first = team.next("ann")
    team.vote("ann", first.item_id, 1, now=T0 + timedelta(seconds=3), request_id="click-1", min_seconds_shown=0.4)
    second = team.next("ann", T0 + timedelta(seconds=3))  # drawn right after the first click
    with pytest.raises(TooSoonError):  # the second click, 90 ms later, on the new card: a new request id
        team.vote("ann", second.item_id, 1, now=T0 + timedelta(seconds=3.09), request_id="click-2",
                  min_seconds_shown=0.4)
    again = team.vote("ann", first.item_id, 1, now=T0 + timedelta(seconds=3.09), request_id="click-1",
                      min_seconds_shown=0.4)
    assert again.replayed  # the same click resent: answered, not refused, not recorded twice
    assert _count(team, LabelEvent) == 1
    with team.factory() as session:
        assert session.scalar(select(Label.item_id)) == first.item_id


def test_a_vote_soon_after_the_card_was_drawn_is_refused_however_old_its_lease(team: Team) -> None:
    """A browser can hold a second click while it draws the next card and send it once drawn: what
    counts then is when the drawing ended (``shown_at``), not when the item was handed out."""
    card = team.next("ann")
    drawn = T0 + timedelta(seconds=2)  # a slow page: drawn two seconds after the lease
    with pytest.raises(TooSoonError):
        team.vote("ann", card.item_id, 1, now=drawn + timedelta(milliseconds=100), shown_at=drawn,
                  min_seconds_shown=0.25)
    assert _count(team, Label) == 0
    team.vote("ann", card.item_id, 1, now=drawn + timedelta(seconds=1), shown_at=drawn, min_seconds_shown=0.25)
    assert _count(team, Label) == 1


def test_a_second_undo_right_after_the_first_is_refused(team: Team) -> None:
    for second in (1, 2):
        card = team.next("ann", T0 + timedelta(seconds=second * 10))
        team.vote("ann", card.item_id, 1, now=T0 + timedelta(seconds=second * 10 + 1))
    team.next("ann", T0 + timedelta(seconds=22))
    undone = undo_last(team.factory, team.users["ann"], team.dataset_id, now=T0 + timedelta(seconds=30),
                       min_seconds_shown=0.4)
    with pytest.raises(TooSoonError):
        undo_last(team.factory, team.users["ann"], team.dataset_id, now=T0 + timedelta(seconds=30.1),
                  min_seconds_shown=0.4)
    assert _count(team, Label) == 1 and undone == team.items[1]


# --- assignment ------------------------------------------------------------------------------------


def test_an_assigned_dataset_hands_items_only_to_its_annotators(team: Team) -> None:
    held = team.next("bob")
    assert assign(team.factory, team.dataset_id, ["ANN ", "cat"], team.users["rita"]) == ["ann", "cat"]
    with team.factory() as session:
        assert assigned_usernames(session, team.dataset_id) == ["ann", "cat"]
        assert session.get(Lease, held.item_id) is None  # bob's item was given back
        assert [c.name for c in datasets_for(session, team.users["bob"])] == []
        assert [(c.name, c.items_left) for c in datasets_for(session, team.users["ann"])] == [("news", 10)]
    with pytest.raises(NotAssignedError, match="assigned to other annotators"):
        team.next("bob")
    assert team.next("ann").item_id == team.items[0]
    assign(team.factory, team.dataset_id, [], team.users["rita"])  # open to everyone again
    assert team.next("bob").item_id == team.items[1]


def test_assigning_unknown_or_deactivated_users_changes_nothing(team: Team) -> None:
    assign(team.factory, team.dataset_id, ["ann"], None)
    with pytest.raises(TeamError, match="No user named zed"):
        assign(team.factory, team.dataset_id, ["bob", "zed"], None)
    with write_session(team.factory) as session:
        session.get(User, team.users["cat"]).active = False
    with pytest.raises(TeamError, match="cat is deactivated"):
        assign(team.factory, team.dataset_id, ["cat"], None)
    with team.factory() as session:
        assert assigned_usernames(session, team.dataset_id) == ["ann"]


# --- control items ---------------------------------------------------------------------------------


def _control(team: Team, answers: dict[int, int]) -> None:
    with write_session(team.factory) as session:
        for item_id, value in answers.items():
            session.add(ControlItem(item_id=item_id, dataset_id=team.dataset_id, value=value, source="gold"))


def _label_all(team: Team, user: str, value: int = 1, start=T0) -> list[int]:  # noqa: ANN001
    shown = []
    for step in range(20):
        card = team.next(user, start + timedelta(seconds=step))
        if card is None:
            break
        shown.append(card.item_id)
        team.vote(user, card.item_id, value, now=start + timedelta(seconds=step, milliseconds=500))
    return shown


def test_control_items_are_mixed_in_at_the_rate_and_go_to_every_annotator(team: Team) -> None:
    controls = team.items[:2]  # at the head of the dataset, yet they come only mixed in
    _control(team, {controls[0]: 1, controls[1]: 0})
    set_annotation_settings(team.factory, team.dataset_id, overlap=1, control_rate=0.25)
    ann = _label_all(team, "ann")
    assert [item in controls for item in ann[:8]] == [False, False, False, True, False, False, False, True]
    assert len(ann) == 10  # 8 ordinary items (overlap 1: all ann's) and the 2 control items
    bob = _label_all(team, "bob")  # nothing ordinary is left for bob, and control items come only mixed in
    assert bob == []
    with team.factory() as session:
        assert items_left_for(session, team.dataset_id, team.users["bob"]) == 0


def test_control_items_have_no_overlap_limit_and_accuracy_is_measured_on_them(team: Team) -> None:
    _control(team, {team.items[0]: 1, team.items[1]: 0})
    set_annotation_settings(team.factory, team.dataset_id, overlap=2, control_rate=0.5)
    shown = {user: _label_all(team, user, value) for user, value in (("ann", 1), ("bob", 0), ("cat", 1))}
    assert set(team.items[:2]) <= set(shown["ann"]) and set(team.items[:2]) <= set(shown["bob"])
    assert not set(team.items[:2]) & set(shown["cat"])  # came after the ordinary items were done
    with team.factory() as session:
        accuracy = control_accuracy(session, team.dataset_id).set_index("annotator_id")
    assert accuracy.loc["ann", ["n_control", "n_correct"]].tolist() == [2, 1]
    assert accuracy.loc["bob", "accuracy"] == 0.5 and 0 < accuracy.loc["bob", "ci_low"] < 0.5


def test_no_control_items_at_rate_zero(team: Team) -> None:
    _control(team, {team.items[0]: 1})
    set_annotation_settings(team.factory, team.dataset_id, control_rate=0.0)
    assert team.items[0] not in _label_all(team, "ann")
    with pytest.raises(LabelingError, match="control rate"):
        set_annotation_settings(team.factory, team.dataset_id, control_rate=0.9)


def test_control_items_come_from_settled_gold_or_the_imported_labels(team: Team, instance, tmp_path: Path) -> None:  # noqa: ANN001
    with pytest.raises(ControlError, match="settle some items"):
        make_control_items(team.factory, team.dataset_id, "gold", team.users["rita"])
    set_gold(team.factory, team.items[3], 0, "a logo only", team.users["rita"])
    assert make_control_items(team.factory, team.dataset_id, "gold", team.users["rita"]) == 1
    with team.factory() as session:
        assert session.get(ControlItem, team.items[3]).value == 0
    with pytest.raises(ControlError, match="import it with a 'label' column"):
        make_control_items(team.factory, team.dataset_id, "imported", None)
    assert clear_control_items(team.factory, team.dataset_id) == 1


# --- comments and my labels ------------------------------------------------------------------------


def test_comments_on_a_flag_reach_only_the_annotator_who_flagged_it(team: Team) -> None:
    card = team.next("ann")
    team.vote("ann", card.item_id, 0, flagged=True, note="is that the minister?")
    team.next("bob")
    team.vote("bob", card.item_id, 1)
    with pytest.raises(CommentError, match="Only researchers and admins"):
        add_comment(team.factory, card.item_id, team.users["ann"], "me too")
    with pytest.raises(CommentError, match="empty"):
        add_comment(team.factory, card.item_id, team.users["rita"], "   ")
    add_comment(team.factory, card.item_id, team.users["rita"], "Yes: the caption names her.")
    add_comment(team.factory, card.item_id, team.users["rita"], "  Settled as yes.  ")
    with team.factory() as session:
        assert [(c.author, c.body) for c in comments_on(session, card.item_id)] == [
            ("rita", "Yes: the caption names her."), ("rita", "Settled as yes.")]
        assert len(comments_on_my_flags(session, team.dataset_id, team.users["ann"])) == 2
        assert comments_on_my_flags(session, team.dataset_id, team.users["bob"]) == []


def test_every_past_label_is_reachable_by_page_and_by_search(team: Team) -> None:
    for step in range(10):
        card = team.next("ann", T0 + timedelta(seconds=step))
        team.vote("ann", card.item_id, step % 2, now=T0 + timedelta(seconds=step, milliseconds=1))
    with team.factory() as session:
        pages = [my_labels(session, team.dataset_id, team.users["ann"], offset=offset, limit=4) for offset in (0, 4, 8)]
        assert [p.total for p in pages] == [10, 10, 10]
        assert [label.external_id for p in pages for label in p.labels] == [f"news-{i}" for i in range(9, -1, -1)]
        found = my_labels(session, team.dataset_id, team.users["ann"], search="TITLE 7")
        assert (found.total, found.labels[0].external_id) == (1, "news-7")
        assert my_labels(session, team.dataset_id, team.users["ann"], search="100%").total == 0  # % is literal


# --- the live team view ----------------------------------------------------------------------------


def test_team_view_shows_who_holds_what_and_the_pace(team: Team) -> None:
    now = utcnow()
    for user, minutes_ago in (("ann", 50), ("bob", 30), ("ann", 10)):
        card = team.next(user, now - timedelta(minutes=minutes_ago))
        team.vote(user, card.item_id, 1, now=now - timedelta(minutes=minutes_ago - 1))
    team.next("cat", now - timedelta(minutes=2))
    with team.factory() as session:
        view = team_view(session, team.dataset_id, now)
    assert view.holds["annotator"].tolist() == ["cat"] and view.holds["item"].tolist() == ["news-0"]
    assert view.last_hour.labels == 3 and view.last_hour.annotators == 2
    assert view.last_hour.remaining == 10 * 3 - 3
    assert view.last_hour.eta == timedelta(hours=27 / 3)
    assert view.activity.set_index("annotator_id").loc["ann", "last_hour"] == 2
