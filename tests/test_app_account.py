"""My account: changing one's own password; and the public pages show no admin commands."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from annotations.models import LoginSession
from annotations.users import authenticate, start_session, user_for_session
from tests.conftest import app_test, sessions

ANNOTATOR = ("ann", "annotator")
OLD = "correct horse battery"  # what tests.conftest.app_test gives new accounts



def change(at, current: str, new: str, repeat: str | None = None):  # noqa: ANN001, ANN201
    at.text_input(key="pw_current").input(current)
    at.text_input(key="pw_new").input(new)
    at.text_input(key="pw_repeat").input(new if repeat is None else repeat)
    return next(b for b in at.button if b.label == "Change password").click().run()


@pytest.mark.parametrize("role", ["annotator", "researcher", "admin"])
def test_every_role_has_my_account(app_instance, role: str) -> None:  # noqa: ANN001
    at = app_test(app_instance, user=("someone", role)).run()
    assert not at.exception
    at = app_test(app_instance, "pages/account.py", user=("someone", role)).run()
    assert at.title[0].value == "My account" and not at.exception


def test_an_annotator_changes_their_password_and_stays_signed_in_here_only(app_instance) -> None:  # noqa: ANN001
    factory = sessions(app_instance)
    at = app_test(app_instance, "pages/account.py", user=ANNOTATOR)
    at.run()
    mine = at.session_state["session"]
    with factory() as session:
        user_id = session.scalar(select(LoginSession.user_id))
    elsewhere = start_session(factory, user_id)  # another browser, signed in as the same person

    change(at, "wrong password", "a brand new password")
    assert "current password is not right" in at.error[0].value
    change(at, OLD, "a brand new password", repeat="a brand new passwort")
    assert "two new passwords differ" in at.error[0].value
    change(at, OLD, "short")
    assert "too short" in at.error[0].value
    change(at, OLD, "a brand new password")
    assert not at.exception and "Password changed" in at.success[0].value
    assert at.text_input(key="pw_current").value == ""  # nothing typed stays on screen
    assert authenticate(factory, "ann", "a brand new password").username == "ann"
    with pytest.raises(Exception, match="Wrong username or password"):
        authenticate(factory, "ann", OLD)
    assert user_for_session(factory, mine) is not None and user_for_session(factory, elsewhere) is None
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(LoginSession)) == 1  # this tab's


def test_guessing_the_current_password_is_slowed_down_like_sign_in(app_instance) -> None:  # noqa: ANN001
    at = app_test(app_instance, "pages/account.py", user=ANNOTATOR).run()
    for _ in range(5):
        change(at, "a wrong guess", "a brand new password")
    change(at, OLD, "a brand new password")  # even the right one waits now
    assert at.error[0].value.replace("\\", "").startswith("Too many failed sign-ins")


def test_the_sign_in_page_shows_no_admin_commands(app_instance) -> None:  # noqa: ANN001
    app_test(app_instance, user=ANNOTATOR)  # someone exists: the sign-in page, not the first-run setup
    at = app_test(app_instance).run()
    assert at.title[0].value == "Sign in to CFT-CLIP Studio"
    shown = " ".join(e.value for e in [*at.markdown, *at.caption])
    assert "python -m" not in shown and "--role" not in shown and "Ask an administrator" in shown


def test_a_token_in_the_page_address_is_not_adopted(app_instance) -> None:  # noqa: ANN001
    signed_in = app_test(app_instance, user=ANNOTATOR)
    token = signed_in.session_state["session"]
    at = app_test(app_instance)
    at.query_params["session"] = token  # a link carrying someone's session
    at.run()
    assert at.title[0].value == "Sign in to CFT-CLIP Studio" and "session" not in at.query_params
