"""Every page and role through Streamlit's AppTest: sign-in, setup, annotate, review, import, users."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select

from annotations.labeling import release_leases
from annotations.models import Lease, User
from cftclip_core.demo import demo_table_path
from tests.conftest import app_test, make_image, sessions

ANNOTATOR = ("ann", "annotator")
RESEARCHER = ("rita", "researcher")
ADMIN = ("ada", "admin")




def reopened(settings, at):  # noqa: ANN001, ANN201
    """The app as the same browser tab sees it on its next visit (AppTest does not follow the
    navigation change that signing in causes, so the new page list is checked on a fresh run)."""
    fresh = app_test(settings)
    fresh.session_state["session"] = at.session_state["session"]
    return fresh.run()


def click(at, label: str):  # noqa: ANN001, ANN201
    return next(b for b in at.button if b.label == label).click().run()


def test_first_run_setup_creates_the_admin_and_signs_in(app_instance) -> None:  # noqa: ANN001
    at = app_test(app_instance).run()
    assert any("No account exists yet" in m.value for m in at.markdown)
    at.text_input[0].input("boss")
    at.text_input[2].input("a long password")
    at.text_input[3].input("a long password")
    at.button[0].click().run()
    assert not at.exception
    assert reopened(app_instance, at).title[0].value == "Articles"  # signed in as the new admin
    at = app_test(app_instance).run()  # setup is offered only while no user exists
    assert at.title[0].value == "Sign in to CFT-CLIP Studio"


def test_sign_in_same_message_for_unknown_user_and_wrong_password(app_instance) -> None:  # noqa: ANN001
    app_test(app_instance, user=ANNOTATOR)  # creates the account
    messages = []
    for username, password in (("ann", "wrong password"), ("nobody", "wrong password")):
        at = app_test(app_instance).run()
        at.text_input[0].input(username)
        at.text_input[1].input(password)
        at.button[0].click().run()
        messages.append([e.value for e in at.error])
    assert messages[0] == messages[1] and messages[0]
    at = app_test(app_instance).run()
    at.text_input[0].input("ann")
    at.text_input[1].input("correct horse battery")
    at.button[0].click().run()
    assert reopened(app_instance, at).title[0].value == "Annotate"


def test_annotator_sees_only_annotate_and_is_refused_elsewhere(app_instance) -> None:  # noqa: ANN001
    at = app_test(app_instance, user=ANNOTATOR).run()
    assert at.title[0].value == "Annotate"
    for page in ("pages/review.py", "pages/home.py", "pages/import_data.py", "pages/users.py"):
        at = app_test(app_instance, page, user=ANNOTATOR).run()
        assert any("you are signed in as an annotator" in e.value for e in at.error), page
        assert not at.dataframe and not at.button


def test_researcher_is_refused_the_users_page(app_instance) -> None:  # noqa: ANN001
    at = app_test(app_instance, "pages/users.py", user=RESEARCHER).run()
    assert any("signed in as a researcher" in e.value for e in at.error)


def test_leaving_annotate_gives_the_held_item_back(app_instance) -> None:  # noqa: ANN001
    factory = sessions(app_instance)

    def leases() -> int:
        with factory() as session:
            return session.scalar(select(func.count()).select_from(Lease))

    at = app_test(app_instance, user=RESEARCHER).run()  # Articles: nothing held
    assert leases() == 0
    at.switch_page("pages/annotate.py").run()
    assert not at.exception and leases() == 1  # the card on screen is leased to the researcher
    at.switch_page("pages/review.py").run()
    assert leases() == 0  # gone on to Review: the item is free for annotators at once
    at.switch_page("pages/annotate.py").run()
    assert leases() == 1
    with factory() as session:  # signing out calls the same release
        user_id = session.scalar(select(User.id).where(User.username == RESEARCHER[0]))
    assert release_leases(factory, user_id) == 1 and leases() == 0


def test_import_page_previews_problems_and_writes_nothing(app_instance, tmp_path: Path,  # noqa: ANN001
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    make_image(tmp_path / "a.jpg")
    (tmp_path / "broken.jpg").write_text("not an image")
    pd.DataFrame([{"id": "1", "image": "a.jpg", "title": "t", "summary": "s", "label": 3},
                  {"id": "1", "image": "a.jpg", "title": "t", "summary": "", "label": 1}]).to_csv(tmp_path / "bad.csv",
                                                                                               index=False)
    monkeypatch.setenv("CFTCLIP_IMPORT_ROOTS", str(tmp_path))
    at = app_test(app_instance, "pages/import_data.py", user=ADMIN).run()
    at.radio[0].set_value("A file on this server").run()
    at.text_input[0].input(str(tmp_path / "bad.csv"))
    at.text_input[1].input("bad").run()
    assert any("Nothing was imported" in e.value for e in at.error)  # no row is usable: every problem at once
    assert "'3' is not 0 or 1" in at.code[0].value and "duplicate id" in at.code[0].value

    pd.DataFrame([{"id": "1", "image": "broken.jpg", "title": "t", "summary": "s"},
                  {"id": "2", "image": "a.jpg", "title": "t", "summary": "s"},
                  {"id": "3", "image": "a.jpg", "title": "t", "summary": "s", "label": "yes"}]).to_csv(tmp_path / "img.csv",
                                                                                                     index=False)
    at.text_input[0].input(str(tmp_path / "img.csv")).run()
    assert at.dataframe[0].value["id"].tolist() == ["1", "2"]  # preview before writing
    assert any("2 problem(s) in 2 row(s)" in w.value for w in at.warning)
    problems = at.dataframe[1].value  # one table of every problem, by row: the image's and the label's
    assert problems["row"].tolist() == [1, 3] and problems["column"].tolist() == ["image", "label"]
    assert "broken.jpg" in problems["problem"][0]
    click(at, "Import")
    assert any("Nothing was imported" in e.value for e in at.error) and "broken.jpg" in at.code[0].value
    assert "('Skip bad rows' above)" in at.code[0].value  # the page's box, not the command line's flag
    at.checkbox[0].check().run()  # skip bad rows
    click(at, "Import")
    assert any("Imported 1 items as 'bad' (2 bad row(s) left out)" in s.value for s in at.success)


def test_admin_adds_a_user_without_seeing_passwords(app_instance) -> None:  # noqa: ANN001
    at = app_test(app_instance, "pages/users.py", user=ADMIN).run()
    at.text_input[0].input("newbie")
    at.text_input[2].input("another long password")
    next(b for b in at.button if b.label == "Add user").click().run()
    assert not at.exception
    table = at.dataframe[0].value
    assert "newbie" in table["username"].tolist()
    assert not any("$argon2" in str(v) for v in table.to_numpy().ravel())


def test_a_refused_new_user_keeps_what_the_admin_typed(app_instance) -> None:  # noqa: ANN001
    at = app_test(app_instance, "pages/users.py", user=ADMIN).run()
    at.text_input(key="add_username").input("Carl Smith")
    at.text_input(key="add_display_name").input("Carl")
    at.text_input(key="add_password").input("another long password")
    next(b for b in at.button if b.label == "Add user").click().run()
    assert at.error and at.text_input(key="add_display_name").value == "Carl"  # nothing to retype but the name
    at.text_input(key="add_username").input("carl")
    next(b for b in at.button if b.label == "Add user").click().run()
    assert [s.value for s in at.success] == ["Added carl\\."]  # (escaped Markdown)
    assert at.text_input(key="add_username").value == "" and at.text_input(key="add_password").value == ""


@pytest.mark.parametrize("page", ["pages/annotate.py", "pages/review.py", "pages/home.py", "pages/import_data.py",
                                  "pages/users.py"])
def test_every_page_refuses_visitors_who_are_not_signed_in(app_instance, page: str) -> None:  # noqa: ANN001
    at = app_test(app_instance, page).run()
    assert any("Please sign in first" in e.value for e in at.error)


def test_export_has_every_annotators_label_and_how_gold_was_decided(app_instance, tmp_path: Path) -> None:  # noqa: ANN001
    from annotations import cli
    from annotations.importer import import_dataset
    from annotations.labeling import cast_vote, next_item
    from annotations.review import set_gold
    from annotations.users import create_user
    from cftclip_core.formats import read_table

    factory = sessions(app_instance)
    dataset = import_dataset(factory, app_instance, read_table(demo_table_path()), "exp")
    a, b = (create_user(factory, name, "correct horse battery", "annotator") for name in ("amy", "bob"))
    first = next_item(factory, dataset.id, a.id)
    cast_vote(factory, a.id, first.item_id, 1)
    assert next_item(factory, dataset.id, b.id).item_id == first.item_id
    cast_vote(factory, b.id, first.item_id, 0)
    set_gold(factory, first.item_id, 1, "the astronaut is named in the text", a.id)
    assert cli.main(["export", "exp", str(tmp_path / "out" / "labels.csv")]) == 0
    table = pd.read_csv(tmp_path / "out" / "labels.csv")
    row = table[table["id"] == first.external_id].iloc[0]
    assert (row["label"], row["label_amy"], row["label_bob"], row["gold_method"]) == (1, 1, 0, "adjudicated")
    assert row["gold_reason"] == "the astronaut is named in the text"
    assert (tmp_path / "out" / row["image"]).is_file()
    assert cli.main(["export", "nope", str(tmp_path / "x.csv")]) == 2


def test_change_a_user_starts_from_their_role_and_state_and_confirms_a_promotion(app_instance) -> None:  # noqa: ANN001
    from annotations.users import create_user

    factory = sessions(app_instance)
    create_user(factory, "zoe", "correct horse battery", "annotator")
    at = app_test(app_instance, "pages/users.py", user=ADMIN).run()
    at.selectbox(key="change_user").set_value("zoe").run()
    assert at.selectbox(key="role-zoe").value == "annotator"  # not "admin": one click no longer promotes
    assert next(b for b in at.button if b.label == "Set role").disabled  # nothing to change yet
    labels = [b.label for b in at.button]
    assert "Deactivate" in labels and "Activate" not in labels  # only what fits an active user

    at.selectbox(key="role-zoe").set_value("admin").run()
    next(b for b in at.button if b.label == "Set role").click().run()
    assert any("Tick the box above to confirm" in e.value for e in at.error)
    with factory() as session:
        assert session.scalar(select(User.role).where(User.username == "zoe")) == "annotator"
    at.checkbox(key="promote-zoe").check().run()
    next(b for b in at.button if b.label == "Set role").click().run()
    with factory() as session:
        assert session.scalar(select(User.role).where(User.username == "zoe")) == "admin"

    at.selectbox(key="change_user").set_value("zoe").run()
    next(b for b in at.button if b.label == "Deactivate").click().run()
    at.selectbox(key="change_user").set_value("zoe").run()
    assert [b.label for b in at.button if b.label in ("Activate", "Deactivate")] == ["Activate"]
