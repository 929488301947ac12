"""The three synthesis stages over one run directory, in order: caption → qa → cot.

Each stage reads the previous stage's records from the run and appends its own; a rerun resumes
(finished ids are skipped, finished model calls come from the cache).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewatch.clikit import progress as make_progress
from rewatch.config import Config
from rewatch.models.cache import ResponseCache
from rewatch.models.registry import Models, build_models
from rewatch.store import RunDir

log = logging.getLogger(__name__)

STAGES = ("caption", "qa", "cot")
VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv"}


@dataclass
class SynthResult:
    """What a synthesis run did: per-stage counts and wall seconds, and the model counters."""

    run: Path
    counts: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    model_stats: dict[str, dict[str, int]] = field(default_factory=dict)


def find_videos(folder: str | Path, limit: int | None = None) -> list[Path]:
    """Video files directly inside `folder` (by suffix, sorted); bad ones fail later, recorded."""
    root = Path(folder)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"no such folder: {root}")
    found = sorted(p for p in root.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    return found[:limit] if limit else found


def parse_stages(text: str) -> tuple[str, ...]:
    stages = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ValueError(f"unknown stage(s) {bad}; choose from {', '.join(STAGES)}")
    return stages


async def run_stages(videos: list[Path], cfg: Config, run: RunDir, models: Models,
                     stages: tuple[str, ...] = STAGES) -> SynthResult:
    """Run the chosen stages in the paper's order with one progress display."""
    result = SynthResult(run.root)
    with make_progress() as bar:
        for stage in STAGES:
            if stage not in stages:
                continue
            t0 = time.monotonic()
            if stage == "caption":
                from rewatch.synth.caption import caption_videos

                paths: list[str | Path] = list(videos)
                stats = await caption_videos(paths, cfg, run, models, progress=bar)
                counts = {k: v for k, v in vars(stats).items() if k != "failures"}
            elif stage == "qa":
                from rewatch.synth.qa import generate_qa

                counts = await generate_qa(run, cfg, models, progress=bar)
            else:
                from rewatch.synth.cot import synthesize_cot

                counts = await synthesize_cot(run, cfg, models, progress=bar)
            result.seconds[stage] = time.monotonic() - t0
            result.counts[stage] = dict(counts)
            log.info("stage %s done in %.1f s: %s", stage, result.seconds[stage], counts)
    result.model_stats = {k: dict(v) for k, v in models.stats().items()}
    return result


async def synthesize(videos: list[Path], cfg: Config, out: str | Path,
                     stages: tuple[str, ...] = STAGES) -> SynthResult:
    """Open (or resume) the run directory `out` and run the stages on `videos`, in this process
    (`backend: local`) or on Ray (`backend: ray`, rewatch.scale.ray_backend)."""
    if cfg.backend == "ray":
        from rewatch.scale.ray_backend import synthesize as synthesize_on_ray

        return synthesize_on_ray(videos, cfg, out, stages)  # type: ignore[no-any-return]
    run = RunDir(out, cfg)
    models = build_models(cfg, ResponseCache(run.cache_path) if cfg.cache else None)
    try:
        return await run_stages(videos, cfg, run, models, stages)
    finally:
        await models.aclose()


async def score_chains(run: RunDir, cfg: Config,
                       cache: ResponseCache | None = None) -> dict[str, Any]:
    """Score every kept chain (cot.jsonl) with the O&R reward into rewards.jsonl (same ids)."""
    from rewatch.reward.judges import build_judge
    from rewatch.reward.orr import RewardWeights, score_many
    from rewatch.schema import CaptionRecord, CoTRecord

    rewards = run.file("rewards.jsonl")
    captions = {r["video_id"]: CaptionRecord.model_validate(r)
                for r in run.file("captions.jsonl").read()}
    todo = [c for c in (CoTRecord.model_validate(r) for r in run.file("cot.jsonl").read())
            if c.id not in rewards and c.video_id in captions]
    items = [{"response": c.cot, "answer": c.answer, "question": c.question,
              "options": c.options, "caption": captions[c.video_id].detail_text()} for c in todo]
    judge = build_judge(cfg, "config", cache)
    weights = RewardWeights.from_config(cfg.reward)
    step = max(1, cfg.synth.concurrency)
    for i in range(0, len(todo), step):  # written batch by batch: a kill loses one batch
        scored = await score_many(items[i:i + step], judge=judge, weights=weights,
                                  concurrency=step)
        for chain, b in zip(todo[i:i + step], scored, strict=True):
            rewards.append({"id": chain.id, **b.to_dict()})
    rows = list(rewards.read())
    means = {k: _mean([r.get(k) for r in rows]) for k in ("overall", "acc", "obs", "rea", "fmt")}
    return {"scored": len(todo), "total": len(rows),
            "failed": sum(bool(r.get("failed")) for r in rows), **means}


def _mean(xs: list[Any]) -> float | None:
    vals = [float(x) for x in xs if x is not None]
    return round(sum(vals) / len(vals), 3) if vals else None
