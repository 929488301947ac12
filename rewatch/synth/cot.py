"""Stage 3: dual-agent ReAct re-watching chains of thought (paper section 3.3), the stage driver.

The agents are in `cot_agents` (Reasoner A_R, Observer A_O, `run_trajectory`), M_convert in
`cot_convert`; `validate_chain` (`cot_validate`) decides whether a converted chain is kept.
This module runs one MCQ through them (`synthesize_one`) and drives the stage over a run
(concurrency, resume, kept and rejected records).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Container
from typing import Any

from rewatch.config import Config
from rewatch.models import ModelError, Models, SchemaError
from rewatch.models.base import ContextLengthError
from rewatch.schema import CaptionRecord, CoTRecord, MCQRecord
from rewatch.store import Emit, RunDir, error_record, stable_id
from rewatch.synth.cot_agents import caption_duration, run_trajectory
from rewatch.synth.cot_convert import convert_trajectory
from rewatch.synth.cot_validate import (
    validate_chain,
)

log = logging.getLogger(__name__)
STAGE = "cot"


def cot_id(mcq: MCQRecord, cfg: Config) -> str:
    """Stable id of one chain: the MCQ and every setting that changes the trajectory."""
    c = cfg.synth.cot
    return stable_id(STAGE, mcq.id, c.model_dump(), cfg.embedder,
                     {n: cfg.models[n].model for n in (c.reasoner, c.observer, c.converter)})


async def synthesize_one(mcq: MCQRecord, caption: CaptionRecord, models: Models, cfg: Config
                         ) -> tuple[CoTRecord | None, dict[str, Any] | None]:
    """One MCQ through A_R/A_O, M_convert and validation: (kept record, None) or (None,
    rejection)."""
    rid = cot_id(mcq, cfg)
    c = cfg.synth.cot
    traj = await run_trajectory(mcq, caption, models, cfg)
    cot, avoid = None, None
    # M_convert, then validation; a chain whose prose adds words gets `convert_retries` more
    # conversions told which words (the trajectory itself is kept: its answer was right)
    for attempt in range(1 + c.convert_retries if traj.reason is None else 0):
        try:
            cot = await convert_trajectory(models[c.converter], mcq, traj, c.convert_mode,
                                           avoid, caption_duration(caption))
        except SchemaError as e:
            traj.reason, traj.detail = "invalid_converter_reply", str(e)[:300]
            break
        check = validate_chain(cot, traj.steps, mcq.answer, caption_duration(caption),
                               context=[mcq.question, *mcq.options.values()],
                               options=mcq.options)
        traj.reason, traj.detail = (None, "") if check.ok else (check.reason, check.detail)
        traj.conversions = attempt + 1
        if check.ok or check.reason != "prose_adds_facts":
            break
        avoid = sorted({*(avoid or []), *check.words})
    if traj.reason is not None:
        return None, {"stage": STAGE, "id": rid, "mcq_id": mcq.id, "video_id": mcq.video_id,
                      "reason": traj.reason, "detail": traj.detail, "cot": cot,
                      "conversions": traj.conversions,
                      "trajectory": [s.model_dump() for s in traj.steps]}
    assert cot is not None
    return CoTRecord(id=rid, mcq_id=mcq.id, video_id=mcq.video_id, question=mcq.question,
                     options=mcq.options, answer=mcq.answer, trajectory=traj.steps, cot=cot,
                     n_actions=traj.n_actions, conversions=traj.conversions), None


def _advance(progress: Any, total: int) -> Callable[[], None]:
    """A tick function for a rich Progress (a task is added), a callable(n), or nothing."""
    if progress is None:
        return lambda: None
    if hasattr(progress, "add_task"):
        task = progress.add_task("stage 3 cot", total=total)
        return lambda: progress.advance(task)
    return lambda: progress(1)


def chain_order(mcqs: list[MCQRecord], limit: int = 0) -> list[MCQRecord]:
    """The MCQs to chain, in order: every question's first item, then the second items, ...
    (by MCQ id within each round, so the choice does not depend on the order mcq.jsonl was
    written in, which differs between runs and backends); with `limit`, the first `limit`."""
    rank: dict[str, int] = {}
    keyed = []
    for m in sorted(mcqs, key=lambda x: x.id):
        rank[m.qa_id] = rank.get(m.qa_id, -1) + 1
        keyed.append((rank[m.qa_id], m.id, m))
    ordered = [m for _r, _i, m in sorted(keyed, key=lambda x: x[:2])]
    return ordered[:limit] if limit else ordered


async def chain_item(mcq: MCQRecord, caption: CaptionRecord | None, cfg: Config,
                     models: Models, emit: Emit, done: Container[str] = ()) -> str:
    """Stage 3 as a function of one MCQ: its cot.jsonl record, its rejection or its
    errors.jsonl line go to `emit`. Returns what happened: kept, rejected, skipped or errors."""
    rid = cot_id(mcq, cfg)
    try:
        if rid in done:
            return "skipped"
        if caption is None:
            emit("rejected.jsonl", {"stage": STAGE, "id": rid, "mcq_id": mcq.id,
                                    "video_id": mcq.video_id, "reason": "no_caption",
                                    "detail": "captions.jsonl has no record for this video"})
            return "rejected"
        try:
            kept, rejected = await synthesize_one(mcq, caption, models, cfg)
        except ContextLengthError as e:
            kept, rejected = None, {"stage": STAGE, "id": rid, "mcq_id": mcq.id,
                                    "video_id": mcq.video_id, "reason": "context_length",
                                    "detail": str(e)[:300]}
        if kept is not None:
            emit("cot.jsonl", kept)
            return "kept"
        emit("rejected.jsonl", rejected or {})
        return "rejected"
    except Exception as e:  # transport failures, bad videos: retried next run, logged
        if not isinstance(e, ModelError):
            log.exception("cot: %s failed", rid)
        emit("errors.jsonl", error_record(STAGE, rid, e))
        return "errors"


def chain_inputs(run: RunDir, cfg: Config) -> tuple[list[MCQRecord], dict[str, CaptionRecord]]:
    """Stage 3's work in a run: the MCQs to chain (in `chain_order`) and the captions by video."""
    captions = {r["video_id"]: CaptionRecord.model_validate(r)
                for r in run.file("captions.jsonl").read()}
    mcqs = chain_order([MCQRecord.model_validate(r) for r in run.file("mcq.jsonl").read()],
                       cfg.synth.cot.max_chains)
    return mcqs, captions


