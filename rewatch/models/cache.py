"""SQLite response cache keyed by a hash of (model, messages, schema, sampling params)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any


def request_key(model: str, messages: Any, schema: Any, temperature: float, max_tokens: int,
                seed: int) -> str:
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
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT, text TEXT,"
            " usage TEXT, created REAL)"
        )
        self._db.commit()

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

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
