"""The Review page through AppTest: agreement, settling the queue (count, table and picker move
together), comments, the team tab, control items, settings with their real defaults, and export."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pandas as pd
from sqlalchemy import select

from annotations.importer import import_dataset
from annotations.labeling import DEFAULT_GUIDELINES, cast_vote, next_item
from annotations.models import ControlItem, Dataset, GoldLabel, ItemComment, Lease
from annotations.review import export_archive
from annotations.score_sets import store_score_set
from annotations.users import create_user
from cftclip_core.demo import demo_table_path
from cftclip_core.formats import read_table
from tests.conftest import app_test, sessions

RESEARCHER = ("rita", "researcher")



def review(settings, tab: str = "Agreement", dataset: str = "votes"):  # noqa: ANN001, ANN201
    at = app_test(settings, "pages/review.py", user=RESEARCHER)
    at.session_state["review_dataset"] = dataset
    at.session_state["review_tab"] = tab
    return at.run()


def button(at, label: str):  # noqa: ANN001, ANN201
    return next(b for b in at.button if b.label == label)


def voted_dataset(settings, name: str = "votes", split_every: int = 2) -> int:  # noqa: ANN001
    """Three annotators, four items each: the first two say yes, the third says no on every other item."""
    factory = sessions(settings)
    dataset = import_dataset(factory, settings, read_table(demo_table_path()), name)
    voters = [create_user(factory, f"{name}{i}", "correct horse battery", "annotator") for i in range(3)]
    for index, voter in enumerate(voters):
        for _ in range(4):
            card = next_item(factory, dataset.id, voter.id)
            cast_vote(factory, voter.id, card.item_id, 1 if index < 2 or card.position % split_every else 0)
    return dataset.id


def test_review_shows_agreement(app_instance) -> None:  # noqa: ANN001
    voted_dataset(app_instance)
    at = review(app_instance)
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Votes"] == "12" and metrics["Fleiss' kappa"] != "n/a"


def test_a_settled_item_leaves_the_count_and_the_table_and_the_picker_moves_on(app_instance) -> None:  # noqa: ANN001
    voted_dataset(app_instance)
    at = review(app_instance, "Review queue")
    assert at.caption[0].value.startswith("2 item(s) with disagreement or a flag to settle")
    first, second = at.dataframe[0].value["external_id"].tolist()
    assert at.selectbox(key=f"review_item_{_dataset_id(app_instance)}").format_func(
        at.selectbox(key=f"review_item_{_dataset_id(app_instance)}").value) == first
    at.text_input(key=f"gold-reason-{_item(app_instance, first)}").input("face of the minister is visible")
    button(at, "Save gold label").click().run()
    assert not at.exception
    assert at.session_state["review_tab"] == "Review queue"  # still on the queue
    assert at.caption[0].value.startswith("1 item(s) with disagreement or a flag to settle")  # count...
    assert at.dataframe[0].value["external_id"].tolist() == [second]  # ...and table, together
    picker = at.selectbox(key=f"review_item_{_dataset_id(app_instance)}")
    assert picker.format_func(picker.value) == second  # the picker moved on to the next item
    assert any("Gold label saved" in s.value for s in at.success)
    with sessions(app_instance)() as session:
        gold = session.scalars(select(GoldLabel)).one()
        assert gold.reason == "face of the minister is visible" and gold.method == "adjudicated"
    at.toggle(key=f"settled_{_dataset_id(app_instance)}").set_value(True).run()
    assert at.dataframe[0].value["external_id"].tolist() == [second, first]  # settled ones after


def _dataset_id(settings, name: str = "votes") -> int:  # noqa: ANN001
    with sessions(settings)() as session:
        return session.scalar(select(Dataset.id).where(Dataset.name == name))


def _item(settings, external_id: str, name: str = "votes") -> int:  # noqa: ANN001
    from annotations.models import Item

    with sessions(settings)() as session:
        return session.scalar(select(Item.id).join(Dataset).where(Item.external_id == external_id, Dataset.name == name))


def test_review_of_a_tie_preselects_no_gold_label(app_instance) -> None:  # noqa: ANN001
    factory = sessions(app_instance)
    dataset = import_dataset(factory, app_instance, read_table(demo_table_path()), "tie")
    for name, value in (("t1", 1), ("t2", 0)):
        voter = create_user(factory, name, "correct horse battery", "annotator")
        cast_vote(factory, voter.id, next_item(factory, dataset.id, voter.id).item_id, value)
    at = review(app_instance, "Review queue", "tie")
    assert next(r for r in at.radio if r.label == "Gold label").value is None
    at.text_input[0].input("one says yes, one says no")
    button(at, "Save gold label").click().run()
    assert any("Pick the gold label first" in e.value for e in at.error)
    with factory() as session:
        assert session.scalars(select(GoldLabel)).first() is None


def test_a_comment_on_a_queue_item_is_kept_and_shown(app_instance) -> None:  # noqa: ANN001
    voted_dataset(app_instance)
    at = review(app_instance, "Review queue")
    at.text_area[0].input("Is the man on the left the minister?")
    button(at, "Add comment").click().run()
    assert not at.exception
    assert any("rita" in t.value and "Is the man on the left the minister?" in t.value for t in at.text)
    with sessions(app_instance)() as session:
        assert session.scalars(select(ItemComment.body)).one() == "Is the man on the left the minister?"


def test_settings_show_the_real_default_threshold_and_the_built_in_guidelines(app_instance) -> None:  # noqa: ANN001
    dataset_id = voted_dataset(app_instance)
    factory = sessions(app_instance)
    with factory() as session:
        from annotations.models import Item

        items = session.scalars(select(Item.id).where(Item.dataset_id == dataset_id).order_by(Item.position)).all()
    store_score_set(factory, dataset_id, "clip-x", "fp", "title", {i: (0.1 * n, False) for n, i in enumerate(items[:5])})
    at = review(app_instance, "Settings")
    assert at.text_area(key=f"guidelines-{dataset_id}").value == DEFAULT_GUIDELINES
    at.selectbox(key=f"order-{dataset_id}").set_value(1).run()
    threshold = at.number_input(key=f"threshold-{dataset_id}-1")
    assert threshold.value == 0.2 and "median: 0.200" in threshold.label  # not 0.000
    button(at, "Save settings").click().run()
    with factory() as session:
        saved = session.get(Dataset, dataset_id)
        assert (saved.uncertainty_score_set_id, saved.uncertainty_threshold, saved.guidelines) == (1, 0.2, "")


def test_team_tab_assigns_annotators_and_shows_who_holds_what(app_instance) -> None:  # noqa: ANN001
    dataset_id = voted_dataset(app_instance)
    factory = sessions(app_instance)
    late = create_user(factory, "late", "correct horse battery", "annotator")
    next_item(factory, dataset_id, late.id)
    at = review(app_instance, "Team")
    holds = at.dataframe[0].value
    assert holds["annotator"].tolist() == ["late"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Labels in the last hour"] == "12" and metrics["Labels still needed"] == str(26 * 3 - 12)
    at.multiselect(key=f"assigned_{dataset_id}").set_value(["votes0", "votes1"]).run()
    button(at, "Save assignment").click().run()
    assert not at.exception
    with factory() as session:
        assert session.scalars(select(Lease)).first() is None  # late is not assigned: the item went back
    assert at.multiselect(key=f"assigned_{dataset_id}").value == ["votes0", "votes1"]


def test_control_items_from_imported_labels_and_accuracy(app_instance, tmp_path: Path) -> None:  # noqa: ANN001
    dataset_id = voted_dataset(app_instance)
    at = review(app_instance, "Control items")
    button(at, "Use the gold labels settled in the Review queue").click().run()
    assert any("settle some items in the Review queue first" in e.value for e in at.error)
    button(at, "Use the imported file's label column").click().run()
    assert not at.exception
    with sessions(app_instance)() as session:
        n_control = len(session.scalars(select(ControlItem.item_id).where(ControlItem.dataset_id == dataset_id)).all())
    assert n_control > 0
    accuracy = at.dataframe[0].value
    assert sorted(accuracy["annotator_id"]) == ["votes0", "votes1", "votes2"]  # their earlier votes on those items
    assert accuracy["n_control"].between(1, 4).all()


def test_export_offers_the_images_and_the_zip_holds_them(app_instance) -> None:  # noqa: ANN001
    dataset_id = voted_dataset(app_instance)
    at = review(app_instance, "Export")
    assert not at.exception
    assert "Download images and labels (ZIP)" in [b.label for b in at.get("download_button")]
    with sessions(app_instance)() as session:
        data = export_archive(session, dataset_id, app_instance)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        table = pd.read_csv(archive.open("labels.csv"))
    assert len(table) == 26 and {"label", "label_votes0"} <= set(table.columns)
    assert sorted(n for n in names if n.startswith("images/")) == sorted(set(table["image"]))  # shared images once
    assert not list(app_instance.cache_dir.glob("export-*"))  # the scratch folder is gone
