"""Fixtures for end-to-end tests in a real headless Chromium, driven through Playwright.

``streamlit_server``: the app served on a free loopback port from a fresh instance folder (its base URL).
``e2e_instance``: that instance folder, for tests that look at what the app wrote.
``page``: a Playwright page in a fresh browser context (60 s timeouts; a screenshot is kept on failure).
``screenshot``: ``screenshot(page, "name")`` saves a full-page PNG under ``$CFTCLIP_E2E_SCREENSHOTS``
(default: the test's tmp folder) and returns its path.
Every test in this folder is skipped when Debian's Chromium or the playwright package is missing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # imported lazily at run time, so a missing playwright skips instead of failing
    from playwright.sync_api import Browser, Page

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
    """The (not yet created) instance folder the server will use."""
    return tmp_path / "instance"


@pytest.fixture
def streamlit_server(e2e_instance: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """``streamlit run app.py`` as a subprocess; yields its base URL once /_stcore/health answers."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "CFTCLIP_DATABASE_URL"}
    env.update(CFTCLIP_INSTANCE=str(e2e_instance), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    log_path = tmp_path / "streamlit.log"
    command = [
        sys.executable, "-m", "streamlit", "run", "app.py",
        "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
        "--browser.gatherUsageStats", "false",
        # The default watcher would also watch .venv under the repo: slow, and it floods the log.
        "--server.fileWatcherType", "none",
    ]
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"streamlit exited with code {process.returncode} before answering:\n{_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{base_url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"streamlit did not answer {base_url}/_stcore/health within {SERVER_START_S:.0f} s:\n"
                            f"{_tail(log_path)}")
            time.sleep(0.2)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if _failed(request):
            print(f"--- streamlit log ({log_path}) ---\n{_tail(log_path)}")


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
def page(
    browser: Browser, screenshot: Callable[[Page, str], Path], request: pytest.FixtureRequest
) -> Iterator[Page]:
    """A fresh page (own cookies and storage) at a desktop size; Playwright's ``expect`` waits 60 s."""
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    new_page = context.new_page()
    yield new_page
    if _failed(request):
        print(f"screenshot at failure: {screenshot(new_page, f'{request.node.name}-failure')}")
    context.close()
