"""SQLite response cache keyed by a hash of (model identity, messages, schema, sampling params).

The model identity is what answers, not its name in the config: a weights file's sha256 for the
embedded backend, the base URL and served model for a server (`ChatModel.cache_identity`).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

_DIGESTS: dict[tuple[str, int, int], str] = {}
_DIGEST_LOCK = threading.Lock()


def file_digest(path: str | Path, cache: ResponseCache | None = None) -> str:
    """The sha256 of a file (a model's weights), hashed once per (path, size, mtime): memoised in
    the process and, with `cache`, in its database, so a rerun does not read 1 GB again."""
    p = Path(path).resolve()
    st = p.stat()
    memo = (str(p), st.st_size, st.st_mtime_ns)
    with _DIGEST_LOCK:  # concurrent first calls hash the file once
        if memo not in _DIGESTS:
            digest = cache.known_digest(*memo) if cache is not None else None
            if digest is None:
                with open(p, "rb") as f:
                    digest = hashlib.file_digest(f, "sha256").hexdigest()
                if cache is not None:
                    cache.remember_digest(*memo, digest)
            _DIGESTS[memo] = digest
        return _DIGESTS[memo]


def request_key(model: str, messages: Any, schema: Any, temperature: float, max_tokens: int,
                seed: int) -> str:
    """The response-cache key of a request: a sha256 of its whole content (for a request of
    192 frames that is ~1 MB encoded and hashed, so compute it only where a cache exists)."""
    blob = json.dumps(
        {"model": model, "messages": messages, "schema": schema, "temperature": temperature,
         "max_tokens": max_tokens, "seed": seed},
        sort_keys=True, ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseCache:
    """No identical request is paid for twice; safe across threads and processes (WAL)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._wal()
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT, text TEXT,"
            " usage TEXT, created REAL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS files (path TEXT, size INTEGER, mtime_ns INTEGER,"
            " sha256 TEXT, PRIMARY KEY (path, size, mtime_ns))"
        )
        self._db.commit()

    def _wal(self, seconds: float = 30.0) -> None:
        """Switch the file to WAL (it stays so). Processes opening a new cache at once (Ray
        workers) can get "database is locked" here without SQLite's busy timeout applying, so
        the switch is retried for up to `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def get(self, key: str) -> tuple[str, dict[str, int]] | None:
        with self._lock:
            row = self._db.execute("SELECT text, usage FROM replies WHERE key=?", (key,)).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def put(self, key: str, model: str, text: str, usage: dict[str, int]) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO replies VALUES (?,?,?,?,?)",
                (key, model, text, json.dumps(usage), time.time()),
            )
            self._db.commit()

    def known_digest(self, path: str, size: int, mtime_ns: int) -> str | None:
        """A file digest recorded by `file_digest` for this exact (path, size, mtime)."""
        with self._lock:
            row = self._db.execute("SELECT sha256 FROM files WHERE path=? AND size=? AND "
                                   "mtime_ns=?", (path, size, mtime_ns)).fetchone()
        return row[0] if row else None

    def remember_digest(self, path: str, size: int, mtime_ns: int, digest: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO files VALUES (?,?,?,?)",
                             (path, size, mtime_ns, digest))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
