"""Stage 1: hierarchical dynamic-frame-rate captions (ReWatch-R1, key design 1).

Low rate segmenting (M_seg: shots or a VLM, ~10-minute chunks), high rate describing (M_cap on
consecutive windows of each chunk at the caption frame rate, lines with times τ relative to the
window), timestamp realignment t = t_start + τ into one detailed caption C_detail, then the
summary C_sum = M_sum(C_detail), hierarchical when C_detail does not fit one summarizer call.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from rewatch.config import Config
from rewatch.models.base import ChatModel, ContextLengthError, Message
from rewatch.models.registry import Models
from rewatch.schema import CaptionLine, CaptionRecord, VideoRecord, mmss
from rewatch.store import Emit, RunDir, error_record, stable_id
from rewatch.text import load_prompt
from rewatch.video.io import VideoInfo, probe
from rewatch.video.sampling import image_part, span_frames
from rewatch.video.segment import Segmentation, segment

log = logging.getLogger(__name__)

STAGE = "caption"
SUMMARY_TOKENS = 120  # the summarizer's reply (the schema allows 240 characters)
LABEL_SLACK = 0.006  # frame labels and the window length are written to 0.01 s


class RelativeLine(BaseModel):
    """One line from M_cap, `start`/`end` in seconds from the window start (τ)."""

    start: float
    end: float
    text: str = Field(min_length=1)


class ChunkCaption(BaseModel):
    """M_cap's reply for one window: D_rel = {(c_ij, τ_ij)}."""

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
    caption_calls: int = 0  # M_cap windows asked (one call each)
    caption_lines: int = 0
    summary_calls: int = 0
    summary_cut_chars: int = 0  # C_detail characters no summarizer call saw (a line too long)
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
    seg = (v.segmenter, v.segmenter_fps, cfg.models[v.segmenter_model].model
           ) if v.segmenter == "vlm" else ()
    return stable_id("caption", vid, captioner, summarizer, c.fps, c.frames_per_call,
                     cfg.models[c.summarizer].n_ctx, v.min_pixels, v.max_pixels,
                     v.total_pixels, v.chunk_s, v.shot_threshold, *seg)


def frame_windows(t_start: float, t_end: float, fps: float, frames_per_call: int
                    ) -> list[tuple[float, float]]:
    """Consecutive windows of equal length covering [t_start, t_end], each short enough for
    `frames_per_call` frames at `fps` (one M_cap call each)."""
    length = t_end - t_start
    k = max(1, math.ceil(length * fps / frames_per_call - 1e-9))
    bounds = [round(t_start + i * length / k, 3) for i in range(k)] + [t_end]
    return list(zip(bounds, bounds[1:], strict=False))


def chunk_messages(frames: list[Any], t_start: float, t_end: float,
                   cuts: list[float]) -> list[Message]:
    """The M_cap request for one window: prompt text, then each frame after its `<τs>` label."""
    rel = [round(f.timestamp - t_start, 2) for f in frames]
    inside = [round(c - t_start, 2) for c in cuts if t_start < c < t_end]
    place = "the start of the video"
    if t_start > 0:
        cut_here = any(abs(c - t_start) < 0.5 for c in cuts)
        place = f"{mmss(t_start)} of the video, " + (
            "at a shot change" if cut_here else "in the middle of a shot that began earlier")
    text = load_prompt("caption.md").format(
        duration=math.floor((t_end - t_start) * 100 + 1e-6) / 100,  # never past the end
        nframes=len(frames), place=place,
        timestamps=", ".join(f"{t:.2f}" for t in rel),
        shot_changes=", ".join(f"{c:.2f}" for c in inside) or "none")
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    for tau, f in zip(rel, frames, strict=True):
        content.append({"type": "text", "text": f"<{tau:.2f}s>"})
        content.append(image_part(f.image))
    return [{"role": "user", "content": content}]


def realign(lines: list[RelativeLine], t_start: float, t_end: float
            ) -> tuple[list[CaptionLine], int]:
    """Absolute lines t = t_start + τ, clipped into [t_start, t_end]; returns (lines, clipped).
    Overshoots within LABEL_SLACK are our own rounding of the labels, not counted."""
    out, clipped = [], 0
    length = t_end - t_start
    for line in lines:
        s, e = line.start, line.end
        if (s < -LABEL_SLACK or e > length + LABEL_SLACK or e < s - LABEL_SLACK
                or s > length + LABEL_SLACK):
            clipped += 1
        s = min(max(s, 0.0), length)
        e = min(max(e, s), length)
        out.append(CaptionLine(start=round(t_start + s, 3), end=round(t_start + e, 3),
                               text=line.text.strip()))
    return out, clipped


@dataclass
class Summarized:
    """C_sum and how it was made: calls, levels of the hierarchy, characters no call saw."""

    text: str
    calls: int = 0
    levels: int = 1
    cut_chars: int = 0


