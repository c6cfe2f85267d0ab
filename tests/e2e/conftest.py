"""Fixtures for end-to-end tests in a real headless Chromium, driven through Playwright.

``streamlit_server``: the app served on a free loopback port from a fresh instance folder (its base URL).
``start_streamlit``: ``start_streamlit(port=None)`` starts (another) server on that instance folder and
returns a ``StreamlitServer``; every server a test started is stopped at teardown.
``e2e_instance``: that instance folder, for tests that look at what the app wrote.
``e2e_setup``: what must be in the instance before the server starts; nothing by default. A test
module overrides it (e.g. with users, made with ``e2e_db``) to start the app on a prepared instance.
``e2e_db``: a session factory on the instance's database, schema upgraded (prepare and check data).
``page``: a Playwright page in a fresh browser context (60 s timeouts; a screenshot is kept on failure).
``new_page``: ``new_page()`` opens one more page in its own context (own cookies: another user).
``sign_in``: ``sign_in(page, base_url, username, password)`` signs in through the login page (and waits
until the browser holds the sign-in cookie).
``screenshot``: ``screenshot(page, "name")`` saves a full-page PNG under ``$CFTCLIP_E2E_SCREENSHOTS``
(default: the test's tmp folder) and returns its path.
Every test in this folder is skipped when Debian's Chromium or the playwright package is missing.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # imported lazily at run time, so a missing playwright skips instead of failing
    from playwright.sync_api import Browser, Page
    from sqlalchemy.orm import Session, sessionmaker

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TIMEOUT_MS = 60_000
SERVER_START_S = 60.0
SCREENSHOTS_ENV = "CFTCLIP_E2E_SCREENSHOTS"


def _missing_browser() -> str | None:
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium) to run browser tests"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is missing: .venv/bin/pip install -r requirements.txt"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _missing_browser()
    if reason is None:
        return
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the test item, so fixtures can tell at teardown whether it failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "report_call", None)
    return report is None or report.failed


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def e2e_instance(tmp_path: Path) -> Path:
    """The instance folder the server will use (not created unless a fixture prepares it)."""
    return tmp_path / "instance"


@pytest.fixture
def e2e_setup() -> None:
    """Override in a test module to prepare the instance before ``streamlit_server`` starts."""


@pytest.fixture
def e2e_db(e2e_instance: Path) -> Iterator[sessionmaker[Session]]:
    """Sessions on the instance's SQLite database, created and upgraded to the current schema."""
    from annotations.db import make_engine, session_factory, upgrade
    from annotations.settings import Settings

    settings = Settings.for_instance(e2e_instance).ensure()
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    yield session_factory(engine)
    engine.dispose()


@dataclass
class StreamlitServer:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to finish anything (a crash, a power cut of the process)."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _wait_until_healthy(server: StreamlitServer) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while True:
        if server.process.poll() is not None:
            pytest.fail(f"streamlit exited with code {server.process.returncode} before answering:\n"
                        f"{_tail(server.log_path)}")
        try:
            with urllib.request.urlopen(f"{server.base_url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"streamlit did not answer {server.base_url}/_stcore/health within {SERVER_START_S:.0f} s:\n"
                        f"{_tail(server.log_path)}")
        time.sleep(0.1)


@pytest.fixture
def start_streamlit(
    e2e_instance: Path, e2e_setup: None, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., StreamlitServer]]:
    """``start_streamlit(port=None)``: ``streamlit run app.py`` as a subprocess on the instance folder,
    returned once /_stcore/health answers. Pass an earlier server's port to restart "the same" server."""
    env = {k: v for k, v in os.environ.items() if k != "CFTCLIP_DATABASE_URL"}
    env.update(CFTCLIP_INSTANCE=str(e2e_instance), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    servers: list[StreamlitServer] = []

    def start(port: int | None = None) -> StreamlitServer:
        port = port or _free_port()
        command = [
            sys.executable, "-m", "streamlit", "run", "app.py",
            "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
            "--browser.gatherUsageStats", "false",
            # The default watcher would also watch .venv under the repo: slow, and it floods the log.
            "--server.fileWatcherType", "none",
        ]
        log_path = tmp_path / f"streamlit-{len(servers) + 1}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        server = StreamlitServer(process, port, log_path)
        servers.append(server)
        _wait_until_healthy(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
        if _failed(request):
            for server in servers:
                print(f"--- streamlit log ({server.log_path}) ---\n{_tail(server.log_path)}")


@pytest.fixture
def streamlit_server(start_streamlit: Callable[..., StreamlitServer]) -> str:
    """The base URL of the app, served from the (prepared) instance folder."""
    return start_streamlit().base_url


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def screenshot(tmp_path: Path) -> Callable[[Page, str], Path]:
    folder = Path(os.environ.get(SCREENSHOTS_ENV) or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)

    def save(page: Page, name: str) -> Path:
        # Streamlit scrolls inside its main area, not the document, so full_page alone stops at the
        # window's bottom: grow the window to the app's height for the shot, then restore it.
        path = folder / f"{name}.png"
        size = page.viewport_size
        height = page.evaluate(
            "() => Math.max(...[...document.querySelectorAll('[data-testid=stMain], body')].map(e => e.scrollHeight))"
        )
        if size and height > size["height"]:
            page.set_viewport_size({"width": size["width"], "height": height})
        try:
            page.screenshot(path=str(path), full_page=True)
        finally:
            if size:
                page.set_viewport_size(size)
        return path

    return save


@pytest.fixture
def new_page(
    browser: Browser, screenshot: Callable[[Page, str], Path], request: pytest.FixtureRequest
) -> Iterator[Callable[[], Page]]:
    """``new_page()``: a fresh page (own cookies and storage) at a desktop size; Playwright's ``expect``
    waits 60 s. Every page gets a screenshot if the test fails."""
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    pages: list[Page] = []

    def open_page() -> Page:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(TIMEOUT_MS)
        pages.append(context.new_page())
        return pages[-1]

    yield open_page
    for number, opened in enumerate(pages, start=1):
        if _failed(request):
            suffix = "" if len(pages) == 1 else f"-{number}"
            print(f"screenshot at failure: {screenshot(opened, f'{request.node.name}-failure{suffix}')}")
        opened.context.close()


@pytest.fixture
def page(new_page: Callable[[], Page]) -> Page:
    return new_page()


@pytest.fixture
def sign_in() -> Callable[[Page, str, str, str], None]:
    """``sign_in(page, base_url, username, password)``: through the login page, like a person; returns
    once the sidebar says who is signed in."""
    from playwright.sync_api import expect

    def sign_in_as(page: Page, base_url: str, username: str, password: str) -> None:
        page.goto(base_url)
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password", exact=True).fill(password)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_test_id("stSidebar").get_by_text(f"Signed in as {username}")).to_be_visible()
        page.wait_for_function("document.cookie.includes('cftclip_session=')")  # a reload now stays signed in

    return sign_in_as
