"""Where the studio keeps its runtime state: ONE instance folder.

Everything the app writes (database, media store, caches, model checkpoints) lives under the
instance folder, by default ``./instance`` (resolved against the current directory), overridable
with ``CFTCLIP_INSTANCE`` (rule in ``cftclip_core.instance``, shared with the command line). The
database URL defaults to a SQLite file in that folder and can point elsewhere (e.g. PostgreSQL)
with ``CFTCLIP_DATABASE_URL``. Reading settings creates nothing; folders are made only by
:meth:`Settings.ensure`.

Import limits: ``CFTCLIP_IMPORT_ROOTS`` (folders, separated by ``:``) are where the app may read a
table "from a file on this server" (admins only; none by default). ZIP uploads may unpack to at most
``CFTCLIP_ZIP_MAX_EXPANSION`` times their own size (200; a small one always to 64 MiB), and no
member may be compressed more than ``CFTCLIP_ZIP_MAX_RATIO`` to 1 (1000).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from cftclip_core.errors import ConfigError
from cftclip_core.instance import INSTANCE_ENV, instance_dir  # the same rule as the command line's

DATABASE_URL_ENV = "CFTCLIP_DATABASE_URL"
DATABASE_FILE = "studio.db"
IMPORT_ROOTS_ENV = "CFTCLIP_IMPORT_ROOTS"
ZIP_MAX_RATIO_ENV = "CFTCLIP_ZIP_MAX_RATIO"
ZIP_MAX_EXPANSION_ENV = "CFTCLIP_ZIP_MAX_EXPANSION"
ZIP_MIN_UNPACKED_BYTES = 64 * 1024**2  # a small upload may always unpack to this much


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def database_url(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    value = env.get(DATABASE_URL_ENV, "").strip()
    return value or sqlite_url(instance_dir(env) / DATABASE_FILE)


def import_roots(env: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """The folders the app may read server files from: absolute, resolved (symlinks followed)."""
    env = os.environ if env is None else env
    roots = []
    for part in env.get(IMPORT_ROOTS_ENV, "").split(os.pathsep):
        if not part.strip():
            continue
        folder = Path(part.strip()).expanduser()
        if not folder.is_absolute():
            raise ConfigError(f"{IMPORT_ROOTS_ENV} holds '{part}', which is not an absolute path: give folders "
                              "such as /data/newstt, separated by ':'.")
        roots.append(folder.resolve())
    return tuple(roots)


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or not 1 <= int(value) <= 10**9:
        raise ConfigError(f"{name} is '{value}'; give a whole number from 1 to 1000000000 (default {default}).")
    return int(value)


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
    import_roots: tuple[Path, ...] = ()  # folders the app may read tables from; none: uploads only
    zip_max_ratio: int = 1000  # most a ZIP member may be compressed (unpacked size / packed size)
    zip_max_expansion: int = 200  # a ZIP may unpack to this many times its own size...
    zip_min_unpacked_bytes: int = ZIP_MIN_UNPACKED_BYTES  # ...and a small one always to this much

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        values = os.environ if env is None else env
        return cls(
            instance_dir=instance_dir(env),
            database_url=database_url(env),
            media_dir=media_dir(env),
            cache_dir=cache_dir(env),
            models_dir=models_dir(env),
            import_roots=import_roots(env),
            zip_max_ratio=_positive_int(values, ZIP_MAX_RATIO_ENV, cls.zip_max_ratio),
            zip_max_expansion=_positive_int(values, ZIP_MAX_EXPANSION_ENV, cls.zip_max_expansion),
        )

    def zip_max_unpacked_bytes(self, upload_bytes: int) -> int:
        """How much an uploaded ZIP of ``upload_bytes`` may unpack to: proportionate to its size."""
        return max(self.zip_min_unpacked_bytes, self.zip_max_expansion * upload_bytes)

    def server_table(self, path: str) -> Path:
        """``path`` resolved (symlinks followed) if it lies under one of ``import_roots``; else ConfigError."""
        if not self.import_roots:
            raise ConfigError(f"Reading tables from this server's files is switched off: upload the table instead, "
                              f"or ask the administrator to list allowed folders in {IMPORT_ROOTS_ENV}.")
        candidate = Path(path).expanduser()
        resolved = candidate.resolve() if candidate.is_absolute() else None
        if resolved is None or not any(resolved.is_relative_to(root) for root in self.import_roots):
            allowed = ", ".join(str(root) for root in self.import_roots)
            raise ConfigError(f"'{path}' is not inside a folder the studio may read tables from ({allowed}): give "
                              f"the absolute path of a table in one of them, or upload it.")
        return resolved

    @classmethod
    def for_instance(cls, folder: str | Path, database_url: str | None = None) -> Settings:
        """Settings for an explicit folder (tests, scripts), ignoring the environment."""
        env = {INSTANCE_ENV: str(folder)}
        if database_url:
            env[DATABASE_URL_ENV] = database_url
        return cls.from_env(env)

    def ensure(self) -> Settings:
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
