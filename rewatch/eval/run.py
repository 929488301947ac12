"""`rewatch eval run`: ask a model every question of a benchmark, with bounded concurrency, a
response cache and resume by item id (a killed run continues without repeating a call), then
score by the benchmark's official rules.

A run directory holds `meta.json` (what was run), `config.yaml`, `predictions.jsonl` (one line
per answered item: the raw reply and what was extracted), `errors.jsonl`, `cache.sqlite` and
`scores.json`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from rewatch.config import Config
from rewatch.eval.benchmarks.base import Benchmark, BenchScore, EvalItem
from rewatch.eval.extract import extract_choice, extract_number
from rewatch.eval.inputs import (
    FramePool,
    PreparedVideo,
    build_prompt,
    caption_for,
    clip_of,
    frames_messages,
    load_prompt,
    prompt_name,
    text_proxy_messages,
    video_url_messages,
)
from rewatch.models.base import ChatModel
from rewatch.schema import CaptionRecord
from rewatch.store import JsonlFile, RunDir

log = logging.getLogger(__name__)


class RunMismatch(ValueError):
    """The run directory holds a different run (benchmark, model, mode or inputs)."""


class Verdict(BaseModel):
    correct: bool


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
    score: BenchScore | None = None
    failures: list[str] = field(default_factory=list)


def run_key(bench: Benchmark, model: ChatModel, cfg: Config) -> dict[str, Any]:
    """What makes two runs comparable; a run directory holds exactly one of these."""
    e = cfg.eval
    return {"bench": bench.name, "model": model.name, "mode": e.mode, "inputs": e.inputs,
            "prompt_style": e.prompt_style, "counting_protocol": e.counting_protocol,
            "max_frames": cfg.video.max_frames, "fps": cfg.video.fps}


def check_meta(out: Path, key: dict[str, Any], extra: dict[str, Any]) -> None:
    meta = out / "meta.json"
    if meta.exists():
        old = json.loads(meta.read_text())
        diff = {k: (old.get(k), v) for k, v in key.items() if old.get(k) != v}
        if diff:
            raise RunMismatch(f"{out} holds another run ({diff}); resume with the same settings "
                              "or choose another --out")
    meta.write_text(json.dumps({**key, **extra}, indent=2))


def extracted(item: EvalItem, reply: str) -> tuple[str | None, str]:
    ex = extract_number(reply) if item.kind == "count" else (
        extract_choice(reply, item.options) if item.kind == "mcq" else None)
    return (ex.value, ex.how) if ex is not None else (None, "open")


class EvalRunner:
    """One benchmark run: builds each item's messages, asks the model, appends predictions."""

    def __init__(self, bench: Benchmark, cfg: Config, out: str | Path, model: ChatModel, *,
                 videos_dir: str | Path, judge: ChatModel | None = None,
                 captions: dict[str, CaptionRecord] | None = None,
                 on_done: Callable[[], None] | None = None):
        self.bench, self.cfg, self.model, self.judge = bench, cfg, model, judge
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

    # --- one item ------------------------------------------------------------------------
    def _prompt(self, item: EvalItem, duration: float | None) -> tuple[str, str]:
        e = self.cfg.eval
        name = prompt_name(item, e.mode, e.prompt_style, self._official)
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

    async def _ask(self, item: EvalItem, video: PreparedVideo | None, result: RunResult) -> None:
        try:
            async with self._gate:
                name, messages = await self._messages(item, video)
                t0 = time.perf_counter()
                reply = await self.model.chat(messages, temperature=self._temperature(name),
                                              max_tokens=self.cfg.eval.max_tokens)
                latency = time.perf_counter() - t0
            value, how = extracted(item, reply.text)
            record: dict[str, Any] = {
                "id": item.id, "bench": item.bench, "video": Path(item.video).name,
                "prompt": name, "reply": reply.text, "extracted": value, "how": how,
                "answer": item.answer, "usage": reply.usage.__dict__, "cached": reply.cached,
                "latency_s": round(latency, 4)}
            if item.kind == "open" and item.extra.get("answer_type") == "text" and self.judge:
                record["judge"] = await self._judge(item, reply.text)
            self.preds.append(record)
            result.answered += 1
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as e:  # one failed item goes to errors.jsonl; the run goes on
            self.dir.record_error("eval", item.id, e)
            result.failed += 1
            if len(result.failures) < 20:
                result.failures.append(f"{item.id}: {type(e).__name__}: {str(e)[:200]}")
        finally:
            self.on_done()

    async def _judge(self, item: EvalItem, reply: str) -> bool:
        from rewatch.eval.extract import answer_block, final_text

        candidate = answer_block(reply) or final_text(reply)
        assert self.judge is not None
        verdict = await self.judge.chat([{"role": "user", "content": load_prompt("judge").format(
            question=item.question, reference=item.answer, candidate=candidate[-2000:])}],
            schema=Verdict, temperature=0.0, max_tokens=32)
        return bool(verdict.parsed.correct)

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
                        self.dir.record_error("eval", it.id, e)
                        result.failed += 1
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
        done = self.preds.ids()
        todo = [it for it in items if it.id not in done]
        result = RunResult(self.dir.root, len(items), len(items) - len(todo))
        calls0 = self.model.stats["calls"]
        hits0 = self.model.stats["cache_hits"]
        if self.cfg.eval.inputs == "frames" and todo:
            await self._frames_mode(todo, result)
        elif todo:
            await asyncio.gather(*(self._ask(it, None, result) for it in todo))
        result.calls = self.model.stats["calls"] - calls0
        result.cache_hits = self.model.stats["cache_hits"] - hits0
        result.score = score_run(self.bench, items, self.dir.root)
        result.wall_s = time.perf_counter() - t0
        write_scores(self.dir.root, result.score, {
            "wall_s": round(result.wall_s, 3), "calls": result.calls,
            "cache_hits": result.cache_hits, "failed_this_run": result.failed})
        return result


def read_predictions(path: str | Path) -> tuple[dict[str, str], dict[str, bool]]:
    """Replies (id -> raw text) and judge verdicts from a predictions.jsonl (last line wins)."""
    replies: dict[str, str] = {}
    judgments: dict[str, bool] = {}
    for rec in JsonlFile(path).read():
        if "id" in rec and isinstance(rec.get("reply"), str):
            replies[str(rec["id"])] = rec["reply"]
            if isinstance(rec.get("judge"), bool):
                judgments[str(rec["id"])] = rec["judge"]
    return replies, judgments


def score_run(bench: Benchmark, items: list[EvalItem], run_dir: str | Path) -> BenchScore:
    """Official scores from a run directory's predictions: no model is needed."""
    replies, judgments = read_predictions(Path(run_dir) / "predictions.jsonl")
    return bench.score(items, replies, judgments)


def write_scores(run_dir: str | Path, score: BenchScore, stats: dict[str, Any]) -> Path:
    out = Path(run_dir) / "scores.json"
    meta_path = Path(run_dir) / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    out.write_text(json.dumps({"meta": meta, "score": score.to_dict(), "run": stats}, indent=2,
                              default=str))
    return out
