"""Signing in, staying signed in and signing out in a real headless Chromium.

The sign-in token lives in a SameSite=Strict cookie, never in the page address: a refresh or a new tab
stays signed in, a link carrying someone's token signs nobody in (neither a signed-in browser nor a
fresh one), and signing out clears the cookie and ends the session for good.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy.orm import Session, sessionmaker

from annotations.users import create_user, user_for_session

pytestmark = pytest.mark.e2e

PASSWORD = "a long test password"
COOKIE = "cftclip_session"


@pytest.fixture
def e2e_setup(e2e_db: sessionmaker[Session]) -> None:
    create_user(e2e_db, "alice", PASSWORD, "annotator")
    create_user(e2e_db, "mallory", PASSWORD, "researcher")


def signed_in_as(page: Page, username: str) -> None:
    expect(page.get_by_test_id("stSidebar").get_by_text(f"Signed in as {username}")).to_be_visible()


def session_cookie(page: Page) -> dict | None:
    return next((c for c in page.context.cookies() if c["name"] == COOKIE), None)


def test_the_cookie_keeps_one_signed_in_and_a_link_never_signs_anyone_in(
    streamlit_server: str, new_page: Callable[[], Page], e2e_db: sessionmaker[Session],
    sign_in: Callable[[Page, str, str, str], None],
) -> None:
    alice = new_page()
    sign_in(alice, streamlit_server, "alice", PASSWORD)
    alice.wait_for_function(f"document.cookie.includes('{COOKIE}=')")
    cookie = session_cookie(alice)
    assert cookie is not None and cookie["sameSite"] == "Strict" and cookie["path"] == "/" and cookie["expires"] > 0
    assert user_for_session(e2e_db, cookie["value"]).username == "alice"
    assert "session" not in parse_qs(urlsplit(alice.url).query)  # no token in the address

    alice.reload()
    signed_in_as(alice, "alice")
    second_tab = alice.context.new_page()
    second_tab.goto(streamlit_server)
    signed_in_as(second_tab, "alice")
    second_tab.close()

    mallory = new_page()  # another browser, another person
    sign_in(mallory, streamlit_server, "mallory", PASSWORD)
    mallory.wait_for_function(f"document.cookie.includes('{COOKIE}=')")
    bait = f"{streamlit_server}/?session={session_cookie(mallory)['value']}"
    alice.goto(bait)  # alice follows mallory's link
    signed_in_as(alice, "alice")
    expect(alice.get_by_test_id("stSidebar").get_by_text("Signed in as mallory")).to_have_count(0)
    alice.wait_for_function("!location.search.includes('session=')")  # the token is dropped from the address
    stranger = new_page()  # a browser signed in as nobody is not signed in by the link either
    stranger.goto(bait)
    expect(stranger.get_by_role("heading", name="Sign in to CFT-CLIP Studio")).to_be_visible()

    alice.get_by_role("button", name="Sign out").click()
    expect(alice.get_by_role("heading", name="Sign in to CFT-CLIP Studio")).to_be_visible()
    alice.wait_for_function(f"!document.cookie.includes('{COOKIE}=')")
    assert user_for_session(e2e_db, cookie["value"]) is None  # the old token is dead, wherever it was copied
    alice.reload()
    expect(alice.get_by_role("heading", name="Sign in to CFT-CLIP Studio")).to_be_visible()
    expect(alice.get_by_test_id("stException")).to_have_count(0)