def pack_lines(lines: list[str], budget: int) -> tuple[list[list[str]], int]:
    """Consecutive whole lines in groups of at most `budget` characters; a single line over the
    budget is cut to it. Returns (groups, characters cut)."""
    groups: list[list[str]] = [[]]
    size = cut = 0
    for ln in lines:
        if len(ln) > budget:
            cut += len(ln) - budget
            ln = ln[:budget]
        if groups[-1] and size + len(ln) + 1 > budget:
            groups.append([])
            size = 0
        groups[-1].append(ln)
        size += len(ln) + 1
    return groups, cut


async def summarize(detail: list[CaptionLine], summarizer: ChatModel, budget: int
                    ) -> Summarized:
    """C_sum = M_sum(C_detail). C_detail over `budget` characters (the summarizer's context) is
    summarised hierarchically: summaries of consecutive parts, then summaries of those, until
    one call holds them all. Characters a call could not hold are counted, never dropped
    silently."""
    out = Summarized("", calls=0, levels=0)

    async def one(prompt: str, text: str) -> str:
        content = load_prompt(prompt).format(detail=text or "(no caption lines)")
        reply = await summarizer.chat([{"role": "user", "content": content}], schema=Summary,
                                      max_tokens=SUMMARY_TOKENS)
        out.calls += 1
        return tidy_summary(reply.parsed.summary)

    rec = CaptionRecord(id="", video_id="", video_path="", duration=0, detail=detail,
                        summary="", captioner="")
    lines = rec.detail_text().splitlines()
    spans = [(x.start, x.end) for x in detail]
    prompt = "summary.md"
    while True:
        room = budget - len(load_prompt(prompt))
        if room < 2 * (len(mmss(0)) * 2 + 260):  # two part summaries must fit one call
            raise ContextLengthError(f"{summarizer.name}: a {budget}-character summary budget "
                                     f"leaves {room} for the caption; raise "
                                     "models.<summarizer>.n_ctx")
        groups, cut = pack_lines(lines, room)
        out.cut_chars += cut
        out.levels += 1
        if len(groups) == 1:
            out.text = await one(prompt, "\n".join(groups[0]))
            break
        parts = await asyncio.gather(*(one(prompt, "\n".join(g)) for g in groups))
        new_spans, i = [], 0
        for g in groups:
            new_spans.append((spans[i][0], spans[i + len(g) - 1][1]))
            i += len(g)
        spans = new_spans
        lines = [f"[{mmss(a)}-{mmss(b)}] {p}" for (a, b), p in zip(spans, parts, strict=True)]
        prompt = "summary_parts.md"
    if out.cut_chars:
        log.warning("%s: %d caption characters did not fit a summarizer call (a line over the "
                    "%d-character budget) and were not summarised", summarizer.name,
                    out.cut_chars, budget)
    return out


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
    """C_detail: M_cap on consecutive windows of every chunk at the caption rate (`caption_fps`
    = synth.caption.fps, at most frames_per_call frames a call), each window's lines realigned
    t = t_start + τ; a line repeated verbatim across a seam without a cut is one line. Windows
    run `concurrency` (the captioner's model entry) at a time: that many windows' frames are
    held at once. Returns (lines sorted by time, lines clipped into their window)."""
    c = cfg.synth.caption
    spec = cfg.models.get(c.captioner)
    gate = asyncio.Semaphore(spec.concurrency if spec is not None else 1)
    windows = [w for a, b in seg.chunks for w in frame_windows(a, b, c.fps, c.frames_per_call)]

    async def one(t_start: float, t_end: float) -> tuple[list[CaptionLine], int]:
        # windows are half-open: a frame at t_end is the next window's (often a cut's first)
        end = t_end if t_end >= info.duration - 1e-6 else t_end - 1e-3
        async with gate:
            frames = await asyncio.to_thread(span_frames, path, t_start, end, c.fps, cfg.video,
                                             max_frames=c.frames_per_call, info=info)
            reply = await captioner.chat(chunk_messages(frames, t_start, t_end, seg.cut_times),
                                         schema=ChunkCaption)
        return realign(reply.parsed.lines, t_start, t_end)

    results = await asyncio.gather(*(one(a, b) for a, b in windows))
    detail: list[CaptionLine] = []
    for (t_start, _end), (lines, _n) in zip(windows, results, strict=True):
        detail = join_seam(detail, lines, t_start, seg.cut_times)
    detail.sort(key=lambda x: (x.start, x.end))
    return detail, sum(n for _lines, n in results)


def join_seam(before: list[CaptionLine], lines: list[CaptionLine], seam: float,
              cuts: list[float]) -> list[CaptionLine]:
    """`before` + `lines` of the next window; where the seam is not a shot cut, a line that
    starts at the seam with the same text as one ending there continues it (one line)."""
    if not before or any(abs(c - seam) < 0.5 for c in cuts):
        return before + lines
    ending = {x.text: i for i, x in enumerate(before) if abs(x.end - seam) < 1e-3}
    out = list(before)
    for x in lines:
        i = ending.get(x.text)
        if i is not None and abs(x.start - seam) < 1e-3:
            out[i] = CaptionLine(start=out[i].start, end=x.end, text=x.text)
        else:
            out.append(x)
    return out