async def synthesize_cot(run: RunDir, cfg: Config, models: Models,
                         progress: Any = None) -> dict[str, int]:
    """Stage 3 over a run directory: captions.jsonl + mcq.jsonl -> cot.jsonl and rejections.

    Resumable: chains already kept or rejected are skipped, and the response cache replays the
    model calls of a chain that was cut off, so a rerun asks no model anything twice.
    `progress` is a rich Progress (as `rewatch synth` passes) or a callable taking a count.
    """
    mcqs, captions = chain_inputs(run, cfg)
    kept_file, rejected_file = run.file("cot.jsonl"), run.file("rejected.jsonl")
    emit = run.emitter(kept_file, rejected_file)
    counts = {"total": len(mcqs), "kept": 0, "rejected": 0, "skipped": 0, "errors": 0}
    done = kept_file.ids() | rejected_file.ids()
    sem = asyncio.Semaphore(max(1, cfg.synth.concurrency))
    tick = _advance(progress, len(mcqs))

    async def one(mcq: MCQRecord) -> None:
        try:
            if cot_id(mcq, cfg) in done:
                counts["skipped"] += 1
                return
            async with sem:
                what = await chain_item(mcq, captions.get(mcq.video_id), cfg, models, emit)
            counts[what] += 1
        finally:
            tick()

    await asyncio.gather(*(one(m) for m in mcqs))
    log.info("cot: %s", counts)
    return counts
