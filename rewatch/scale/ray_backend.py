"""The Ray driver of the synthesis stages (`backend: ray`).

One pool of Ray actors (`StageWorker`) serves the whole run, every stage in turn: each worker
process starts, imports rewatch and builds its models (OpenAI-compatible clients, the embedded
captioner, the embedder) once, not once per stage. The driver hands each worker a stage's items
(videos, captions, MCQs) with up to `ray.concurrency` in flight per worker, and the worker runs
the stage's per-item function (`caption_item`, `video_questions`, `chain_item`, the very
functions the asyncio driver calls). A worker only computes: it hands back the records its item
produced, and this process appends them to the run directory, so the files, their ids and the
resume rules are those of the local backend. A worker that dies mid-item is restarted by Ray
and the item is retried (`ray.max_retries`); an item that still has no result is a line in
errors.jsonl.

Stage 1 runs one video per worker and no more videos at once than the cluster has CPUs (over
`ray.caption_cpus`): decoding and the object captioner are CPU work. The model-calling stages
use `ray.actors` workers; the workers reserve `ray.model_cpus` CPUs each, their time spent
waiting on the endpoints.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import BaseModel

from rewatch.config import Config
from rewatch.store import RunDir

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'rewatch-kit[ray]'"


class RayBackendError(RuntimeError):
    """The Ray backend cannot start: Ray missing, or the cluster address unreachable."""


class WorkerLost(RuntimeError):
    """An item whose Ray worker died more often than `ray.max_retries` allows."""


def ray_address(cfg: Config) -> str | None:
    """The cluster to join: `ray.address` in the config, else RAY_ADDRESS, else None (a local
    instance for this run)."""
    return cfg.ray.address or os.environ.get("RAY_ADDRESS") or None


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, with a message saying what to do, when nothing listens at `address`
    (ray.init itself retries for a long while before it gives up)."""
    if address in ("auto", "local"):
        return
    client = address.startswith("ray://")
    url = urlparse(address if "://" in address else f"tcp://{address}")
    host, port = url.hostname, url.port or (10001 if client else 6379)
    if not host:
        raise RayBackendError(f"cannot read the Ray address {address!r}: give host:port, "
                              "ray://host:10001 or auto")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise RayBackendError(
            f"cannot reach the Ray cluster at {address} ({e.strerror or e}). Start it "
            "(`ray start --head` or `ray up cluster.yaml`, see docs/scale.md), fix ray.address "
            "/ RAY_ADDRESS, or leave both unset to run a local Ray instance") from None


def connect(cfg: Config) -> bool:
    """Join the configured Ray cluster or start a local instance; True when this call started
    Ray (the caller shuts it down). Raises RayBackendError with what to do."""
    try:
        import ray
    except ImportError as e:
        raise RayBackendError(f"backend=ray needs Ray: {INSTALL_HINT} ({e})") from None
    if ray.is_initialized():
        return False
    address = ray_address(cfg)
    if address:
        _check_reachable(address)
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True,
                              "configure_logging": False}
    if address:
        kwargs["address"] = address
    else:
        kwargs["address"] = "local"  # never an unrelated RAY_ADDRESS-less cluster found by chance
        kwargs["num_cpus"] = cfg.ray.num_cpus
        # a local instance on a small box: keep the object store small (records are small)
        kwargs["object_store_memory"] = 256 * 2**20
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        raise RayBackendError(f"Ray did not start at {address or 'a local instance'}: {e}"
                              ) from e
    log.info("ray: %s, %s CPUs", address or "local instance",
             ray.cluster_resources().get("CPU"))
    return True


# the records of the item a coroutine works for (an actor runs several items at once)
_ITEM_EMIT: contextvars.ContextVar[Any] = contextvars.ContextVar("rewatch_item_emit")

Records = list[tuple[str, dict[str, Any]]]


# --- the worker --------------------------------------------------------------------------------
def _jsonable(record: BaseModel | dict[str, Any]) -> dict[str, Any]:
    return record.model_dump(mode="json") if isinstance(record, BaseModel) else record


async def _fetch(ref: Any) -> Any:
    return await ref


