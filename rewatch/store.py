"""The run store: JSONL files appended with fsync, resume by stable id, errors.jsonl."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from rewatch.config import Config, dump_config
from rewatch.schema import ErrorRecord

log = logging.getLogger(__name__)

# How a stage's per-item function hands over a record: (run-directory file name, record). The
# local driver appends it at once; the Ray driver collects it on the worker and the driver
# process appends it (rewatch.scale.ray_backend), so a stage's code is the same under both.
Emit = Callable[[str, "BaseModel | dict[str, Any]"], None]


def error_record(stage: str, item_id: str, exc: BaseException) -> ErrorRecord:
    """The errors.jsonl line for a failed item (logged as a warning)."""
    rec = ErrorRecord(stage=stage, id=item_id, error=type(exc).__name__,
                      message=str(exc)[:2000], time=time.time())
    log.warning("[%s] %s failed: %s: %s", stage, item_id, rec.error, rec.message[:300])
    return rec


def stable_id(*parts: Any, n: int = 16) -> str:
    """A hash of an item's inputs: the same inputs give the same id on every run."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


class JsonlFile:
    """Append-only JSONL: one write() + fsync per record; a torn last line is dropped."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._ids: set[str] | None = None
        self._tail_checked = False  # our own appends write whole lines: check once per file

    def _repair_tail(self) -> None:
        # A SIGKILL mid-write can leave a line without its newline: cut it so the next
        # append starts on a clean line (only the record being written is lost).
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) == b"\n":
                return
            f.seek(0)
            data = f.read()
            keep = data.rfind(b"\n") + 1
            log.warning("%s: dropping a torn last line (%d bytes)", self.path, len(data) - keep)
            f.truncate(keep)

    def read(self) -> Iterator[dict[str, Any]]:
        """Every complete record; a torn or corrupt line is skipped with a warning."""
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.endswith("\n"):
                    log.warning("%s:%d: torn last line skipped", self.path, n)
                    break
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    log.warning("%s:%d: corrupt line skipped", self.path, n)

    def ids(self) -> set[str]:
        if self._ids is None:
            self._ids = {r["id"] for r in self.read() if "id" in r}
        return self._ids

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.ids()

    def append(self, record: BaseModel | dict[str, Any]) -> None:
        self.append_many([record])

    def append_many(self, records: list[BaseModel | dict[str, Any]]) -> None:
        """Append `records` in one write and one fsync (a merge of many records)."""
        rows = [r.model_dump(mode="json") if isinstance(r, BaseModel) else r for r in records]
        if not rows:
            return
        blob = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in rows).encode("utf-8")
        if self._ids is None:
            self.ids()
        if not self._tail_checked:
            self._repair_tail()
            self._tail_checked = True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(blob)
            while view:  # a large write may be partial
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if self._ids is not None:
            self._ids.update(d["id"] for d in rows if "id" in d)


MIN_FREE_BYTES = 200 * 1024 * 1024  # below this, a run would likely die mid-write


class RunDirError(OSError):
    """The run directory cannot be used (not creatable, not writable, disk nearly full)."""


def check_writable(root: Path, min_free: int = MIN_FREE_BYTES) -> None:
    """Fail before any work starts if `root` cannot take the run's files."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".rewatch-write-test"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"ok\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as e:
        raise RunDirError(f"run directory {root} is not writable ({e.strerror or e}); choose "
                          "another --out") from e
    free = shutil.disk_usage(root).free
    if free < min_free:
        raise RunDirError(f"only {free // 2**20} MB free under {root} (need at least "
                          f"{min_free // 2**20} MB); free some space or choose another --out")


class RunDir:
    """A run directory: plain files a person can open (see docs/architecture.md)."""

    def __init__(self, root: str | Path, config: Config | None = None):
        self.root = Path(root)
        check_writable(self.root)
        if config is not None:
            (self.root / "config.yaml").write_text(dump_config(config))
        self.errors = JsonlFile(self.root / "errors.jsonl")

    def file(self, name: str) -> JsonlFile:
        return JsonlFile(self.root / name)

    @property
    def cache_path(self) -> Path:
        return self.root / "cache.sqlite"

    def record_error(self, stage: str, item_id: str, exc: BaseException) -> None:
        """Append a failed item to errors.jsonl and log it; the run goes on."""
        self.errors.append(error_record(stage, item_id, exc))

    def emitter(self, *opened: JsonlFile) -> Emit:
        """An `Emit` that appends each record to its file in this run at once (through the
        `opened` JsonlFile objects where given, so their id sets stay current)."""
        files: dict[str, JsonlFile] = {"errors.jsonl": self.errors}
        files.update({f.path.name: f for f in opened})

        def emit(name: str, record: BaseModel | dict[str, Any]) -> None:
            if name not in files:
                files[name] = self.file(name)
            files[name].append(record)

        return emit

    def shard(self, name: str, worker: str) -> JsonlFile:
        """Worker `worker`'s own part of the file `name` (`qa.jsonl` -> `qa.shard-W.jsonl`),
        which `merge_shards` folds into `name`."""
        return self.file(f"{name.removesuffix('.jsonl')}.shard-{worker.replace('.', '-')}.jsonl")

    def merge_shards(self) -> dict[str, int]:
        """Fold every per-worker shard into its file by id (the first of equal ids is kept, so
        a retried item's second copy is dropped; a torn line is skipped), then delete the
        shard. Returns the records added per file."""
        added: dict[str, int] = {}
        for path in sorted(self.root.glob("*.shard-*.jsonl")):
            name = path.name.split(".shard-", 1)[0] + ".jsonl"
            target = self.errors if name == "errors.jsonl" else self.file(name)
            new: list[BaseModel | dict[str, Any]] = []
            ids = set(target.ids())
            for record in JsonlFile(path).read():
                if record.get("id") is None or record["id"] not in ids:
                    new.append(record)
                    if record.get("id") is not None:
                        ids.add(record["id"])
            target.append_many(new)  # one write and one fsync per shard
            added[name] = added.get(name, 0) + len(new)
            path.unlink()
        if added:
            log.info("merged the workers' shards: %s", added)
        return added
