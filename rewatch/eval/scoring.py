"""Scoring a run directory in both extraction modes: the predictions, the judge steps of the
official (and strict) scoring with their outputs kept in `judgments.jsonl`, and what is written
back (`scores.json`, `scored.jsonl`). Needs no model but the judge, and that only for steps not
judged yet."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rewatch.eval.benchmarks.base import (
    MODES,
    Benchmark,
    BenchScore,
    EvalItem,
    JudgeRequest,
    Mode,
    ScoreOptions,
)
from rewatch.models.base import ChatModel
from rewatch.store import JsonlFile, RunDir


def read_predictions(path: str | Path) -> tuple[dict[str, str], dict[str, str]]:
    """Replies (id -> raw text) and, from runs before judgments.jsonl existed, the strict
    judge's verdicts (as `open_judge:<id>` -> "true"/"false"); the last line of an id wins."""
    replies: dict[str, str] = {}
    judgments: dict[str, str] = {}
    for rec in JsonlFile(path).read():
        if "id" in rec and isinstance(rec.get("reply"), str):
            replies[str(rec["id"])] = rec["reply"]
            if isinstance(rec.get("judge"), bool):
                judgments[f"open_judge:{rec['id']}"] = "true" if rec["judge"] else "false"
    return replies, judgments


def reply_hash(reply: str) -> str:
    """A short hash of a model reply: a judgment is valid only for the reply it judged."""
    return hashlib.sha256(reply.encode()).hexdigest()[:16]


class Judgments:
    """`judgments.jsonl`: the judge model's raw output for each LLM step of the scoring of
    each item, with the hash of the reply it judged (a changed reply is judged again)."""

    def __init__(self, run_dir: str | Path):
        self.file = JsonlFile(Path(run_dir) / "judgments.jsonl")

    def valid(self, replies: dict[str, str]) -> dict[str, str]:
        """key -> output for the judgments whose reply is still the current one."""
        out: dict[str, str] = {}
        for rec in self.file.read():
            rid, key = str(rec.get("reply_id") or rec.get("id")), rec.get("key")
            if (isinstance(key, str) and isinstance(rec.get("output"), str) and rid in replies
                    and rec.get("reply_sha") == reply_hash(replies[rid])):
                out[key] = rec["output"]
        return out

    def append(self, req: JudgeRequest, output: str, judge: str) -> None:
        """Record one judge output."""
        rec = {"id": req.item_id, "key": req.key, "step": req.step, "judge": judge,
               "reply_sha": reply_hash(req.reply), "output": output,
               "prompt_sha": hashlib.sha256(req.prompt.encode()).hexdigest()[:16]}
        if req.reply_id is not None and req.reply_id != req.item_id:
            rec["reply_id"] = req.reply_id
        self.file.append(rec)


async def run_judges(bench: Benchmark, items: list[EvalItem], replies: dict[str, str],
                     judgments: dict[str, str], *, seed: int, think: bool, judge: ChatModel,
                     store: Judgments, concurrency: int = 8, on_error: Callable[
                         [JudgeRequest, Exception], None] | None = None,
                     cot_score: bool = False) -> int:
    """Ask the judge every LLM step the scoring of `replies` still needs, in both modes,
    in rounds (VCR-Bench grades what its extraction step returned); returns the calls made.
    A failed step is reported to `on_error` and left unjudged."""
    gate = asyncio.Semaphore(max(1, concurrency))
    calls = 0
    failed: set[str] = set()

    async def ask(req: JudgeRequest) -> None:
        nonlocal calls
        async with gate:
            try:
                reply = await judge.chat([{"role": "user", "content": req.prompt}],
                                         temperature=req.temperature, max_tokens=req.max_tokens)
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as e:  # one failed judge call leaves that step unjudged
                failed.add(req.key)
                if on_error:
                    on_error(req, e)
                return
        calls += 1
        judgments[req.key] = reply.text
        store.append(req, reply.text, judge.name)

    for _ in range(4):  # extraction, then grading: two rounds suffice; two spare
        todo: dict[str, JudgeRequest] = {}
        for mode in MODES:
            opts = ScoreOptions(mode=mode, seed=seed, think=think, judgments=judgments,
                                cot_score=cot_score)
            for req in bench.judge_requests(items, replies, opts):
                if req.key not in failed:
                    todo.setdefault(req.key, req)
        if not todo:
            break
        await asyncio.gather(*(ask(r) for r in todo.values()))
    return calls


