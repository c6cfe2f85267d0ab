"""The import rules of docs/architecture.md, checked on every module's module-level imports (imports inside a
function are deliberate deferrals), and ``pages/`` holding page scripts only."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from studio.navigation import PAGES

ROOT = Path(__file__).resolve().parents[1]
HEAVY_CORE = tuple(f"cftclip_core.{name}" for name in (
    "models", "scoring", "training", "loss", "evaluation", "distributed", "proof.runs", "proof.runner",
    "proof.evaluation", "proof.model", "proof.cache", "proof.batches", "proof.calibrate"))  # they load torch
TORCH = ("torch", "transformers", "torchvision")
BANNED = {  # part -> what its modules may not import at module level
    "cftclip_core": ("streamlit", "sqlalchemy", "alembic", "annotations", "train_jobs", "studio", "pages"),
    "cftclip_core.specs": (*TORCH, "cftclip_core.models"),
    "annotations": ("streamlit", "train_jobs", "studio", *TORCH, *HEAVY_CORE),
    "train_jobs": ("streamlit", "studio", *TORCH, *HEAVY_CORE),
    "studio": (*TORCH, *HEAVY_CORE),
    "pages": (*TORCH, *HEAVY_CORE),
}
FACADE = "train_jobs.api"  # the only train_jobs module the app imports


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> list[str]:
    """Modules imported by the module's own statements (not inside functions or classes)."""
    names = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.If):  # `if TYPE_CHECKING:` blocks import for annotations only
            continue
    return names


def modules() -> list[Path]:
    found = [ROOT / "app.py"]
    for part in ("cftclip_core", "annotations", "train_jobs", "studio", "pages"):
        found += [p for p in (ROOT / part).rglob("*.py") if "migrations" not in p.parts]
    return found


def matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_level_imports_follow_the_dependency_rules(path: Path) -> None:
    name = module_name(path)
    imported = top_level_imports(path)
    for part, banned in BANNED.items():
        if matches(name, part):
            wrong = [i for i in imported if any(matches(i, b) for b in banned)]
            assert not wrong, f"{name} imports {wrong}, against docs/architecture.md"
    if matches(name, "studio") or matches(name, "pages") or name == "app":
        internal = [i for i in imported if matches(i, "train_jobs") and not matches(i, FACADE) and i != "train_jobs"]
        assert not internal, f"{name} imports {internal}: the app uses train_jobs through {FACADE}"
    if name == "app":
        assert set(imported) <= {"streamlit", "studio.navigation", "studio.navigation.run_app"}, imported
    if name == "studio.navigation":  # reached before anything heavy loads
        assert all(i.split(".")[0] in {"streamlit", "__future__", "dataclasses", "pathlib", "typing"}
                   for i in imported), imported


def test_pages_holds_page_scripts_only() -> None:
    scripts = {f"pages/{p.name}" for p in (ROOT / "pages").glob("*") if not p.name.startswith(("__", "."))}
    registered = {spec.script for spec in PAGES.values()} | {"pages/login.py", "pages/setup.py"}
    assert scripts == registered, f"not a registered page: {sorted(scripts - registered)}"


def test_the_code_passes_the_linter():
    """ruff with pyproject.toml's rules, the ban on Streamlit outside the app's parts among them."""
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (pip install -r requirements-test.txt)")
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", str(ROOT)], capture_output=True, text=True,
                          cwd=ROOT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
