"""What a run was made from, recorded with it: the code version, the package versions, and a hash of
the labels it was given (so a result can be traced to the exact labels, even after re-adjudication)."""

from __future__ import annotations

import hashlib
import platform
import subprocess
from collections.abc import Iterable
from importlib import metadata

from train_jobs.launchers import PROJECT_ROOT

PACKAGES = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "pillow", "scikit-learn", "scipy",
            "pandas")


def code_version() -> str:
    """The git commit of the studio's code, with ``+dirty`` when files differ from it; 'unknown' outside git."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return commit + ("+dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def label_snapshot(rows: Iterable[tuple[str, str, int | None]]) -> str:
    """SHA-256 over (table, item id, label) rows, order-independent: equal labels give equal hashes."""
    digest = hashlib.sha256()
    for table, item_id, label in sorted(rows, key=lambda r: (r[0], r[1])):
        digest.update(f"{table}\0{item_id}\0{'' if label is None else label}\n".encode())
    return digest.hexdigest()
