"""On-disk cache of image and text embeddings, so re-scoring never recomputes.

Keys combine the model fingerprint with the image content hash and preprocessing fingerprint, or
with the text hash and the token window. The store is a single SQLite file (stdlib ``sqlite3``; this
is a cache file of the library, not the project's database), which is safe when the app and a job
read and write it at once.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS embedding (
    space TEXT NOT NULL,      -- model fingerprint + kind + preprocessing/token window
    key TEXT NOT NULL,        -- image sha256 or text sha256
    vector BLOB NOT NULL,     -- float32, L2-normalised
    PRIMARY KEY (space, key)
) WITHOUT ROWID
"""
_LOOKUP_CHUNK = 900  # stays under SQLite's bound-parameter limit


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Embeddings by (space, key). ``space`` names the model and how inputs were prepared."""

    def __init__(self, path: Path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(path, timeout=30, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(_SCHEMA)
        self._conn.commit()

    def get_many(self, space: str, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _LOOKUP_CHUNK):
            chunk = unique[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._conn.execute(
                f"SELECT key, vector FROM embedding WHERE space = ? AND key IN ({marks})", [space, *chunk]
            )
            for key, blob in rows:
                found[key] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, space: str, vectors: dict[str, np.ndarray]) -> None:
        rows = [(space, k, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in vectors.items()]
        with self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO embedding (space, key, vector) VALUES (?, ?, ?)", rows)

    def count(self, space: str | None = None) -> int:
        if space is None:
            return self._conn.execute("SELECT COUNT(*) FROM embedding").fetchone()[0]
        return self._conn.execute("SELECT COUNT(*) FROM embedding WHERE space = ?", [space]).fetchone()[0]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
