"""A content-addressed feature cache on disk, and the content hashes that key it.

Entries are keyed by (tool name, tool version, sha256 of the input), so a changed image or a new model version
never serves a stale value, and renaming or moving a file never forces a recompute.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kdsl.errors import FeatureError

logger = logging.getLogger(__name__)

CacheKey = tuple[str, str, str]  # (tool, version, input sha256)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS features (
    tool    TEXT NOT NULL,
    version TEXT NOT NULL,
    key     TEXT NOT NULL,
    kind    TEXT NOT NULL CHECK (kind IN ('json', 'array')),
    value   BLOB NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (tool, version, key)
) WITHOUT ROWID
"""

# How long a writer waits for another process's transaction before giving up (ms); OCR batches are short.
_BUSY_TIMEOUT_MS = 60_000
# SQLite's default limit on bound parameters is 999 on old builds; stay well under it.
_CHUNK = 400


def _encode(value: Any) -> tuple[str, bytes]:
    if isinstance(value, np.ndarray):
        buf = io.BytesIO()
        np.save(buf, value, allow_pickle=False)  # .npy keeps dtype and shape; no pickle, so loading is safe
        return "array", buf.getvalue()
    try:
        return "json", json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"cache values must be JSON-serialisable or numpy arrays, not {type(value).__name__}"
        ) from e


def _decode(kind: str, blob: bytes) -> Any:
    if kind == "array":
        return np.load(io.BytesIO(blob), allow_pickle=False)
    return json.loads(blob.decode("utf-8"))


class FeatureCache:
    """SQLite key/value store of tool outputs: JSON values or numpy arrays.

    Safe for several processes on one file (WAL journal, busy timeout). Counts `hits` and `misses` of `get`.

    Example:
        >>> cache = FeatureCache(Path("work/features.sqlite"))
        >>> cache.put("ocr", "rapidocr-1.4.4", sha, {"lines": ["..."]})
        >>> cache.get("ocr", "rapidocr-1.4.4", sha)
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._connect()  # fail early on an unwritable path

    def _connect(self) -> sqlite3.Connection:
        # A connection must not cross a fork: reopen in a child process.
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FeatureError(f"{self.path.parent}: cannot create the feature cache's folder ({e.strerror}); "
                               "KDSL_HOME must be a folder kdsl can write in") from e
        try:
            conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writer of another process
            conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL is durable across app crashes
            with conn:
                conn.execute(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise FeatureError(self._open_problem(e)) from e
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _open_problem(self, e: sqlite3.DatabaseError) -> str:
        """Why the cache did not open, and what to do: permissions and a full disk leave the cache intact (it holds
        every OCR result: never advise deleting it for those); only a damaged file is set aside."""
        reason = str(e)
        locked = [p for p in (self.path, self.path.parent) if p.exists() and not os.access(p, os.W_OK)]
        if locked or any(w in reason for w in ("readonly", "read-only", "unable to open", "permission")):
            where = locked[0] if locked else self.path.parent
            return (f"{self.path}: cannot open the feature cache ({reason}): no permission to write {where}; make it "
                    "writable or set KDSL_HOME to a folder kdsl can write in (the cache itself is intact)")
        if "full" in reason:
            return f"{self.path}: cannot open the feature cache ({reason}): free disk space and run again"
        return (f"{self.path}: cannot open the feature cache ({reason}); if the file is damaged, move it aside (it "
                "holds the cached OCR results) and run again")

    def get(self, tool: str, version: str, key: str, default: Any = None) -> Any:
        """The stored value, or `default` (counted as a miss)."""
        with self._lock:
            row = (
                self._connect()
                .execute(
                    "SELECT kind, value FROM features WHERE tool=? AND version=? AND key=?",
                    (tool, version, key),
                )
                .fetchone()
            )
            if row is None:
                self.misses += 1
                return default
            self.hits += 1
        return _decode(row[0], row[1])

    def get_many(self, tool: str, version: str, keys: Iterable[str]) -> dict[str, Any]:
        """The stored values of those keys that are present; absent keys count as misses."""
        wanted = list(dict.fromkeys(keys))
        found: dict[str, Any] = {}
        with self._lock:
            conn = self._connect()
            for i in range(0, len(wanted), _CHUNK):
                part = wanted[i : i + _CHUNK]
                marks = ",".join("?" * len(part))
                rows = conn.execute(
                    f"SELECT key, kind, value FROM features WHERE tool=? AND version=? AND key IN ({marks})",
                    (tool, version, *part),
                ).fetchall()
                for key, kind, blob in rows:
                    found[key] = (kind, blob)
            self.hits += len(found)
            self.misses += len(wanted) - len(found)
        return {k: _decode(kind, blob) for k, (kind, blob) in found.items()}

    def put(self, tool: str, version: str, key: str, value: Any) -> None:
        """Store a JSON-serialisable value or a numpy array, replacing any previous one."""
        self.put_many(tool, version, {key: value})

    def put_many(self, tool: str, version: str, items: Mapping[str, Any]) -> None:
        """Store several values in one transaction (one disk sync instead of one per value)."""
        now = time.time()
        rows = [(tool, version, key, *_encode(value), now) for key, value in items.items()]
        with self._lock:
            conn = self._connect()
            try:
                with conn:
                    conn.executemany(
                        "INSERT OR REPLACE INTO features (tool, version, key, kind, value, created) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        rows,
                    )
            except sqlite3.OperationalError as e:
                raise FeatureError(f"{self.path}: cannot write feature cache ({e})") from e

    def __contains__(self, item: object) -> bool:
        """`(tool, version, key) in cache`; does not count as a hit or a miss."""
        if not (isinstance(item, tuple) and len(item) == 3):
            return False
        with self._lock:
            row = (
                self._connect()
                .execute("SELECT 1 FROM features WHERE tool=? AND version=? AND key=?", item)
                .fetchone()
            )
        return row is not None

    def __len__(self) -> int:
        with self._lock:
            return self._connect().execute("SELECT COUNT(*) FROM features").fetchone()[0]

    def count(self, tool: str | None = None, version: str | None = None) -> int:
        """Entries stored, optionally for one tool (and version)."""
        sql, args = "SELECT COUNT(*) FROM features WHERE 1=1", []
        if tool is not None:
            sql, args = sql + " AND tool=?", [*args, tool]
        if version is not None:
            sql, args = sql + " AND version=?", [*args, version]
        with self._lock:
            return self._connect().execute(sql, args).fetchone()[0]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.path)!r}, hits={self.hits}, misses={self.misses})"
