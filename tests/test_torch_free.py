"""The store's command line, the job queue's API and command line, and the app's own package start without
torch: they answer in a fraction of the time a model library takes to load (torch is imported only by the
jobs that score or train). Each check runs in a fresh interpreter, so that nothing imported by other tests
counts."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import APP_ROOT


def run_fresh(code: str, instance: Path) -> str:
    """``code`` in a new interpreter on the instance folder; its last line of output."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "CFTCLIP_INSTANCE": str(instance), "HF_HUB_OFFLINE": "1",
                               "PYTHONPATH": str(APP_ROOT)}, cwd=APP_ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_the_store_cli_and_the_jobs_api_and_cli_run_without_torch(tmp_path: Path) -> None:
    last = run_fresh("""
        import sys
        from annotations.cli import main as store
        from train_jobs import api
        from train_jobs.cli import main as jobs

        assert store(["datasets"]) == 0 and store(["users", "list"]) == 0
        assert jobs(["list"]) == 0 and jobs(["poll"]) == 0
        print("torch" in sys.modules, "transformers" in sys.modules)
    """, tmp_path / "instance")
    assert last == "False False", "the store's or the jobs' command line pulled in torch or transformers"


def test_the_app_package_and_the_pages_imports_need_no_torch(tmp_path: Path) -> None:
    """Every studio module and every module a page imports (the pages themselves are scripts)."""
    import ast

    modules = {f"studio.{path.stem}" for path in (APP_ROOT / "studio").glob("*.py") if path.stem != "__init__"}
    for page in (APP_ROOT / "pages").glob("*.py"):
        for node in ast.walk(ast.parse(page.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules.add(node.module)
            elif isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
    last = run_fresh(f"""
        import importlib, sys
        for name in {sorted(modules)!r}:
            importlib.import_module(name)
        print("torch" in sys.modules, "transformers" in sys.modules)
    """, tmp_path / "instance")
    assert last == "False False", "a studio module or a page's import pulls in torch or transformers"
