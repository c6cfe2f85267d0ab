"""The way into the app in a real headless Chromium: a cold server's first request (no module name at any
moment, the page asked for within seconds), a fresh instance made by whatever page is opened first, a link
followed through signing in, a page of another role, and signing out.

``watch_first_paint`` samples the page from the first paint to the first useful content; the time it took is
printed (``-s`` shows it) and recorded in docs/benchmarks.md, never asserted beyond a generous bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy.orm import Session, sessionmaker

from annotations.users import create_user, start_session

if TYPE_CHECKING:
    from tests.e2e.conftest import StreamlitServer

pytestmark = pytest.mark.e2e

PASSWORD = "a long test password"
REPO = Path(__file__).resolve().parents[2]
MODULE_NAMES = {"app", *(p.stem for p in (REPO / "pages").glob("*.py")), *(p.stem for p in (REPO / "studio").glob("*.py"))}
SANITY_S = 120.0  # far above any healthy start on a loaded machine; not a measure

SAMPLE = """() => {
  const side = document.querySelector('[data-testid=stSidebar]');
  const links = side ? [...side.querySelectorAll('a')].map(a => a.innerText.trim()) : [];
  const heading = document.querySelector('[data-testid=stMain] h1');
  return {legacyNav: !!document.querySelector('[data-testid=stSidebarNav]'), links,
          text: document.body ? document.body.innerText : '', heading: heading ? heading.innerText.trim() : ''};
}"""


@pytest.fixture
def e2e_setup(e2e_db: sessionmaker[Session]) -> None:
    create_user(e2e_db, "rita", PASSWORD, "researcher")
    create_user(e2e_db, "ann", PASSWORD, "annotator")


def sign_in_cookie(page: Page, base_url: str, token: str) -> None:
    """The cookie the app sets after a sign-in (``studio.auth``), as a browser that signed in earlier holds it."""
    page.context.add_cookies([{"name": "cftclip_session", "value": token, "url": base_url}])


def watch_first_paint(page: Page, url: str, heading: str) -> tuple[float, list[dict]]:
    """Open ``url`` and sample the page until its main heading is ``heading``: (seconds, samples)."""
    samples: list[dict] = []
    started = time.monotonic()
    page.goto(url, wait_until="commit")
    while True:
        try:
            sample = page.evaluate(SAMPLE)
        except Exception:  # noqa: BLE001 - the document is being replaced between two samples
            continue
        samples.append(sample)
        if sample["heading"] == heading:
            return time.monotonic() - started, samples
        assert time.monotonic() - started < SANITY_S, f"'{heading}' never came; last sample: {sample}"
        time.sleep(0.02)


def assert_no_module_name(samples: list[dict]) -> None:
    """No sample showed Streamlit's list of ``pages/`` nor a link named like a module (they are lower-case; the
    app's own links are page titles)."""
    for sample in samples:
        assert not sample["legacyNav"], "Streamlit's own list of pages/ was shown"
        assert not MODULE_NAMES & set(sample["links"]), sample["links"]
        assert "import_data" not in sample["text"] and "results_view" not in sample["text"]


def test_a_deep_link_as_a_cold_servers_first_request_shows_the_page_and_no_module_name(
        start_streamlit: Callable[..., StreamlitServer], e2e_db: sessionmaker[Session], page: Page) -> None:
    server = start_streamlit()
    sign_in_cookie(page, server.base_url, start_session(e2e_db, 1))  # rita's, as a browser that signed in before
    seconds, samples = watch_first_paint(page, f"{server.base_url}/train", "Train")
    assert_no_module_name(samples)
    print(f"\ncold start, first request /train: {seconds:.2f} s to the Train page, {len(samples)} samples")
    expect(page.get_by_test_id("stSidebar").get_by_role("link", name="Seeds")).to_be_visible()
    assert page.url.startswith(f"{server.base_url}/train")
    seconds, samples = watch_first_paint(page, f"{server.base_url}/seeds", "Seeds")  # warm
    print(f"warm server, /seeds: {seconds:.2f} s")
    assert_no_module_name(samples)


def test_a_fresh_instance_is_made_by_the_first_request_whatever_page_it_asks_for(
        start_streamlit: Callable[..., StreamlitServer], page: Page, tmp_path: Path) -> None:
    fresh = tmp_path / "fresh-instance"
    server = start_streamlit(instance=fresh)
    seconds, samples = watch_first_paint(page, f"{server.base_url}/thresholds", "Welcome to CFT-CLIP Studio")
    assert_no_module_name(samples)
    print(f"\ncold start on a fresh instance (database, demo import): {seconds:.2f} s to the setup page")
    assert (fresh / "studio.db").is_file() and any((fresh / "media").iterdir())


def test_a_link_opened_before_signing_in_is_followed_once_signed_in(streamlit_server: str, page: Page) -> None:
    page.goto(f"{streamlit_server}/seeds")
    expect(page.get_by_role("heading", name="Sign in to CFT-CLIP Studio")).to_be_visible()
    page.get_by_label("Username").fill("rita")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Seeds", exact=True)).to_be_visible()
    assert "/seeds" in page.url


def test_an_annotator_opening_the_train_page_is_told_whom_it_is_for(
        streamlit_server: str, page: Page, sign_in: Callable[[Page, str, str, str], None]) -> None:
    sign_in(page, streamlit_server, "ann", PASSWORD)
    expect(page.get_by_role("heading", name="Annotate", exact=True)).to_be_visible()
    page.goto(f"{streamlit_server}/train")
    expect(page.get_by_text("This page is for researchers and admins; you are signed in as an annotator.")
           ).to_be_visible()
    expect(page.get_by_text("Page not found")).to_have_count(0)
    page.get_by_role("link", name="Go to your first page").click()
    expect(page.get_by_role("heading", name="Annotate", exact=True)).to_be_visible()
    expect(page.get_by_test_id("stSidebar").get_by_role("link")).to_have_count(2)  # Annotate and My account


def test_signing_out_returns_to_the_sign_in_page(
        streamlit_server: str, page: Page, sign_in: Callable[[Page, str, str, str], None]) -> None:
    sign_in(page, streamlit_server, "rita", PASSWORD)
    page.get_by_test_id("stSidebar").get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to CFT-CLIP Studio")).to_be_visible()
    page.reload()  # the sign-in cookie is gone too
    expect(page.get_by_role("heading", name="Sign in to CFT-CLIP Studio")).to_be_visible()
