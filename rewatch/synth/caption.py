"""Stage 1: hierarchical dynamic-frame-rate captions (ReWatch-R1, key design 1).

Low rate segmenting (M_seg: shots, ~10-minute chunks), high rate describing (M_cap on each chunk's
frames, lines with times τ relative to the chunk), timestamp realignment t = t_start + τ into one
detailed caption C_detail, then the summary C_sum = M_sum(C_detail).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from rewatch.config import Config
from rewatch.models.base import ChatModel, Message
from rewatch.models.registry import Models
from rewatch.schema import CaptionLine, CaptionRecord, VideoRecord
from rewatch.store import RunDir, stable_id
from rewatch.video.io import VideoInfo, probe
from rewatch.video.sampling import image_part, span_frames
from rewatch.video.segment import Segmentation, segment

log = logging.getLogger(__name__)

PROMPTS = Path(__file__).parent / "prompts"
STAGE = "caption"
SUMMARY_CHARS = 6000  # C_detail text per summarizer call (the embedded LLM has 4096 tokens)


def load_prompt(name: str) -> str:
    """The text of a prompt file under synth/prompts/."""
    return (PROMPTS / name).read_text(encoding="utf-8")


class RelativeLine(BaseModel):
    """One line from M_cap, `start`/`end` in seconds from the chunk start (τ)."""

    start: float
    end: float
    text: str = Field(min_length=1)


class ChunkCaption(BaseModel):
    """M_cap's reply for one chunk: D_rel = {(c_ij, τ_ij)}."""

    lines: list[RelativeLine]


class Summary(BaseModel):
    """M_sum's reply: C_sum."""

    # bounded so a small model's constrained decoding must close the string in time
    summary: str = Field(min_length=1, max_length=240)


@dataclass
class CaptionStats:
    """What one `caption_videos` call did (also logged)."""

    videos: int = 0
    captioned: int = 0
    skipped: int = 0  # already in captions.jsonl (resume)
    failed: int = 0  # written to errors.jsonl
    clipped_lines: int = 0
    video_seconds: float = 0.0
    wall_seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


def video_id(path: str | Path) -> str:
    """A video's stable id: its resolved path and size (same file, same id, across runs)."""
    p = Path(path).expanduser().resolve()
    size = p.stat().st_size if p.is_file() else -1
    return stable_id("video", str(p), size)


def caption_id(vid: str, cfg: Config, captioner: str, summarizer: str) -> str:
    """The caption record id: the video plus everything that changes the captions."""
    c = cfg.synth.caption
    v = cfg.video
    return stable_id("caption", vid, captioner, summarizer, c.fps, c.max_frames_per_chunk,
                     v.min_pixels, v.max_pixels, v.total_pixels, v.chunk_s, v.shot_threshold)


def chunk_messages(frames: list[Any], t_start: float, t_end: float,
                   cuts: list[float]) -> list[Message]:
    """The M_cap request for one chunk: prompt text, then each frame after its `<τs>` label."""
    rel = [round(f.timestamp - t_start, 2) for f in frames]
    inside = [round(c - t_start, 2) for c in cuts if t_start < c < t_end]
    text = load_prompt("caption.md").format(
        duration=t_end - t_start, nframes=len(frames),
        timestamps=", ".join(f"{t:.2f}" for t in rel),
        shot_changes=", ".join(f"{c:.2f}" for c in inside) or "none")
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    for tau, f in zip(rel, frames, strict=True):
        content.append({"type": "text", "text": f"<{tau:.2f}s>"})
        content.append(image_part(f.image))
    return [{"role": "user", "content": content}]


def realign(lines: list[RelativeLine], t_start: float, t_end: float
            ) -> tuple[list[CaptionLine], int]:
    """Absolute lines t = t_start + τ, clipped into [t_start, t_end]; returns (lines, clipped)."""
    out, clipped = [], 0
    length = t_end - t_start
    for line in lines:
        s, e = line.start, line.end
        if s < 0 or e > length + 1e-6 or e < s or s > length:
            clipped += 1
            s = min(max(s, 0.0), length)
            e = min(max(e, s), length)
        out.append(CaptionLine(start=round(t_start + s, 3), end=round(t_start + e, 3),
                               text=line.text.strip()))
    return out, clipped


async def summarize(detail: list[CaptionLine], summarizer: ChatModel) -> str:
    """C_sum = M_sum(C_detail); C_detail over SUMMARY_CHARS is summarised in parts, joined."""
    rec = CaptionRecord(id="", video_id="", video_path="", duration=0, detail=detail,
                        summary="", captioner="")
    text_lines = rec.detail_text().splitlines()
    groups: list[list[str]] = [[]]
    for ln in text_lines:
        if groups[-1] and sum(len(x) + 1 for x in groups[-1]) + len(ln) > SUMMARY_CHARS:
            groups.append([])
        groups[-1].append(ln[:SUMMARY_CHARS])
    parts = []
    for g in groups:
        prompt = load_prompt("summary.md").format(detail="\n".join(g) or "(no caption lines)")
        reply = await summarizer.chat([{"role": "user", "content": prompt}], schema=Summary,
                                      max_tokens=120)
        parts.append(tidy_summary(reply.parsed.summary))
    return " ".join(p for p in parts if p)


