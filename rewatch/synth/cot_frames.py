"""The Observer's pixel path (`synth.cot.observer_uses_frames`): frames of each span the tool
found, described by the captioner (a VLM server or the embedded frame tagger) instead of read
from C_detail. The request has Stage 1's caption layout, so the tagger can read it."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel

from rewatch.config import Config
from rewatch.models import ChatModel, SchemaError
from rewatch.schema import CaptionLine, CaptionRecord, mmss
from rewatch.synth.tools import ToolResult
from rewatch.text import load_prompt


class FrameLines(BaseModel):
    """A captioner's reply on the pixel path: lines with times relative to the span start."""

    lines: list[CaptionLine]


async def observer_frames(captioner: ChatModel, action: str, caption: CaptionRecord,
                          result: ToolResult, cfg: Config) -> str:
    """A_O on the pixel path: the captioner describes frames of each span the tool found."""
    from rewatch.video.sampling import image_part, span_frames

    out = []
    for start, end in result.spans:
        end = max(end, start + 1.0)
        frames = await asyncio.to_thread(span_frames, caption.video_path, start, end,
                                         cfg.synth.caption.fps, cfg.video,
                                         max_frames=cfg.synth.cot.observer_max_frames)
        rel = [round(f.timestamp - start, 2) for f in frames]
        parts: list[dict[str, Any]] = [{"type": "text", "text": load_prompt(
            "cot_observer_frames.md").format(action=action, duration=end - start,
                                             nframes=len(frames), timestamps=rel)}]
        for f, t in zip(frames, rel, strict=True):
            parts += [{"type": "text", "text": f"<{t}s>"}, image_part(f.image)]
        reply = await captioner.chat([{"role": "user", "content": parts}], schema=FrameLines)
        for line in reply.parsed.lines:
            a = min(end, start + max(0.0, line.start))
            b = min(end, max(a, start + line.end))
            out.append(f"[{mmss(a)}-{mmss(b)}] {' '.join(line.text.split())}")
    if not out:
        # an empty reply fits the schema but observes nothing: the caller ends the trajectory
        raise SchemaError("the captioner described no frame")
    return " ".join(out)
