"""The instance folder: the ONE place where the studio keeps runtime state.

The command line and the app use this same rule, so they share the database, media store, caches
and models: ``$CFTCLIP_INSTANCE`` (surrounding spaces ignored, ``~`` expanded) or, when it is unset
or blank, ``./instance``; relative paths are resolved against the current directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

INSTANCE_ENV = "CFTCLIP_INSTANCE"
DEFAULT_INSTANCE = "instance"


def instance_dir(env: Mapping[str, str] | None = None) -> Path:
    """The instance folder named by ``env`` (default: the process environment); creates nothing."""
    env = os.environ if env is None else env
    value = env.get(INSTANCE_ENV, "").strip()
    return Path(value or DEFAULT_INSTANCE).expanduser().resolve()