def tidy_summary(text: str) -> str:
    """Drop repeated sentences and a trailing fragment cut off by the length limit (small models
    loop until the schema's max_length); the words themselves are the model's."""
    sentences = [x.strip() for x in re.split(r"(?<=[.!?])\s+", text.strip()) if x.strip()]
    kept: list[str] = []
    for x in sentences:
        if x not in kept:
            kept.append(x)
    if len(kept) > 1 and not kept[-1].endswith((".", "!", "?")):
        kept.pop()
    return " ".join(kept)


async def detail_caption(path: str | Path, cfg: Config, captioner: ChatModel, info: VideoInfo,
                         seg: Segmentation) -> tuple[list[CaptionLine], int]:
    """C_detail: M_cap on each chunk's frames at the high rate, realigned t = t_start + τ and
    sorted; returns (lines, lines clipped into their chunk)."""
    c = cfg.synth.caption
    detail: list[CaptionLine] = []
    clipped = 0
    for t_start, t_end in seg.chunks:
        frames = await asyncio.to_thread(span_frames, path, t_start, t_end, c.fps, cfg.video,
                                         max_frames=c.max_frames_per_chunk, info=info)
        reply = await captioner.chat(chunk_messages(frames, t_start, t_end, seg.cut_times),
                                     schema=ChunkCaption)
        lines, n = realign(reply.parsed.lines, t_start, t_end)
        detail += lines
        clipped += n
    detail.sort(key=lambda x: (x.start, x.end))
    return detail, clipped


async def caption_video(path: str | Path, cfg: Config, models: Models, *,
                        info: VideoInfo | None = None, seg: Segmentation | None = None
                        ) -> tuple[VideoRecord, CaptionRecord]:
    """Stage 1 on one video: segment, caption each chunk, realign, summarise."""
    c = cfg.synth.caption
    captioner, summarizer = models[c.captioner], models[c.summarizer]
    vid = video_id(path)
    if info is None:
        info = await asyncio.to_thread(probe, path, cfg.video.root)
    if seg is None:
        seg = await asyncio.to_thread(segment, path, cfg.video, info)
    detail, clipped = await detail_caption(path, cfg, captioner, info, seg)
    summary = await summarize(detail, summarizer)
    video = VideoRecord(id=vid, path=str(path), duration=info.duration, fps=info.fps,
                        frames=info.frames, width=info.width, height=info.height,
                        rotation=info.rotation, has_audio=info.has_audio, shots=seg.shots,
                        chunks=seg.chunks)
    caption = CaptionRecord(id=caption_id(vid, cfg, captioner.name, summarizer.name),
                            video_id=vid, video_path=str(path), duration=info.duration,
                            detail=detail, summary=summary, captioner=captioner.name,
                            clipped_lines=clipped)
    return video, caption


async def caption_videos(paths: list[str | Path], cfg: Config, run: RunDir, models: Models,
                         progress: Any = None) -> CaptionStats:
    """Stage 1 over many videos with bounded concurrency, writing videos.jsonl and
    captions.jsonl; ids already present are skipped; a failed video goes to errors.jsonl."""
    t0 = time.monotonic()
    c = cfg.synth.caption
    videos, captions = run.file("videos.jsonl"), run.file("captions.jsonl")
    cap_name, sum_name = models[c.captioner].name, models[c.summarizer].name
    stats = CaptionStats(videos=len(paths))
    gate = asyncio.Semaphore(cfg.synth.concurrency)
    task = progress.add_task("stage 1 captions", total=len(paths)) if progress else None

    async def one(path: str | Path) -> None:
        vid = stable_id("video", str(path))  # replaced by the real id once the file is read
        try:
            vid = video_id(path)
            if caption_id(vid, cfg, cap_name, sum_name) in captions:
                stats.skipped += 1
                return
            async with gate:
                video, caption = await caption_video(path, cfg, models)
            if video.id not in videos:
                videos.append(video)
            captions.append(caption)
            stats.captioned += 1
            stats.clipped_lines += caption.clipped_lines
            stats.video_seconds += video.duration
        except Exception as e:  # noqa: BLE001 - every failure is recorded, the run goes on
            stats.failed += 1
            stats.failures.append(f"{path}: {e}")
            run.record_error(STAGE, vid, e)
        finally:
            if progress is not None:
                progress.advance(task)

    await asyncio.gather(*(one(p) for p in paths))
    stats.wall_seconds = time.monotonic() - t0
    log.info("stage 1: %d captioned, %d skipped, %d failed, %d lines clipped, %.1f s of video "
             "in %.1f s", stats.captioned, stats.skipped, stats.failed, stats.clipped_lines,
             stats.video_seconds, stats.wall_seconds)
    return stats
