"""Cold start of the app in a real headless Chromium, against a one-page Streamlit app served the same way.

For each round a new server process is started (``streamlit run``), and as soon as it answers its health
check the browser opens one address and waits for the page's heading; the time is from ``goto`` to the
heading (first useful paint), sampled every 20 ms, and every sample is checked for Streamlit's list of
``pages/`` (module names). Measured:

    baseline:     a script holding only ``st.title`` (what Streamlit itself costs on this machine)
    imports:      the same after importing every module that ``app.py``, ``studio`` and the pages import
                  (a superset of what any one page needs): what the imports cost on this machine
    ours /train:  ``app.py`` on a prepared instance (database, demo dataset, a researcher whose sign-in
                  cookie the browser holds), first request a link to the Train page (Streamlit's folder
                  mode: the guard's route)
    ours /login:  the same without the cookie, first request the root (the sign-in page)

    python benchmarks/bench_cold_start.py [--rounds 3]

Prints JSON: median seconds per case, the ratios to the baseline, each page's time after the imports
(its median minus the imports case's), and whether a module name ever showed.
Needs Debian's /usr/bin/chromium and the playwright package.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

from annotations.db import make_engine, session_factory, upgrade
from annotations.importer import ensure_demo_dataset
from annotations.settings import Settings
from annotations.users import create_user, start_session

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
SAMPLE = """() => {
  const h = document.querySelector('[data-testid=stMain] h1');
  return {nav: !!document.querySelector('[data-testid=stSidebarNav]'), heading: h ? h.innerText.trim() : ''};
}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(script: str, cwd: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "streamlit", "run", script, "--server.headless", "true",
                                "--server.port", str(port), "--server.address", "127.0.0.1",
                                "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
                               cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2):
                return process, base
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise SystemExit(f"{script} did not start") from None
            time.sleep(0.05)


def app_imports() -> list[str]:
    """Every module imported at the top of ``app.py``, the ``studio`` modules and the pages."""
    names = {f"studio.{path.stem}" for path in (ROOT / "studio").glob("*.py") if path.stem != "__init__"}
    for script in [ROOT / "app.py", *(ROOT / "pages").glob("*.py"), *(ROOT / "studio").rglob("*.py")]:
        for node in ast.parse(script.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
    return sorted(names)


def first_paint(browser, base: str, path: str, heading: str, token: str) -> tuple[float, bool]:  # noqa: ANN001
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    if token:  # a browser that signed in earlier holds the app's sign-in cookie
        context.add_cookies([{"name": "cftclip_session", "value": token, "url": base}])
    url = base + path
    page = context.new_page()
    started = time.monotonic()
    page.goto(url, wait_until="commit")
    legacy_nav = False
    while True:
        try:
            sample = page.evaluate(SAMPLE)
        except Exception:  # noqa: BLE001 - a navigation between two samples
            continue
        legacy_nav |= sample["nav"]
        if sample["heading"] == heading:
            seconds = time.monotonic() - started
            context.close()
            return seconds, legacy_nav
        if time.monotonic() - started > 120:
            raise SystemExit(f"{url}: '{heading}' never came")
        time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    (work / "hello.py").write_text('import streamlit as st\nst.title("Hello")\n')
    (work / "imports.py").write_text("import importlib\nimport streamlit as st\n"
                                     f"for name in {app_imports()!r}:\n    importlib.import_module(name)\n"
                                     'st.title("Hello")\n')
    settings = Settings.for_instance(work / "instance").ensure()
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    factory = session_factory(engine)
    ensure_demo_dataset(settings, factory)
    user = create_user(factory, "rita", "a long bench password", "researcher")
    token = start_session(factory, user.id)
    engine.dispose()
    env = {**os.environ, "CFTCLIP_INSTANCE": str(settings.instance_dir), "HF_HUB_OFFLINE": "1",
           "CFTCLIP_APP_POLLER": "0"}
    env.pop("CFTCLIP_DATABASE_URL", None)
    env["PYTHONPATH"] = str(ROOT)  # the imports case runs from the scratch folder
    cases = {"baseline": (work, "hello.py", "", "Hello"),
             "imports": (work, "imports.py", "", "Hello"),
             "ours /train": (ROOT, "app.py", "/train", "Train"),
             "ours /login": (ROOT, "app.py", "/", "Sign in to CFT-CLIP Studio")}
    times: dict[str, list[float]] = {name: [] for name in cases}
    module_names_shown = False
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for _ in range(args.rounds):
            for name, (cwd, script, path, heading) in cases.items():
                process, base = serve(script, cwd, env)
                try:
                    seconds, shown = first_paint(browser, base, path, heading,
                                                 token if name == "ours /train" else "")
                finally:
                    process.terminate()
                    process.wait(10)
                times[name].append(seconds)
                module_names_shown |= shown
        browser.close()
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(json.dumps({"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                  "platform": platform.platform()},
                      "rounds": args.rounds, "seconds": times, "median_s": medians,
                      "ratio_to_baseline": {name: medians[name] / medians["baseline"] for name in cases},
                      "after_imports_s": {name: medians[name] - medians["imports"] for name in cases
                                          if name.startswith("ours")},
                      "module_names_shown": module_names_shown}, indent=2))


if __name__ == "__main__":
    main()