def score_modes(bench: Benchmark, items: list[EvalItem], replies: dict[str, str],
                judgments: dict[str, str], *, seed: int = 0, think: bool = False,
                cot_score: bool = False) -> dict[str, BenchScore]:
    """The scores of `replies` in every extraction mode."""
    return {mode: bench.score(items, replies, ScoreOptions(
        mode=mode, seed=seed, think=think, judgments=judgments, cot_score=cot_score))
            for mode in MODES}


async def score_run_async(bench: Benchmark, items: list[EvalItem], run_dir: str | Path, *,
                          seed: int = 0, think: bool = False, judge: ChatModel | None = None,
                          concurrency: int = 8, cot_score: bool = False
                          ) -> tuple[dict[str, BenchScore], int]:
    """Both modes' scores of a run directory's predictions; with a judge, the LLM steps not
    yet in judgments.jsonl are run first. Writes scored.jsonl."""
    root = Path(run_dir)
    replies, legacy = read_predictions(root / "predictions.jsonl")
    store = Judgments(root)
    judgments = {**legacy, **store.valid(replies)}
    calls = 0
    if judge is not None:

        rundir = RunDir(root)

        def on_error(req: JudgeRequest, e: Exception) -> None:
            rundir.record_error(f"eval_judge:{req.step}", req.item_id, e)

        calls = await run_judges(bench, items, replies, judgments, seed=seed, think=think,
                                 judge=judge, store=store, concurrency=concurrency,
                                 on_error=on_error, cot_score=cot_score)
    scores = score_modes(bench, items, replies, judgments, seed=seed, think=think,
                         cot_score=cot_score)
    write_scored(root, scores, replies)
    return scores, calls


def score_run(bench: Benchmark, items: list[EvalItem], run_dir: str | Path, *,
              mode: Mode = "official", seed: int = 0, think: bool | None = None) -> BenchScore:
    """One mode's scores from a run directory's predictions and stored judgments (no model
    is needed); `think` defaults to the run's mode in meta.json."""
    if think is None:
        think = run_meta(run_dir).get("mode") == "think"
    scores, _ = asyncio.run(score_run_async(bench, items, run_dir, seed=seed, think=think))
    return scores[mode]


def run_meta(run_dir: str | Path) -> dict[str, Any]:
    """meta.json of a run directory ({} when absent)."""
    p = Path(run_dir) / "meta.json"
    return json.loads(p.read_text()) if p.exists() else {}


def write_scored(run_dir: str | Path, scores: dict[str, BenchScore],
                 replies: dict[str, str]) -> Path:
    """scored.jsonl: one line per item and mode (id, mode, reply, extracted answer, the rule
    that found it, correct, status, guessed), so two runs or two modes diff item by item."""
    out = Path(run_dir) / "scored.jsonl"
    tmp = out.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for mode, score in scores.items():
            group_ok: dict[str, bool] = {}
            for o in score.outcomes:
                if o.group is not None:
                    group_ok[o.group] = group_ok.get(o.group, True) and o.correct
            for o in score.outcomes:
                rec: dict[str, Any] = {
                    "id": o.id, "mode": mode, "reply": replies.get(o.id), "extracted": o.predicted,
                    "how": o.how, "correct": o.correct, "status": o.status, "guessed": o.guessed}
                if o.needs_judge:
                    rec["needs_judge"] = True
                if o.error is not None:
                    rec["error"] = o.error
                if o.group is not None:
                    rec.update(group=o.group, group_correct=group_ok[o.group])
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, out)
    return out


def write_scores(run_dir: str | Path, scores: dict[str, BenchScore], primary: Mode,
                 stats: dict[str, Any]) -> Path:
    """scores.json: meta, the headline mode's score (`score`), every mode (`scores`), and the
    run's statistics."""
    out = Path(run_dir) / "scores.json"
    meta = run_meta(run_dir)
    out.write_text(json.dumps({
        "meta": meta, "extraction": primary, "score": scores[primary].to_dict(),
        "scores": {m: s.to_dict() for m, s in scores.items()}, "run": stats},
        indent=2, default=str))
    return out