async def caption_video(path: str | Path, cfg: Config, models: Models, *,
                        info: VideoInfo | None = None, seg: Segmentation | None = None,
                        stats: CaptionStats | None = None) -> tuple[VideoRecord, CaptionRecord]:
    """Stage 1 on one video: segment, caption each chunk's windows, realign, summarise (calls,
    lines and cut characters are added to `stats` when given)."""
    c = cfg.synth.caption
    captioner, summarizer = models[c.captioner], models[c.summarizer]
    vid = video_id(path)
    if info is None:
        info = await asyncio.to_thread(probe, path, cfg.video.root)
    if seg is None:
        vlm = cfg.models[cfg.video.segmenter_model] if cfg.video.segmenter == "vlm" else None
        seg = await asyncio.to_thread(segment, path, cfg.video, info, vlm, models.cache)
    detail, clipped = await detail_caption(path, cfg, captioner, info, seg)
    budget = cfg.models[c.summarizer].prompt_chars(SUMMARY_TOKENS)
    summary = await summarize(detail, summarizer, budget)
    video = VideoRecord(id=vid, path=str(path), duration=info.duration, fps=info.fps,
                        frames=info.frames, width=info.width, height=info.height,
                        rotation=info.rotation, has_audio=info.has_audio, shots=seg.shots,
                        chunks=seg.chunks)
    caption = CaptionRecord(id=caption_id(vid, cfg, captioner.name, summarizer.name),
                            video_id=vid, video_path=str(path), duration=info.duration,
                            detail=detail, summary=summary.text, captioner=captioner.name,
                            clipped_lines=clipped)
    windows = sum(len(frame_windows(a, b, c.fps, c.frames_per_call)) for a, b in seg.chunks)
    log.info("%s: %d caption lines from %d M_cap windows, summary in %d call(s) over %d "
             "level(s)", path, len(detail), windows, summary.calls, summary.levels)
    if stats is not None:
        stats.caption_calls += windows
        stats.caption_lines += len(detail)
        stats.summary_calls += summary.calls
        stats.summary_cut_chars += summary.cut_chars
    return video, caption


def caption_key(path: str | Path, cfg: Config, models: Models) -> str:
    """The caption record id `path` gets with this config (resume: skip it when written)."""
    c = cfg.synth.caption
    return caption_id(video_id(path), cfg, models[c.captioner].name, models[c.summarizer].name)


async def caption_item(path: str | Path, cfg: Config, models: Models, emit: Emit,
                       stats: CaptionStats, done: Container[str] = ()) -> None:
    """Stage 1 as a function of one video: its videos.jsonl and captions.jsonl records (or its
    errors.jsonl line) go to `emit`; a caption id in `done` is skipped. Both drivers (the
    asyncio one below, rewatch.scale's Ray one) call this."""
    vid = stable_id("video", str(path))  # replaced by the real id once the file is read
    try:
        vid = video_id(path)
        if caption_key(path, cfg, models) in done:
            stats.skipped += 1
            return
        video, caption = await caption_video(path, cfg, models, stats=stats)
        emit("videos.jsonl", video)
        emit("captions.jsonl", caption)
        stats.captioned += 1
        stats.clipped_lines += caption.clipped_lines
        stats.video_seconds += video.duration
    except Exception as e:  # noqa: BLE001 - every failure is recorded, the run goes on
        stats.failed += 1
        stats.failures.append(f"{path}: {e}")
        emit("errors.jsonl", error_record(STAGE, vid, e))


def log_stats(stats: CaptionStats) -> None:
    log.info("stage 1: %d captioned, %d skipped, %d failed, %d lines clipped, %d M_cap calls, "
             "%d summary calls, %d characters not summarised, %.1f s of video in %.1f s",
             stats.captioned, stats.skipped, stats.failed, stats.clipped_lines,
             stats.caption_calls, stats.summary_calls, stats.summary_cut_chars,
             stats.video_seconds, stats.wall_seconds)


async def caption_videos(paths: list[str | Path], cfg: Config, run: RunDir, models: Models,
                         progress: Any = None) -> CaptionStats:
    """Stage 1 over many videos with bounded concurrency, writing videos.jsonl and
    captions.jsonl; ids already present are skipped; a failed video goes to errors.jsonl."""
    t0 = time.monotonic()
    videos, captions = run.file("videos.jsonl"), run.file("captions.jsonl")
    write = run.emitter(videos, captions)

    def emit(name: str, record: Any) -> None:
        if name != "videos.jsonl" or record.id not in videos:  # a video captioned anew
            write(name, record)

    stats = CaptionStats(videos=len(paths))
    gate = asyncio.Semaphore(cfg.synth.concurrency)
    task = progress.add_task("stage 1 captions", total=len(paths)) if progress else None

    async def one(path: str | Path) -> None:
        try:
            async with gate:
                await caption_item(path, cfg, models, emit, stats, captions.ids())  # live set
        finally:
            if progress is not None:
                progress.advance(task)

    await asyncio.gather(*(one(p) for p in paths))
    stats.wall_seconds = time.monotonic() - t0
    log_stats(stats)
    return stats
