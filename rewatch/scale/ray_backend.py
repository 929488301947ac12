"""The Ray Data driver of the synthesis stages (`backend: ray`).

Each stage becomes one Ray Data pipeline over its items (videos, captions, MCQs): a block per
item, `map_batches` into a pool of async actors (`StageWorker`), each holding its own models
(OpenAI-compatible clients, or the embedded captioner for Stage 1) and running the stage's
per-item function (`caption_item`, `video_questions`, `chain_item`, the very functions the
asyncio driver calls) on up to `ray.concurrency` items at once. A worker only computes: it
hands back the records its item produced, and this process appends them to the run directory,
so the files, their ids and the resume rules are those of the local backend. A worker that
dies mid-item is restarted by Ray and the item is retried (`ray.max_retries`); an item that
still has no result is a line in errors.jsonl.

Stage 1 workers take `ray.caption_cpus` CPUs each and one video at a time (decoding and the
object captioner are CPU work); the model-calling stages run `ray.actors` actors of
`ray.model_cpus` CPUs each, their time spent waiting on the endpoints.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import socket
import time
import warnings
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


# --- the worker --------------------------------------------------------------------------------
def _jsonable(record: BaseModel | dict[str, Any]) -> dict[str, Any]:
    return record.model_dump(mode="json") if isinstance(record, BaseModel) else record


class StageWorker:
    """A Ray Data actor for one stage: its own models on the run's response cache, the
    stage's per-item function, and the records each item produced handed back as JSON."""

    def __init__(self, stage: str, cfg_json: str, cache_path: str | None, shared: Any):
        from rewatch.models.cache import ResponseCache
        from rewatch.models.registry import build_models

        logging.basicConfig(level=logging.WARNING)
        self.stage = stage
        self.cfg = Config.model_validate_json(cfg_json)
        self.models = build_models(self.cfg, ResponseCache(cache_path) if cache_path else None)
        import ray

        # the driver's ray.put of what the run already holds (resume state, finished ids)
        self.shared = ray.get(shared) if isinstance(shared, ray.ObjectRef) else shared
        # model calls in flight in this actor (Stage 2's filters and MCQ steps share it)
        self.sem = asyncio.Semaphore(max(1, self.cfg.synth.concurrency))
        if stage == "eval":  # one EvalRunner per actor; its records go to the calling item
            from rewatch.eval.run import EvalRunner
            from rewatch.models.registry import build_model

            s = self.shared
            self.runner = EvalRunner(
                s["bench"], self.cfg, s["out"], build_model(self.cfg.models[self.cfg.eval.model],
                                                            None),
                videos_dir=s["videos_dir"], captions=s["captions"],
                cache=ResponseCache(cache_path) if cache_path else None)
            self.runner.emit = lambda name, record: _ITEM_EMIT.get()(name, record)

    async def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        keys, rows, counts = [], [], []
        for key, item in zip(batch["key"], batch["item"], strict=True):
            out, n = await self.one(json.loads(str(item)))
            keys.append(str(key))
            rows.append(json.dumps(out, ensure_ascii=False))
            counts.append(json.dumps(n))
        return {"key": keys, "rows": rows, "counts": counts}

    async def one(self, item: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        out: list[tuple[str, dict[str, Any]]] = []

        def emit(name: str, record: BaseModel | dict[str, Any]) -> None:
            out.append((name, _jsonable(record)))

        cfg, models = self.cfg, self.models
        if self.stage == "caption":
            from rewatch.synth.caption import CaptionStats, caption_item

            stats = CaptionStats()
            await caption_item(item["path"], cfg, models, emit, stats, self.shared)
            return out, vars(stats)
        if self.stage == "qa":
            from rewatch.schema import CaptionRecord
            from rewatch.synth.qa import QAContext, video_questions

            ctx = QAContext(cfg, models, self.shared, self.sem)
            counts = await video_questions(CaptionRecord.model_validate(item), ctx, emit)
            return out, {**counts, **{f"calls:{k}": v for k, v in ctx.tally.items()}}
        if self.stage == "cot":
            from rewatch.schema import CaptionRecord, MCQRecord
            from rewatch.synth.cot import chain_item

            # the captions by video id come once per actor (shared), not with every MCQ
            raw = self.shared.get(item["mcq"]["video_id"])
            caption = CaptionRecord.model_validate(raw) if raw is not None else None
            async with self.sem:
                what = await chain_item(MCQRecord.model_validate(item["mcq"]), caption, cfg,
                                        models, emit)
            return out, {what: 1}
        if self.stage == "eval":
            from rewatch.eval.run import RunResult

            res = RunResult(Path(self.shared["out"]), 0, 0)
            token = _ITEM_EMIT.set(emit)  # the tasks this item's questions run in inherit it
            try:
                await self.runner.ask_all([self.shared["items"][i] for i in item["ids"]], res)
            finally:
                _ITEM_EMIT.reset(token)
            return out, {"answered": res.answered, "failed": res.failed, "calls": res.calls,
                         "cache_hits": res.cache_hits}
        raise ValueError(f"unknown stage {self.stage!r}")


# --- the driver --------------------------------------------------------------------------------
def run_items(stage: str, items: list[tuple[str, dict[str, Any]]], cfg: Config, run: RunDir,
              shared: Any = None, progress: Any = None,
              on_result: Callable[[str], None] | None = None) -> Counter[str]:
    """Run one stage's items on Ray and append their records to `run` as they arrive; returns
    the summed counts. Items are (key, JSON-able input); a key with no result after Ray's
    retries is recorded in errors.jsonl under that key."""
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    totals: Counter[str] = Counter()
    if not items:
        return totals
    ctx = DataContext.get_current()
    ctx.max_errored_blocks = -1  # a lost item becomes an errors.jsonl line, not a dead run
    ctx.enable_progress_bars = False  # the run's own progress bar counts items
    r = cfg.ray
    if stage == "caption":  # CPU work: one video per worker at a time, as many as CPUs allow
        cpus = float(ray.cluster_resources().get("CPU", 1))
        workers = max(1, min(len(items), int(cpus // r.caption_cpus)))
        compute = ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1)
        num_cpus = r.caption_cpus
    else:
        compute = ActorPoolStrategy(size=min(r.actors, len(items)),
                                    max_tasks_in_flight_per_actor=r.concurrency,
                                    max_concurrent_calls_per_actor=r.concurrency)
        num_cpus = r.model_cpus
    shared_ref = ray.put(shared) if shared is not None else None
    ds = ray.data.from_items([{"key": k, "item": json.dumps(v, ensure_ascii=False)}
                              for k, v in items], override_num_blocks=len(items))
    with warnings.catch_warnings():
        # Ray Data restarts a dead actor without end and retries its tasks without end by
        # default; max_task_retries bounds the retries of an item that keeps killing its
        # worker (a remote arg, deprecated from Ray 2.64 on: pinned 2.60 here)
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        done = ds.map_batches(
            StageWorker, batch_size=1, compute=compute, num_cpus=num_cpus,
            fn_constructor_args=(stage, cfg.model_dump_json(),
                                 str(run.cache_path) if cfg.cache else None, shared_ref),
            max_task_retries=r.max_retries)
    files: dict[str, Any] = {}
    seen: set[str] = set()
    task = progress.add_task(f"{stage} (ray)", total=len(items)) if progress else None
    for row in done.iter_rows():
        key = str(row["key"])
        if key in seen:  # a retried block that had already delivered: written once
            continue
        seen.add(key)
        for name, record in json.loads(row["rows"]):
            f = files.setdefault(name, run.file(name))
            if record.get("id") is None or record["id"] not in f:
                f.append(record)
        for k, v in json.loads(row["counts"]).items():
            if isinstance(v, int | float) and not isinstance(v, bool):  # not "failures":
                totals[k] += v  # type: ignore[assignment]  # Stage 1's video_seconds: float
        if progress is not None:
            progress.advance(task)
        if on_result is not None:
            on_result(key)
    for key, _item in items:
        if key not in seen:
            run.record_error(stage, key, WorkerLost(
                f"no result after {r.max_retries} retries of its Ray worker (see the Ray logs)"))
            totals["errors" if stage != "caption" else "failed"] += 1
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
    started = connect(cfg)
    result = SynthResult(run.root)
    try:
        with make_progress() as bar:
            for stage in STAGES:
                if stage not in stages:
                    continue
                t0 = time.monotonic()
                counts: dict[str, Any]
                if stage == "caption":
                    done_ids = run.file("captions.jsonl").ids()
                    got = run_items(stage, [(str(p), {"path": str(p)}) for p in videos], cfg,
                                    run, done_ids, bar)
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
                    got = run_items(stage, [(generation_id(c, cfg), c.model_dump(mode="json"))
                                            for c in todo], cfg, run, done, bar)
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
                    got = run_items(stage, [(cot_id(m, cfg), {"mcq": m.model_dump(mode="json")})
                                            for m in todo_m], cfg, run, caps, bar)
                    counts = {"total": len(mcqs), **{k: got.get(k, 0) for k in (
                        "kept", "rejected", "errors")}, "skipped": len(mcqs) - len(todo_m)}
                result.seconds[stage] = time.monotonic() - t0
                result.counts[stage] = dict(counts)
                log.info("stage %s (ray) done in %.1f s: %s", stage, result.seconds[stage],
                         counts)
    finally:
        shutdown(started)
    return result