class StageWorker:
    """A Ray actor serving every stage of a run: its own models on the run's response cache,
    built once, and each stage's per-item function; the records an item produced go back to
    the driver as JSON."""

    def __init__(self, cfg_json: str, cache_path: str | None, run_root: str):
        from rewatch.models.cache import ResponseCache
        from rewatch.models.registry import build_models

        logging.basicConfig(level=logging.WARNING)
        self.cfg = Config.model_validate_json(cfg_json)
        self.cache_path = cache_path
        self.run_root = run_root
        self._shards: dict[str, Any] = {}  # with ray.shards: file name -> this worker's shard
        self.models = build_models(self.cfg, ResponseCache(cache_path) if cache_path else None)
        # model calls in flight in this actor (Stage 2's filters and MCQ steps share it)
        self.sem = asyncio.Semaphore(max(1, self.cfg.synth.concurrency))
        # the state a stage's items share (the driver's ray.put): fetched once per stage, the
        # previous stage's dropped
        self._state: dict[str, asyncio.Future[Any]] = {}
        self._runner: tuple[str, Any] | None = None

    def ready(self) -> bool:
        return True

    async def shared(self, box: list[Any]) -> Any:
        """The stage's shared state; `box` holds its ObjectRef (inside a list, so Ray does not
        fetch it again with every item)."""
        if not box or box[0] is None:
            return None
        key = box[0].hex()
        if key not in self._state:
            self._state = {key: asyncio.ensure_future(_fetch(box[0]))}
        return await self._state[key]

    def eval_runner(self, key: str, s: dict[str, Any]) -> Any:
        """One EvalRunner per eval run on this actor; its records go to the calling item."""
        if self._runner is None or self._runner[0] != key:
            from rewatch.eval.run import EvalRunner
            from rewatch.models.cache import ResponseCache
            from rewatch.models.registry import build_model

            runner = EvalRunner(
                s["bench"], self.cfg, s["out"], build_model(self.cfg.models[self.cfg.eval.model],
                                                            None),
                videos_dir=s["videos_dir"], captions=s["captions"],
                cache=ResponseCache(self.cache_path) if self.cache_path else None)
            runner.emit = lambda name, record: _ITEM_EMIT.get()(name, record)
            self._runner = (key, runner)
        return self._runner[1]

    async def one(self, stage: str, item: dict[str, Any], box: list[Any]
                  ) -> tuple[Records, dict[str, Any]]:
        """Run `stage`'s per-item function on `item`: the records it emitted (none with
        `ray.shards`: this worker appended them to its shards), its counts."""
        rows, counts = await self.compute(stage, item, box)
        if self.cfg.ray.shards:
            # written only once the item is done, as the driver would: a worker killed
            # mid-item leaves nothing; one killed after writing is retried and its second
            # copy dropped by the merge (same ids)
            for name, record in rows:
                if name not in self._shards:
                    worker = f"{socket.gethostname()}-{os.getpid()}"
                    self._shards[name] = RunDir(self.run_root).shard(name, worker)
                self._shards[name].append(record)
            rows = []
        return rows, counts

    async def compute(self, stage: str, item: dict[str, Any], box: list[Any]
                      ) -> tuple[Records, dict[str, Any]]:
        """`stage`'s per-item function on `item`: the records it emitted, its counts."""
        out: Records = []

        def emit(name: str, record: BaseModel | dict[str, Any]) -> None:
            out.append((name, _jsonable(record)))

        cfg, models = self.cfg, self.models
        shared = await self.shared(box)
        if stage == "caption":
            from rewatch.synth.caption import CaptionStats, caption_item

            stats = CaptionStats()
            await caption_item(item["path"], cfg, models, emit, stats, shared)
            return out, vars(stats)
        if stage == "qa":
            from rewatch.schema import CaptionRecord
            from rewatch.synth.qa import QAContext, video_questions

            ctx = QAContext(cfg, models, shared, self.sem)
            counts = await video_questions(CaptionRecord.model_validate(item), ctx, emit)
            return out, {**counts, **{f"calls:{k}": v for k, v in ctx.tally.items()}}
        if stage == "cot":
            from rewatch.schema import CaptionRecord, MCQRecord
            from rewatch.synth.cot import chain_item

            # the captions by video id come once per stage (shared), not with every MCQ
            raw = shared.get(item["mcq"]["video_id"])
            caption = CaptionRecord.model_validate(raw) if raw is not None else None
            async with self.sem:
                what = await chain_item(MCQRecord.model_validate(item["mcq"]), caption, cfg,
                                        models, emit)
            return out, {what: 1}
        if stage == "eval":
            from rewatch.eval.run import RunResult

            runner = self.eval_runner(box[0].hex(), shared)
            res = RunResult(Path(shared["out"]), 0, 0)
            token = _ITEM_EMIT.set(emit)  # the tasks this item's questions run in inherit it
            try:
                await runner.ask_all([shared["items"][i] for i in item["ids"]], res)
            finally:
                _ITEM_EMIT.reset(token)
            return out, {"answered": res.answered, "failed": res.failed, "calls": res.calls,
                         "cache_hits": res.cache_hits}
        raise ValueError(f"unknown stage {stage!r}")


