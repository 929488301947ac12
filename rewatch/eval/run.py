"""`rewatch eval run`: ask a model every question of a benchmark, with bounded concurrency, a
response cache and resume by item id (a killed run continues without repeating a call), then
score by the benchmark's official rules.

A run directory holds `meta.json` (what was run), `config.yaml`, `predictions.jsonl` (one line
per answered item: the raw reply and what was extracted), `judgments.jsonl` (the judge model's
outputs for the LLM steps of the scoring), `errors.jsonl`, `cache.sqlite`, `scores.json` (both
extraction modes, official and strict) and `scored.jsonl` (every item in both modes).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewatch.config import Config
from rewatch.eval.benchmarks.base import Benchmark, BenchScore, EvalItem
from rewatch.eval.extract import extract_choice, extract_number
from rewatch.eval.inputs import (
    FramePool,
    PreparedVideo,
    build_prompt,
    caption_for,
    clip_of,
    file_identity,
    frame_settings,
    frames_messages,
    load_prompt,
    prompt_name,
    text_proxy_messages,
    video_url_messages,
)
from rewatch.eval.scoring import (  # noqa: F401  (re-exported: the run's scoring API)
    Judgments,
    read_predictions,
    run_judges,
    run_meta,
    score_modes,
    score_run,
    score_run_async,
    write_scored,
    write_scores,
)
from rewatch.models.base import ChatModel, Reply, Usage
from rewatch.models.cache import ResponseCache
from rewatch.schema import CaptionRecord
from rewatch.store import Emit, JsonlFile, RunDir, error_record

log = logging.getLogger(__name__)


class RunMismatch(ValueError):
    """The run directory holds a different run (benchmark, model, mode or inputs)."""


@dataclass
class RunResult:
    """What one `run_eval` call did, and the scores of the whole run directory."""

    out: Path
    total: int
    already_done: int
    answered: int = 0
    failed: int = 0
    calls: int = 0
    cache_hits: int = 0
    wall_s: float = 0.0
    videos_prepared: int = 0
    prepare_s: float = 0.0
    score: BenchScore | None = None  # the headline mode's (eval.extraction)
    scores: dict[str, BenchScore] = field(default_factory=dict)  # every mode
    judge_calls: int = 0
    failures: list[str] = field(default_factory=list)


def run_key(bench: Benchmark, model: ChatModel, cfg: Config) -> dict[str, Any]:
    """What makes two runs comparable; a run directory holds exactly one of these."""
    e = cfg.eval
    return {"bench": bench.name, "model": model.name, "mode": e.mode, "inputs": e.inputs,
            "prompt_style": e.prompt_style, "prompt_file": e.prompt_file,
            "counting_protocol": e.counting_protocol,
            "max_frames": cfg.video.max_frames, "fps": cfg.video.fps}


def model_identity(model: ChatModel) -> dict[str, Any]:
    """What identifies the model behind a ChatModel, not only its name: the server URL and
    served model, or the weights file's identity (a different GGUF under one name must not
    replay old replies)."""
    ident: dict[str, Any] = {"name": model.name}
    for attr in ("identity", "base_url", "model"):
        value = getattr(model, attr, None)
        if isinstance(value, str | int | float | dict):
            ident[attr] = value
    path = getattr(model, "model_path", None)
    if isinstance(path, str | os.PathLike) and str(path):
        ident["model_file"] = file_identity(os.fspath(path))
    return ident


def check_meta(out: Path, key: dict[str, Any], extra: dict[str, Any]) -> None:
    """Write meta.json, or refuse a directory that holds a different run."""
    meta = out / "meta.json"
    if meta.exists():
        old = json.loads(meta.read_text())
        diff = {k: (old.get(k), v) for k, v in key.items() if old.get(k) != v}
        if diff:
            raise RunMismatch(f"{out} holds another run ({diff}); resume with the same settings "
                              "or choose another --out")
    meta.write_text(json.dumps({**key, **extra}, indent=2))


def extracted(item: EvalItem, reply: str) -> tuple[str | None, str]:
    """The strict extraction of a reply and its rule, as predictions.jsonl records it."""
    ex = extract_number(reply) if item.kind == "count" else (
        extract_choice(reply, item.options) if item.kind == "mcq" else None)
    return (ex.value, ex.how) if ex is not None else (None, "open")


class EvalRunner:
    """One benchmark run: builds each item's messages, asks the model, appends predictions,
    runs the judge steps of the scoring, then scores in both extraction modes.

    `cache` is the run's response cache. It is keyed cheaply (the video file's identity, the
    sampling settings and the prompt text, never the ~1 MB of frames), so give the model
    itself no cache: otherwise it hashes every request body a second time."""

    def __init__(self, bench: Benchmark, cfg: Config, out: str | Path, model: ChatModel, *,
                 videos_dir: str | Path, judge: ChatModel | None = None,
                 captions: dict[str, CaptionRecord] | None = None,
                 on_done: Callable[[], None] | None = None,
                 cache: ResponseCache | None = None):
        self.bench, self.cfg, self.model, self.judge = bench, cfg, model, judge
        self.cache = cache
        self._writer: ThreadPoolExecutor | None = None  # see run()
        self._model_id = json.dumps(model_identity(model), sort_keys=True, default=str)
        self.videos_dir = Path(videos_dir).expanduser().resolve()
        self.dir = RunDir(out, cfg)
        self.preds: JsonlFile = self.dir.file("predictions.jsonl")
        self.captions = captions or {}
        self.on_done = on_done or (lambda: None)
        self._gate = asyncio.Semaphore(cfg.eval.concurrency)
        self._durations: dict[str, asyncio.Future[float]] = {}
        official = getattr(bench, "official_think_prompt", None)
        self._official = official
        self._official_temp = getattr(bench, "official_temperature", None)
        # where records go: None appends to this run directory; a Ray worker collects them for
        # its driver instead (rewatch.scale.ray_eval)
        self.emit: Emit | None = None

    # --- one item ------------------------------------------------------------------------
    def _prompt(self, item: EvalItem, duration: float | None) -> tuple[str, str]:
        e = self.cfg.eval
        if e.prompt_file:
            template = Path(e.prompt_file).expanduser().read_text(encoding="utf-8").rstrip()
            return f"file:{Path(e.prompt_file).name}", build_prompt(item, template, duration)
        name = prompt_name(item, e.mode, e.prompt_style, self._official,
                           getattr(self.bench, "official_prompts", {}).get(e.mode))
        return name, build_prompt(item, load_prompt(name), duration)

    def _temperature(self, prompt: str) -> float:
        if prompt == self._official and self._official_temp is not None:
            return self._official_temp
        return self.cfg.eval.temperature

    async def _duration(self, item: EvalItem) -> float:
        clip = clip_of(item)
        if clip:
            return clip[1] - clip[0]
        if item.duration is not None:
            return item.duration
        if item.video not in self._durations:
            from rewatch.video.io import probe

            loop = asyncio.get_running_loop()
            self._durations[item.video] = loop.run_in_executor(
                None, lambda: probe(item.video, str(self.videos_dir), check_tail=False).duration)
        return await self._durations[item.video]

    async def _messages(self, item: EvalItem, video: PreparedVideo | None
                        ) -> tuple[str, list[dict[str, Any]]]:
        inputs = self.cfg.eval.inputs
        if inputs == "frames":
            assert video is not None
            name, prompt = self._prompt(item, video.duration)
            return name, frames_messages(prompt, video)
        if inputs == "text_proxy":
            cap = caption_for(item, self.captions)
            if cap is None:
                raise LookupError(f"no caption for {item.video}; text-proxy mode needs its Stage "
                                  "1 caption (--captions captions.jsonl, or let the run caption)")
            clip = clip_of(item)
            name, prompt = self._prompt(item, (clip[1] - clip[0]) if clip else cap.duration)
            return name, text_proxy_messages(prompt, item, cap, self.cfg)
        name, prompt = self._prompt(item, await self._duration(item))
        return name, video_url_messages(prompt, item, self.cfg, self.videos_dir)

    def request_key(self, item: EvalItem, prompt: str, messages: list[dict[str, Any]],
                    temperature: float) -> str:
        """The response-cache key of one question. For frames and video_url inputs the video
        is named by its file identity plus every sampling setting, not by its encoded frames
        (hashing ~1 MB per request cost as much as sending it); text-proxy messages are small
        and are hashed whole."""
        e = self.cfg.eval
        payload: dict[str, Any] = {
            "model": self._model_id, "inputs": e.inputs, "prompt": prompt,
            "temperature": temperature, "max_tokens": e.max_tokens,
            "seed": getattr(self.model, "seed", None)}
        if e.inputs == "text_proxy":
            payload["messages"] = messages
        else:
            payload.update(video=file_identity(item.video), clip=clip_of(item), sampling={
                **frame_settings(self.cfg), "video_url_hints": e.video_url_hints,
                "video_url_base": e.video_url_base})
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
        return "eval:" + hashlib.sha256(blob.encode()).hexdigest()

    async def _chat(self, item: EvalItem, prompt_name_: str, messages: list[dict[str, Any]],
                    result: RunResult) -> Reply:
        temperature = self._temperature(prompt_name_)
        key = None
        if self.cache is not None:
            prompt = next((p.get("text", "") for p in reversed(messages[-1]["content"])
                           if p.get("type") == "text"), "") if isinstance(
                messages[-1]["content"], list) else str(messages[-1]["content"])
            key = self.request_key(item, prompt, messages, temperature)
            hit = self.cache.get(key)
            if hit is not None:
                result.cache_hits += 1
                return Reply(hit[0], None, Usage(**hit[1]), self.model.name, cached=True)
        # the model has no cache of its own here (see the class docstring), so `chat` encodes
        # the frames once, for the HTTP body
        reply = await self.model.chat(messages, temperature=temperature,
                                      max_tokens=self.cfg.eval.max_tokens)
        if not reply.cached:  # a model with a cache of its own may have answered from it
            result.calls += 1
        if key is not None and self.cache is not None and not reply.cached:
            await self._write(self.cache.put, key, self.model.name, reply.text,
                              reply.usage.__dict__)
        return reply

    async def _write(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._writer is None:
            fn(*args)
            return
        await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    async def answer(self, item: EvalItem, video: PreparedVideo | None, result: RunResult
                     ) -> dict[str, Any]:
        """One question as a function of its item: the predictions.jsonl record (the reply and
        what was extracted). Raises on a failed call (the caller records it)."""
        async with self._gate:
            name, messages = await self._messages(item, video)
            t0 = time.perf_counter()
            reply = await self._chat(item, name, messages, result)
            latency = time.perf_counter() - t0
        value, how = extracted(item, reply.text)
        return {"id": item.id, "bench": item.bench, "video": Path(item.video).name,
                "prompt": name, "reply": reply.text, "extracted": value, "how": how,
                "answer": item.answer, "usage": reply.usage.__dict__, "cached": reply.cached,
                "latency_s": round(latency, 4)}

    def _failed(self, item: EvalItem, e: BaseException, result: RunResult) -> None:
        if self.emit is not None:
            self.emit("errors.jsonl", error_record("eval", item.id, e))
        else:
            self.dir.record_error("eval", item.id, e)
        result.failed += 1

    async def _ask(self, item: EvalItem, video: PreparedVideo | None, result: RunResult) -> None:
        try:
            record = await self.answer(item, video, result)
            if self.emit is not None:
                self.emit("predictions.jsonl", record)
            else:
                await self._write(self.preds.append, record)
            result.answered += 1
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as e:  # one failed item goes to errors.jsonl; the run goes on
            self._failed(item, e, result)
            if len(result.failures) < 20:
                result.failures.append(f"{item.id}: {type(e).__name__}: {str(e)[:200]}")
        finally:
            self.on_done()

    async def ask_all(self, todo: list[EvalItem], result: RunResult) -> None:
        """Ask every item of `todo` (frames mode: each video's frames prepared once)."""
        if self.cfg.eval.inputs == "frames" and todo:
            await self._frames_mode(todo, result)
        elif todo:
            await asyncio.gather(*(self._ask(it, None, result) for it in todo))

    # --- the whole run -------------------------------------------------------------------
    async def _frames_mode(self, todo: list[EvalItem], result: RunResult) -> None:
        groups: dict[tuple[str, Any], list[EvalItem]] = {}
        for it in todo:
            groups.setdefault((it.video, clip_of(it)), []).append(it)
        pool = FramePool(self.cfg)

        async def one_video(key: tuple[str, Any], items: list[EvalItem],
                            fut: asyncio.Future[PreparedVideo]) -> None:
            try:
                try:
                    video = await fut
                except Exception as e:
                    for it in items:
                        self._failed(it, e, result)
                        self.on_done()
                    return
                await asyncio.gather(*(self._ask(it, video, result) for it in items))
            finally:
                pool.release(*key)

        try:
            tasks = []
            for key, items in groups.items():
                fut = await pool.acquire(*key)  # waits while `prepare_ahead` videos are held
                tasks.append(asyncio.create_task(one_video(key, items, fut)))
            await asyncio.gather(*tasks)
        finally:
            result.videos_prepared, result.prepare_s = pool.prepared, pool.prepare_seconds
            pool.close()

    async def run(self, items: list[EvalItem], meta: dict[str, Any] | None = None) -> RunResult:
        """Ask every item not yet in predictions.jsonl, then score the whole run directory."""
        t0 = time.perf_counter()
        check_meta(self.dir.root, run_key(self.bench, self.model, self.cfg),
                   {**(meta or {}), "items": len(items)})
        done = self.preds.ids()  # also loads the id set before the writer thread appends
        todo = [it for it in items if it.id not in done]
        result = RunResult(self.dir.root, len(items), len(items) - len(todo))
        hits0 = self.model.stats["cache_hits"]  # a model with its own cache counts there
        # cache writes and prediction appends fsync (~4 ms each here): one writer thread does
        # them in order, so the event loop keeps sending requests meanwhile
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eval-write")
        try:
            if self.cfg.backend == "ray" and todo:
                from rewatch.scale.ray_eval import ask_on_ray

                ask_on_ray(self, todo, result)
            else:
                await self.ask_all(todo, result)
        finally:
            self._writer.shutdown(wait=True)
            self._writer = None
        result.cache_hits += self.model.stats["cache_hits"] - hits0
        e = self.cfg.eval
        result.scores, result.judge_calls = await score_run_async(
            self.bench, items, self.dir.root, seed=e.seed, think=e.mode == "think",
            judge=self.judge, concurrency=e.concurrency, cot_score=e.cot_score)
        result.score = result.scores[e.extraction]
        result.wall_s = time.perf_counter() - t0
        write_scores(self.dir.root, result.scores, e.extraction, {
            "wall_s": round(result.wall_s, 3), "calls": result.calls,
            "cache_hits": result.cache_hits, "failed_this_run": result.failed,
            "judge_calls": result.judge_calls})
        return result
