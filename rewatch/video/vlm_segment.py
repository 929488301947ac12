"""M_seg as the paper has it: a VLM sees a long video at a low frame rate and says where its
semantically coherent parts begin (`video.segmenter: vlm`; the embedded default is shots).

Only videos over `chunk_s` are segmented (the paper: ~10-minute chunks, for narrative
integrity). For each chunk mark k·chunk_s the VLM gets the chunk_s window centred on the mark
(the span in which `chunk_spans` may place that boundary), frames at `segmenter_fps`, each after
its `<τs>` label, and replies with the times τ where a new part begins (schema
`SegmentBoundaries`). Each time is made absolute and snapped to the nearest shot cut within one
frame step (1/segmenter_fps: the VLM cannot place a boundary finer than its frames); the chunk
boundary is then the VLM boundary nearest each mark (`chunk_spans`).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from rewatch.config import ModelSpec, VideoConfig
from rewatch.schema import mmss
from rewatch.video.io import VideoInfo
from rewatch.video.sampling import image_part, span_frames

if TYPE_CHECKING:
    from rewatch.models.base import ChatModel, Message
    from rewatch.models.cache import ResponseCache

log = logging.getLogger(__name__)


class Boundary(BaseModel):
    """Where a new part of the video begins, in seconds from the window start."""

    time: float
    why: str = Field("", max_length=80)


class SegmentBoundaries(BaseModel):
    """M_seg's reply for one window."""

    boundaries: list[Boundary] = Field(max_length=24)


def segmenter_windows(duration: float, chunk_s: float) -> list[tuple[float, float]]:
    """The chunk_s windows centred on each chunk mark that `chunk_spans` will place (none for a
    video of at most chunk_s)."""
    out = []
    k = 1
    while duration > chunk_s and duration - k * chunk_s >= chunk_s / 4:
        mark = k * chunk_s
        out.append((round(max(0.0, mark - chunk_s / 2), 3),
                    round(min(duration, mark + chunk_s / 2), 3)))
        k += 1
    return out


def segment_messages(frames: list[Any], t_start: float, t_end: float, fps: float
                     ) -> list[Message]:
    """The M_seg request for one window: the prompt, then each frame after its `<τs>` label."""
    from rewatch.text import load_prompt

    text = load_prompt("segment.md").format(duration=t_end - t_start, start=mmss(t_start),
                                            end=mmss(t_end), nframes=len(frames), step=1 / fps)
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    for f in frames:
        content.append({"type": "text", "text": f"<{f.timestamp - t_start:.2f}s>"})
        content.append(image_part(f.image))
    return [{"role": "user", "content": content}]


def snap(times: list[float], cuts: list[float], tolerance: float) -> list[float]:
    """Each time moved to the nearest shot cut within `tolerance` seconds (kept where none is)."""
    out = []
    for t in times:
        near = min(cuts, key=lambda c: abs(c - t), default=None)
        out.append(near if near is not None and abs(near - t) <= tolerance else t)
    return sorted(set(out))


async def ask_boundaries(path: str | Path, cfg: VideoConfig, info: VideoInfo, model: ChatModel
                         ) -> list[float]:
    """The VLM's part boundaries over every window, in absolute seconds (not yet snapped);
    times outside their window are dropped and counted in the log."""
    found: list[float] = []
    dropped = 0
    for a, b in segmenter_windows(info.duration, cfg.chunk_s):
        frames = await asyncio.to_thread(span_frames, path, a, b, cfg.segmenter_fps, cfg,
                                         info=info)
        reply = await model.chat(segment_messages(frames, a, b, cfg.segmenter_fps),
                                 schema=SegmentBoundaries)
        for x in reply.parsed.boundaries:
            if 0 < x.time < b - a:
                found.append(round(a + x.time, 3))
            else:
                dropped += 1
    if dropped:
        log.warning("%s: M_seg gave %d boundaries outside their window; dropped", path, dropped)
    return sorted(set(found))


def vlm_boundaries(path: str | Path, cfg: VideoConfig, info: VideoInfo, cut_times: list[float],
                   vlm: ModelSpec | None, cache: ResponseCache | None = None) -> list[float]:
    """Chunk boundary candidates of a long video from the VLM, snapped to shot cuts; the shot
    cuts themselves when the VLM names no boundary. Runs its own event loop and model client
    (call it from a thread, as `caption_video` does through `segment`)."""
    from rewatch.models.registry import build_model

    if vlm is None:
        raise ValueError("video.segmenter=vlm needs the VLM's model entry "
                         "(video.segmenter_model, a key of models)")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("segment() with video.segmenter=vlm runs its own event loop: call it "
                           "from a thread (asyncio.to_thread), not inside a coroutine")

    async def go() -> list[float]:
        model = build_model(vlm, cache)
        try:
            return await ask_boundaries(path, cfg, info, model)
        finally:
            close = getattr(model, "aclose", None)
            if close is not None:
                await close()

    found = asyncio.run(go())
    if not found:
        log.warning("%s: M_seg named no part boundary; chunks follow the shot cuts", path)
        return cut_times
    snapped = snap(found, cut_times, 1 / cfg.segmenter_fps)
    log.info("%s: M_seg boundaries %s, snapped to cuts: %s", path, found, snapped)
    return snapped