# --- the driver --------------------------------------------------------------------------------
class WorkerPool:
    """One set of `StageWorker` actors for a whole run, serving every stage in turn: each
    worker process starts, imports rewatch and builds its models once per run, not once per
    stage. Ray restarts a worker that dies and retries its items (`ray.max_retries`)."""

    def __init__(self, cfg: Config, run: RunDir, size: int):
        self.cfg, self.run_dir, self.size = cfg, run, size
        self.actors: list[Any] = []

    def start(self) -> list[Any]:
        """The actors, started on first use (a finished run starts none)."""
        if not self.actors:
            import ray

            r = self.cfg.ray
            # fractional CPUs (they mostly wait on endpoints), spread over the nodes; Stage 1
            # bounds its own CPU work to the cluster's CPUs (run_items)
            actor = ray.remote(StageWorker).options(  # type: ignore[attr-defined]
                num_cpus=r.model_cpus, max_restarts=-1, max_task_retries=r.max_retries,
                max_concurrency=max(64, r.concurrency * 4), scheduling_strategy="SPREAD")
            cache = str(self.run_dir.cache_path) if self.cfg.cache else None
            self.actors = [actor.remote(self.cfg.model_dump_json(), cache,
                                        str(self.run_dir.root)) for _ in range(self.size)]
        return self.actors

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run_items(self, stage: str, items: list[tuple[str, dict[str, Any]]],
                  shared: Any = None, progress: Any = None,
                  on_result: Callable[[str], None] | None = None) -> Counter[str]:
        """Run one stage's items on the pool and append their records to the run directory as
        they arrive; returns the summed counts. Items are (key, JSON-able input); a key with no
        result after Ray's retries is recorded in errors.jsonl under that key."""
        import ray

        totals: Counter[str] = Counter()
        if not items:
            return totals
        r, run = self.cfg.ray, self.run_dir
        if stage == "caption":  # CPU work: one video per worker, no more than the CPUs
            cpus = float(ray.cluster_resources().get("CPU", 1))
            actors = self.start()
            per_actor, limit = 1, max(1, int(cpus // r.caption_cpus))
        else:  # model calls: `ray.actors` workers, `ray.concurrency` items in flight each
            actors = self.start()[:r.actors]
            per_actor, limit = r.concurrency, r.concurrency * len(actors)
        box = [ray.put(shared) if shared is not None else None]
        busy = dict.fromkeys(range(len(actors)), 0)
        pending: dict[Any, tuple[str, int]] = {}
        files: dict[str, Any] = {}
        seen: set[str] = set()
        task = progress.add_task(f"{stage} (ray)", total=len(items)) if progress else None
        queue = list(reversed(items))
        while queue or pending:
            while queue and len(pending) < limit:
                i = min(busy, key=lambda k: busy[k])
                if busy[i] >= per_actor:
                    break
                key, item = queue.pop()
                pending[actors[i].one.remote(stage, item, box)] = (key, i)
                busy[i] += 1
            ready, _ = ray.wait(list(pending), num_returns=1)
            key, i = pending.pop(ready[0])
            busy[i] -= 1
            try:
                rows, counts = ray.get(ready[0])
            except ray.exceptions.RayActorError as e:
                run.record_error(stage, key, WorkerLost(
                    f"no result after {r.max_retries} retries of its Ray worker: {e}"))
                totals["errors" if stage != "caption" else "failed"] += 1
                continue
            except ray.exceptions.RayTaskError as e:  # the stage function raised
                run.record_error(stage, key, e.cause if isinstance(e.cause, Exception) else e)
                totals["errors" if stage != "caption" else "failed"] += 1
                continue
            except ray.exceptions.RayError as e:  # Ray's own (out of memory, object lost)
                run.record_error(stage, key, e)
                totals["errors" if stage != "caption" else "failed"] += 1
                continue
            if key in seen:  # never twice: a key's records are written once
                continue
            seen.add(key)
            for name, record in rows:
                f = files.setdefault(name, run.file(name))
                if record.get("id") is None or record["id"] not in f:
                    f.append(record)
            for k, v in counts.items():
                if isinstance(v, int | float) and not isinstance(v, bool):  # not "failures":
                    totals[k] += v  # type: ignore[assignment]  # Stage 1's video_seconds
            if progress is not None:
                progress.advance(task)
            if on_result is not None:
                on_result(key)
        run.merge_shards()  # with ray.shards: the workers' records, before the next stage
        return totals


def shutdown(started: bool) -> None:
    """Shut Ray down if `connect` started it (a joined cluster is left running)."""
    if started:
        import ray

        ray.shutdown()


def synthesize(videos: list[Path], cfg: Config, out: str | Path,
               stages: tuple[str, ...]) -> Any:
    """`rewatch synth --backend ray`: the stages in order on Ray into the run directory `out`
    (same files and resume as the local backend)."""
    from rewatch.clikit import progress as make_progress
    from rewatch.synth.caption import CaptionStats, log_stats
    from rewatch.synth.cot import chain_inputs, cot_id
    from rewatch.synth.pipeline import STAGES, SynthResult
    from rewatch.synth.qa import _Done, generation_id, qa_summary

    run = RunDir(out, cfg)
    run.merge_shards()  # shards a killed run of ray.shards left behind
    started = connect(cfg)
    result = SynthResult(run.root)
    try:
        import ray

        size = cfg.ray.actors
        if "caption" in stages:  # Stage 1 keeps every CPU busy, one video per worker
            cpus = float(ray.cluster_resources().get("CPU", 1))
            size = max(size, min(len(videos), int(cpus // cfg.ray.caption_cpus)))
        with make_progress() as bar, WorkerPool(cfg, run, size) as pool:
            for stage in STAGES:
                if stage not in stages:
                    continue
                t0 = time.monotonic()
                counts: dict[str, Any]
                if stage == "caption":
                    done_ids = run.file("captions.jsonl").ids()
                    got = pool.run_items(stage, [(str(p), {"path": str(p)}) for p in videos],
                                         done_ids, bar)
                    stats = CaptionStats(videos=len(videos))
                    for k in vars(stats):
                        if k not in ("videos", "failures", "wall_seconds"):
                            setattr(stats, k, got.get(k, 0))
                    stats.wall_seconds = time.monotonic() - t0
                    log_stats(stats)
                    counts = {k: v for k, v in vars(stats).items() if k != "failures"}
                elif stage == "qa":
                    from rewatch.schema import CaptionRecord

                    done = _Done.load(run, cfg.synth.qa.mcq_per_question)
                    captions = [CaptionRecord.model_validate(r)
                                for r in run.file("captions.jsonl").read()]
                    todo = [c for c in captions if not done.video_done(generation_id(c, cfg))]
                    got = pool.run_items(stage, [(generation_id(c, cfg), c.model_dump(mode="json"))
                                                 for c in todo], done, bar)
                    got["videos_skipped"] += len(captions) - len(todo)
                    calls = Counter({k.removeprefix("calls:"): v for k, v in got.items()
                                     if k.startswith("calls:")})
                    counts = qa_summary(got, calls)
                else:
                    mcqs, by_video = chain_inputs(run, cfg)
                    finished = run.file("cot.jsonl").ids() | run.file("rejected.jsonl").ids()
                    todo_m = [m for m in mcqs if cot_id(m, cfg) not in finished]
                    wanted = {m.video_id for m in todo_m}
                    caps = {v: c.model_dump(mode="json") for v, c in by_video.items()
                            if v in wanted}
                    got = pool.run_items(stage, [(cot_id(m, cfg),
                                                  {"mcq": m.model_dump(mode="json")})
                                                 for m in todo_m], caps, bar)
                    counts = {"total": len(mcqs), **{k: got.get(k, 0) for k in (
                        "kept", "rejected", "errors")}, "skipped": len(mcqs) - len(todo_m)}
                result.seconds[stage] = time.monotonic() - t0
                result.counts[stage] = dict(counts)
                log.info("stage %s (ray) done in %.1f s: %s", stage, result.seconds[stage],
                         counts)
    finally:
        shutdown(started)
    return result
