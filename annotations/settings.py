"""Where the studio keeps its runtime state: ONE instance folder.

Everything the app writes (database, media store, caches, model checkpoints) lives under the
instance folder, by default ``./instance`` (resolved against the current directory), overridable
with ``CFTCLIP_INSTANCE`` (rule in ``cftclip_core.instance``, shared with the command line). The
database URL defaults to a SQLite file in that folder and can point elsewhere (e.g. PostgreSQL)
with ``CFTCLIP_DATABASE_URL``. Reading settings creates nothing; folders are made only by
:meth:`Settings.ensure`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from cftclip_core.instance import INSTANCE_ENV, instance_dir  # the same rule as the command line's

DATABASE_URL_ENV = "CFTCLIP_DATABASE_URL"
DATABASE_FILE = "studio.db"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def database_url(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    value = env.get(DATABASE_URL_ENV, "").strip()
    return value or sqlite_url(instance_dir(env) / DATABASE_FILE)


def media_dir(env: Mapping[str, str] | None = None) -> Path:
    return instance_dir(env) / "media"


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    return instance_dir(env) / "cache"


def models_dir(env: Mapping[str, str] | None = None) -> Path:
    return instance_dir(env) / "models"


@dataclass(frozen=True)
class Settings:
    instance_dir: Path
    database_url: str
    media_dir: Path
    cache_dir: Path
    models_dir: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        return cls(
            instance_dir=instance_dir(env),
            database_url=database_url(env),
            media_dir=media_dir(env),
            cache_dir=cache_dir(env),
            models_dir=models_dir(env),
        )

    @classmethod
    def for_instance(cls, folder: str | Path, database_url: str | None = None) -> "Settings":
        """Settings for an explicit folder (tests, scripts), ignoring the environment."""
        env = {INSTANCE_ENV: str(folder)}
        if database_url:
            env[DATABASE_URL_ENV] = database_url
        return cls.from_env(env)

    def ensure(self) -> "Settings":
        """Create the instance folders (and a SQLite file's folder); returns self."""
        for folder in (self.instance_dir, self.media_dir, self.cache_dir, self.models_dir):
            folder.mkdir(parents=True, exist_ok=True)
        sqlite_file = sqlite_path(self.database_url)
        if sqlite_file is not None:
            sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        return self


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL; None for other databases and in-memory SQLite."""
    try:
        parsed = make_url(url)
    except ArgumentError:  # reported by annotations.db.make_engine
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.database.startswith("file:"):  # URI form; leave it to the caller
        return None
    return Path(parsed.database)
