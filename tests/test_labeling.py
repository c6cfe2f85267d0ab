"""Assignment, votes, skips, undo, progress and blindness (annotations/labeling.py), on every database."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select

from annotations.db import make_engine, session_factory, upgrade, write_session
from annotations.importer import import_dataset
from annotations.labeling import (
    REASONS,
    Card,
    LabelingError,
    cast_vote,
    my_recent_labels,
    next_item,
    progress,
    relabel,
    score_after_vote,
    set_annotation_settings,
    undo_last,
)
from annotations.models import Dataset, Item, Label, LabelEvent, Lease, User, utcnow
from annotations.score_sets import store_score_set
from cftclip_core.formats import read_table
from tests.conftest import make_image

N_ITEMS = 6
T0 = utcnow().replace(microsecond=0)


@dataclasses.dataclass
class World:
    factory: object
    dataset_id: int
    items: list[int]  # item ids in position order
    users: dict[str, int]


@pytest.fixture
def world(instance, tmp_path: Path):
    upgrade(instance.database_url)
    engine = make_engine(instance.database_url)
    factory = session_factory(engine)
    dataset_id = _import(factory, instance, tmp_path / "table", "news", N_ITEMS)
    with write_session(factory) as session:
        for name in ("ann", "bob", "cat", "dan"):
            session.add(User(username=name, display_name=name, password_hash="x", role="annotator", active=True))
    with factory() as session:
        users = {u.username: u.id for u in session.scalars(select(User))}
        items = list(session.scalars(select(Item.id).where(Item.dataset_id == dataset_id).order_by(Item.position)))
    yield World(factory, dataset_id, items, users)
    engine.dispose()


def _import(factory, instance, folder: Path, name: str, n: int) -> int:
    rows = []
    for i in range(n):
        make_image(folder / f"img{i}.jpg", colour=(40 * i % 256, 20, 200))
        rows.append({"id": f"{name}-{i}", "image": f"img{i}.jpg", "title": f"Title {i}", "summary": f"Summary {i}"})
    pd.DataFrame(rows).to_csv(folder / "t.csv", index=False)
    return import_dataset(factory, instance, read_table(folder / "t.csv"), name).id


def _labels(world: World) -> dict[tuple[int, int], int | None]:
    with world.factory() as session:
        return {(label.item_id, label.user_id): label.value for label in session.scalars(select(Label))}


def _events(world: World) -> list[LabelEvent]:
    with world.factory() as session:
        return list(session.scalars(select(LabelEvent).order_by(LabelEvent.id)))


def _leases(world: World) -> dict[int, int]:
    with world.factory() as session:
        return {lease.item_id: lease.user_id for lease in session.scalars(select(Lease))}


def _next(world: World, user: str, now: datetime = T0) -> Card | None:
    return next_item(world.factory, world.dataset_id, world.users[user], now=now)


def _vote(world: World, user: str, item_id: int, value: int | None, now: datetime = T0, **kwargs):
    return cast_vote(world.factory, world.users[user], item_id, value, now=now, **kwargs)


def test_two_annotators_get_different_items_and_a_card_shows_no_one_elses_work(world: World) -> None:
    a, b = _next(world, "ann"), _next(world, "bob")
    assert (a.item_id, b.item_id) == (world.items[0], world.items[1])
    assert (a.title, a.summary, a.external_id, a.position) == ("Title 0", "Summary 0", "news-0", 0)
    assert a.lease_expires_at == T0 + timedelta(minutes=15)
    assert _leases(world) == {world.items[0]: world.users["ann"], world.items[1]: world.users["bob"]}
    # Blindness: a card carries the item and the lease, nothing about labels or model scores.
    assert {f.name for f in dataclasses.fields(Card)} == {
        "item_id", "dataset_id", "external_id", "title", "summary", "media_sha256", "lease_expires_at", "position"
    }


def test_refresh_or_second_tab_gets_the_same_item_and_renews_the_lease(world: World) -> None:
    first = _next(world, "ann")
    again = _next(world, "ann", T0 + timedelta(minutes=10))
    assert again.item_id == first.item_id
    assert again.lease_expires_at == T0 + timedelta(minutes=25)
    assert _next(world, "bob", T0 + timedelta(minutes=20)).item_id == world.items[1]  # renewed: still ann's


def test_an_expired_lease_goes_to_the_next_annotator_and_a_late_vote_is_still_kept(world: World) -> None:
    first = _next(world, "ann")
    later = T0 + timedelta(minutes=16)
    assert _next(world, "bob", later).item_id == first.item_id  # ann went away: bob takes over
    assert _next(world, "ann", later).item_id == world.items[1]  # ann is back: she gets another item

    late = _vote(world, "ann", first.item_id, 1, now=later)
    assert late.lease_held is False and not late.replayed
    assert _leases(world)[first.item_id] == world.users["bob"]  # bob's lease untouched
    on_time = _vote(world, "bob", first.item_id, 0, now=later)
    assert on_time.lease_held is True
    labels = _labels(world)
    assert labels[(first.item_id, world.users["ann"])] == 1
    assert labels[(first.item_id, world.users["bob"])] == 0
    assert len([k for k in labels if k[0] == first.item_id]) == 2  # one per annotator, no duplicate


def test_each_item_goes_to_overlap_different_annotators_then_to_nobody(world: World) -> None:
    set_annotation_settings(world.factory, world.dataset_id, overlap=2)
    seen: dict[str, list[int]] = {}
    for user in ("ann", "bob", "cat", "dan"):
        seen[user] = []
        while (card := _next(world, user)) is not None:
            seen[user].append(card.item_id)
            _vote(world, user, card.item_id, 1)
    labels = _labels(world)
    assert len(labels) == N_ITEMS * 2
    for item in world.items:
        assert len([k for k in labels if k[0] == item]) == 2
    assert seen["ann"] == seen["bob"] == world.items and seen["cat"] == seen["dan"] == []
    assert progress(world.factory, world.dataset_id, world.users["ann"]).items_complete == N_ITEMS


def test_a_skipped_item_is_not_shown_again_and_not_counted_as_a_label(world: World) -> None:
    set_annotation_settings(world.factory, world.dataset_id, overlap=1)
    first = _next(world, "ann")
    result = _vote(world, "ann", first.item_id, None)
    assert result.action == "skip"
    assert _next(world, "ann").item_id == world.items[1]
    assert _next(world, "bob").item_id == first.item_id  # a skip does not fill the item
    mine = progress(world.factory, world.dataset_id, world.users["ann"])
    assert (mine.my_labels, mine.my_skips, mine.team_labels) == (0, 1, 0)


def test_undo_of_a_first_vote_removes_it_and_shows_the_item_again(world: World) -> None:
    first = _next(world, "ann")
    _vote(world, "ann", first.item_id, 1)
    second = _next(world, "ann")
    assert undo_last(world.factory, world.users["ann"], world.dataset_id, now=T0) == first.item_id
    assert (first.item_id, world.users["ann"]) not in _labels(world)
    assert _next(world, "ann").item_id == first.item_id
    assert _next(world, "bob").item_id == second.item_id  # the item ann left is free again
    assert [e.action for e in _events(world)] == ["vote", "undo"]
    undo = _events(world)[-1]
    assert (undo.previous_value, undo.value) == (1, None)


def test_undo_of_an_edit_restores_the_previous_answer_and_undos_walk_back(world: World) -> None:
    first = _next(world, "ann")
    _vote(world, "ann", first.item_id, 0, reasons=["logo or graphic"], note="a logo")
    relabel(world.factory, world.users["ann"], first.item_id, 1, now=T0)
    assert _labels(world)[(first.item_id, world.users["ann"])] == 1

    assert undo_last(world.factory, world.users["ann"], world.dataset_id, now=T0) == first.item_id
    with world.factory() as session:
        label = session.get(Label, (first.item_id, world.users["ann"]))
        assert (label.value, label.reasons, label.note) == (0, ["logo or graphic"], "a logo")
    assert undo_last(world.factory, world.users["ann"], world.dataset_id, now=T0) == first.item_id
    assert _labels(world) == {}
    assert undo_last(world.factory, world.users["ann"], world.dataset_id, now=T0) is None
    assert [e.action for e in _events(world)] == ["vote", "vote", "undo", "undo"]


def test_undo_with_the_same_request_id_counts_once(world: World) -> None:
    _vote(world, "ann", _next(world, "ann").item_id, 1)
    second = _next(world, "ann")
    _vote(world, "ann", second.item_id, 0)
    for _ in range(2):
        assert undo_last(world.factory, world.users["ann"], world.dataset_id, request_id="u-1", now=T0) == second.item_id
    assert _labels(world) == {(world.items[0], world.users["ann"]): 1}
    assert [e.action for e in _events(world)] == ["vote", "vote", "undo"]


def test_a_double_click_with_the_same_request_id_is_recorded_once(world: World) -> None:
    card = _next(world, "ann")
    first = _vote(world, "ann", card.item_id, 1, request_id="r-1")
    again = _vote(world, "ann", card.item_id, 1, request_id="r-1")
    assert again.replayed and again.event_id == first.event_id and again.value == 1
    assert len(_events(world)) == 1 and len(_labels(world)) == 1
    with pytest.raises(LabelingError, match="request id was already used"):
        _vote(world, "bob", card.item_id, 0, request_id="r-1")
    assert len(_events(world)) == 1 and len(_labels(world)) == 1


def test_an_edit_is_logged_with_the_value_it_replaces(world: World) -> None:
    card = _next(world, "ann")
    _vote(world, "ann", card.item_id, 1)
    result = relabel(world.factory, world.users["ann"], card.item_id, 0, reasons=("wrong person",), now=T0)
    assert (result.had_previous, result.previous_value, result.value) == (True, 1, 0)
    assert _labels(world) == {(card.item_id, world.users["ann"]): 0}
    events = _events(world)
    assert [(e.action, e.value, e.previous_value, e.had_previous) for e in events] == [
        ("vote", 1, None, False), ("vote", 0, 1, True)
    ]
    assert events[1].reasons == ["wrong person"]


BAD_VOTES = [
    (2, {}, "must be 1"),
    (True, {}, "must be 1"),
    (1, {"reasons": ["no person"]}, "explain a 'no' vote"),
    (0, {"reasons": ["too blurry"]}, "Unknown reason"),
    (0, {"note": "x" * 2001}, "shorten it"),
    (1, {"seconds_spent": -1.0}, "seconds_spent"),
    (1, {"request_id": "r" * 65}, "request id"),
]


def test_invalid_votes_are_refused_and_nothing_is_written(world: World) -> None:
    card = _next(world, "ann")
    for value, kwargs, message in BAD_VOTES:
        with pytest.raises(LabelingError, match=message):
            _vote(world, "ann", card.item_id, value, **kwargs)
    assert _labels(world) == {} and _events(world) == []
    assert _leases(world) == {card.item_id: world.users["ann"]}  # still holding the item


def test_a_vote_on_a_missing_item_or_by_an_unknown_user_is_refused(world: World) -> None:
    with pytest.raises(LabelingError, match="does not exist"):
        _vote(world, "ann", 10_000, 1)
    with pytest.raises(LabelingError, match="No user"):
        cast_vote(world.factory, 10_000, world.items[0], 1)
    with pytest.raises(LabelingError, match="No dataset"):
        next_item(world.factory, 10_000, world.users["ann"])
    assert _labels(world) == {} and _events(world) == []


def test_all_reasons_are_accepted_for_a_no_vote(world: World) -> None:
    card = _next(world, "ann")
    _vote(world, "ann", card.item_id, 0, reasons=list(REASONS), note="  see image  ", flagged=True, seconds_spent=3.5)
    with world.factory() as session:
        label = session.get(Label, (card.item_id, world.users["ann"]))
    assert (label.reasons, label.note, label.flagged, label.seconds_spent) == (list(REASONS), "see image", True, 3.5)


def test_uncertainty_ordering_puts_items_closest_to_the_threshold_first(world: World) -> None:
    sims = [0.10, 0.48, 0.90, 0.55, None, 0.30]  # item 4 unscored
    scores = {item: (s, False) for item, s in zip(world.items, sims) if s is not None}
    score_set = store_score_set(world.factory, world.dataset_id, "m", "fp", "title", scores)
    set_annotation_settings(world.factory, world.dataset_id, uncertainty_score_set_id=score_set.id,
                            uncertainty_threshold=0.5)
    order = []
    while (card := _next(world, "ann")) is not None:
        order.append(world.items.index(card.item_id))
        _vote(world, "ann", card.item_id, None)
    assert order == [1, 3, 5, 0, 2, 4]
    set_annotation_settings(world.factory, world.dataset_id, uncertainty_score_set_id=None)
    assert world.items.index(_next(world, "bob").item_id) == 0  # back to position order


def test_progress_counts_mine_and_the_teams(world: World) -> None:
    set_annotation_settings(world.factory, world.dataset_id, overlap=2)
    a, b = world.items[0], world.items[1]
    _vote(world, "ann", a, 1)
    _vote(world, "bob", a, 0)
    _vote(world, "cat", a, 1)  # a third label (e.g. a late vote): counted once towards the target
    _vote(world, "ann", b, None)
    _vote(world, "bob", b, 1)
    mine = progress(world.factory, world.dataset_id, world.users["ann"])
    assert mine == dataclasses.replace(
        mine, n_items=N_ITEMS, overlap=2, labels_needed=12, team_labels=3, items_complete=1, my_labels=1, my_skips=1
    )
    with world.factory() as session:  # also accepts an open session
        assert progress(session, world.dataset_id, world.users["dan"]).my_labels == 0


def test_the_score_is_shown_only_after_the_annotators_own_vote_and_only_if_enabled(world: World) -> None:
    item = world.items[0]
    store_score_set(world.factory, world.dataset_id, "old", "fp", "title", {item: (0.1, False)})
    store_score_set(world.factory, world.dataset_id, "new", "fp", "title", {item: (0.7, False)})
    ann, bob = world.users["ann"], world.users["bob"]

    def score(user: int) -> float | None:
        with world.factory() as session:
            shown = score_after_vote(session, world.dataset_id, item, user)
        return None if shown is None else shown.similarity

    _vote(world, "ann", item, 1)
    assert score(ann) is None  # the dataset does not reveal scores
    set_annotation_settings(world.factory, world.dataset_id, reveal_score_after_vote=True)
    assert score(ann) == pytest.approx(0.7)  # newest score set
    with world.factory() as session:
        shown = score_after_vote(session, world.dataset_id, item, ann)
    # which set, against what threshold (the set's only score: its median) and what it predicts
    assert (shown.model_name, shown.score_set_id, shown.threshold, shown.prediction) == ("new", 2, 0.7, 0)
    set_annotation_settings(world.factory, world.dataset_id, uncertainty_score_set_id=2, uncertainty_threshold=0.5)
    with world.factory() as session:
        shown = score_after_vote(session, world.dataset_id, item, ann)
    assert (shown.threshold, shown.threshold_source, shown.prediction) == (0.5, "the dataset's ordering threshold", 1)
    assert score(bob) is None  # bob has not voted: blind
    _vote(world, "bob", item, None)
    assert score(bob) is None  # a skip does not unlock it


def test_settings_are_validated_and_nothing_changes_on_error(world: World, instance, tmp_path: Path) -> None:
    other = _import(world.factory, instance, tmp_path / "other", "other", 1)
    with world.factory() as session:
        other_item = session.scalar(select(Item.id).where(Item.dataset_id == other))
    foreign = store_score_set(world.factory, other, "m", "fp", "title", {other_item: (0.2, False)})
    bad = [
        {"overlap": 0}, {"overlap": 21}, {"overlap": True}, {"lease_minutes": 0}, {"lease_minutes": 241},
        {"guidelines": "g" * 20_001}, {"uncertainty_threshold": float("nan")},
        {"overlap": 5, "uncertainty_score_set_id": foreign.id},
    ]
    for kwargs in bad:
        with pytest.raises(LabelingError):
            set_annotation_settings(world.factory, world.dataset_id, **kwargs)
    with world.factory() as session:
        ds = session.get(Dataset, world.dataset_id)
        assert (ds.overlap, ds.lease_minutes, ds.guidelines, ds.uncertainty_score_set_id) == (3, 15, "", None)
    updated = set_annotation_settings(world.factory, world.dataset_id, overlap=20, lease_minutes=240,
                                      guidelines="Look for faces.", uncertainty_threshold=0.25)
    assert (updated.overlap, updated.lease_minutes, updated.guidelines, updated.uncertainty_threshold) == (
        20, 240, "Look for faces.", 0.25)
    assert _next(world, "ann").lease_expires_at == T0 + timedelta(minutes=240)


def test_my_recent_labels_lists_only_my_answers_newest_first(world: World) -> None:
    _vote(world, "ann", world.items[0], 1, now=T0)
    _vote(world, "ann", world.items[1], 0, now=T0 + timedelta(seconds=1), reasons=["no person"])
    _vote(world, "bob", world.items[2], 1, now=T0 + timedelta(seconds=2))
    with world.factory() as session:
        recent = my_recent_labels(session, world.dataset_id, world.users["ann"])
    assert [(r.item_id, r.value, r.reasons) for r in recent] == [
        (world.items[1], 0, ["no person"]), (world.items[0], 1, [])
    ]
    assert recent[0].external_id == "news-1" and recent[0].title == "Title 1"


def test_every_vote_writes_exactly_one_event_and_one_label(world: World) -> None:
    card = _next(world, "ann")
    _vote(world, "ann", card.item_id, 1)
    with world.factory() as session:
        assert session.scalar(select(func.count()).select_from(LabelEvent)) == 1
        assert session.scalar(select(func.count()).select_from(Label)) == 1
        assert session.scalar(select(func.count()).select_from(Lease)) == 0  # the lease is released


def test_answers_are_final_once_the_score_is_revealed(world) -> None:  # noqa: ANN001
    """Blindness: vote, read the score, undo or edit, vote again would let the score decide."""
    set_annotation_settings(world.factory, world.dataset_id, reveal_score_after_vote=True)
    user = world.users["ann"]
    card = next_item(world.factory, world.dataset_id, user)
    cast_vote(world.factory, user, card.item_id, 1)
    with pytest.raises(LabelingError, match="cannot be changed once given"):
        undo_last(world.factory, user, world.dataset_id)
    with pytest.raises(LabelingError, match="cannot be changed once given"):
        cast_vote(world.factory, user, card.item_id, 0)
    skipped = next_item(world.factory, world.dataset_id, user)
    cast_vote(world.factory, user, skipped.item_id, None)  # a skip reveals nothing: it can still be undone
    assert undo_last(world.factory, user, world.dataset_id) == skipped.item_id
    with world.factory() as session:
        assert session.scalars(select(Label.value).where(Label.user_id == user)).all() == [1]
