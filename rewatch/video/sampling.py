"""Frame sampling that reproduces qwen-vl-utils 0.0.14 exactly (frame counts, indices, sizes).

Frames = duration x fps, clamped to [min_frames, max_frames] and floored to a multiple of 2;
indices = round(linspace(first, last, n)) with torch's float32 linspace and half-to-even rounding;
each frame is resized to multiples of 28 within the per-frame pixel budget. The decoder picks its
strategy per video: one threaded sequential pass when samples are closer than keyframes, a seek
per sample when they are far apart. See docs/video.md.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import av
from PIL import Image

from rewatch.config import VideoConfig
from rewatch.video.io import VideoError, VideoInfo, keyframe_interval, open_container, probe

FRAME_FACTOR = 2
IMAGE_FACTOR = 28
VIDEO_FRAME_MAX_PIXELS = 768 * IMAGE_FACTOR * IMAGE_FACTOR  # qwen-vl-utils VIDEO_MAX_TOKEN_NUM
MAX_RATIO = 200

Strategy = Literal["auto", "sequential", "seek"]


@dataclass
class Frame:
    """One sampled frame: its index in the video, its time in seconds, and the RGB image."""

    index: int
    timestamp: float
    image: Image.Image


def _floor2(x: float) -> int:
    return math.floor(x / FRAME_FACTOR) * FRAME_FACTOR


def smart_nframes(total_frames: int, video_fps: float, *, fps: float = 2.0, min_frames: int = 4,
                  max_frames: int = 192) -> int:
    """How many frames to sample (qwen-vl-utils `smart_nframes` with `fps`)."""
    if total_frames < FRAME_FACTOR or video_fps <= 0:
        raise ValueError(f"cannot sample from {total_frames} frames at {video_fps} fps")
    lo = math.ceil(min_frames / FRAME_FACTOR) * FRAME_FACTOR
    hi = _floor2(max_frames)
    n = total_frames / video_fps * fps
    n = _floor2(min(min(max(n, lo), hi), total_frames))
    if not FRAME_FACTOR <= n <= total_frames:
        raise ValueError(f"nframes should be in [{FRAME_FACTOR}, {total_frames}], got {n}")
    return n


def frame_indices(total_frames: int, nframes: int, *, first: int = 0,
                  last: int | None = None) -> list[int]:
    """Evenly spaced indices, `round(linspace(first, last, n))` exactly as torch computes them."""
    import torch  # torch's float32 linspace decides ties; numpy's float64 does not match it

    last = total_frames - 1 if last is None else last
    return torch.linspace(first, last, nframes).round().long().tolist()


def frame_range(total_frames: int, video_fps: float, start: float | None,
                end: float | None) -> tuple[int, int, int]:
    """First frame, last frame and frame count of a time span (qwen-vl-utils convention)."""
    if start is None and end is None:
        return 0, total_frames - 1, total_frames
    max_dur = total_frames / video_fps
    first = math.ceil(max(0.0, min(start, max_dur)) * video_fps) if start is not None else 0
    last = total_frames - 1
    if end is not None:
        last = min(math.floor(max(0.0, min(end, max_dur)) * video_fps), total_frames - 1)
    if first >= last:
        raise ValueError(f"empty span {start}-{end}s of a {max_dur:.2f}s video")
    return first, last, last - first + 1


def smart_resize(height: int, width: int, *, factor: int = IMAGE_FACTOR,
                 min_pixels: int = 4 * 28 * 28, max_pixels: int = 16384 * 28 * 28
                 ) -> tuple[int, int]:
    """(height, width) as multiples of `factor` with pixels in [min_pixels, max_pixels]."""
    if max_pixels < min_pixels:
        raise ValueError("max_pixels must be >= min_pixels")
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(f"aspect ratio over {MAX_RATIO}: {width}x{height}")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = math.floor(height / beta / factor) * factor
        w = math.floor(width / beta / factor) * factor
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def frame_max_pixels(nframes: int, cfg: VideoConfig) -> int:
    """Per-frame pixel cap: qwen-vl-utils caps it at total_pixels / n x 2 as well."""
    budget = max(min(VIDEO_FRAME_MAX_PIXELS, cfg.total_pixels / nframes * FRAME_FACTOR),
                 int(cfg.min_pixels * 1.05))
    return int(min(cfg.max_pixels, budget))


def frame_size(height: int, width: int, nframes: int, cfg: VideoConfig) -> tuple[int, int]:
    """The (height, width) every sampled frame is resized to."""
    return smart_resize(height, width, factor=IMAGE_FACTOR, min_pixels=cfg.min_pixels,
                        max_pixels=frame_max_pixels(nframes, cfg))


def choose_strategy(info: VideoInfo, indices: Sequence[int], kf_interval: float) -> Strategy:
    """Seek per sample when samples lie at least a keyframe interval apart, else decode through."""
    if len(indices) < 2:
        return "seek"
    spacing_s = (indices[-1] - indices[0]) / (len(indices) - 1) / info.fps
    return "seek" if spacing_s >= kf_interval else "sequential"


def decode_indices(path: str | Path, indices: Sequence[int], info: VideoInfo, *,
                   root: str | None = None, size: tuple[int, int] | None = None,
                   strategy: Strategy = "auto") -> list[Frame]:
    """The frames at `indices` (sorted, duplicates kept), resized to `size` = (h, w) if given."""
    if not indices:
        return []
    wanted = sorted(set(indices))
    kf = 1.0
    if strategy == "auto":
        kf = keyframe_interval(path, root)
        strategy = choose_strategy(info, wanted, kf)
    container = open_container(path, root)
    got: dict[int, Frame] = {}
    cur = -1
    want = set(wanted)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO" if strategy == "sequential" else "SLICE"
        decoder: Iterator[tuple[int, float, Any]] | None = None
        last: tuple[int, float, Any] | None = None
        for target in wanted:
            far = (target - cur) / info.fps > kf
            if decoder is None or (strategy == "seek" and far):
                if target > 0:
                    container.seek(int((info.start_time + target / info.fps) / stream.time_base),
                                   stream=stream, backward=True)
                decoder = _decoded(container, stream, info, want)
            hit = None
            for item in decoder:
                cur = item[0]
                last = item
                if cur >= target:
                    hit = item
                    break
            if hit is None:
                # containers often promise a frame or two more than they hold
                if last is None or target - last[0] > max(3, info.fps):
                    raise VideoError("truncated", path, f"frame {target} of {info.frames} is "
                                     f"missing (decoding stopped at {last[0] if last else -1})")
                hit = last
            got[target] = Frame(target, hit[1], _to_image(hit[2], size))
    except av.error.FFmpegError as e:
        raise VideoError("corrupt", path, f"decoding failed near frame {cur}: {e}") from None
    finally:
        container.close()
    return [got[i] for i in indices]


def _decoded(container: Any, stream: Any, info: VideoInfo,
             want: set[int]) -> Iterator[tuple[int, float, Any]]:
    """Decoded frames as (index, seconds, frame) from the container's current position.

    Non-reference frames that are not wanted are never decoded (`skip_frame`, set per packet
    from its timestamp): nothing depends on them, so the wanted frames' pixels are unchanged.
    Indices come from timestamps (exact for constant-frame-rate video).
    """
    cc = stream.codec_context
    tb = stream.time_base
    t0 = info.start_time
    for packet in container.demux(stream):
        if packet.pts is not None and packet.size:
            index = round((float(packet.pts * tb) - t0) * info.fps)
            cc.skip_frame = "DEFAULT" if index in want else "NONREF"
        else:
            cc.skip_frame = "DEFAULT"
        for frame in cc.decode(packet):
            if frame.pts is None:
                continue
            t = float(frame.pts * tb) - t0
            yield round(t * info.fps), t, frame


def _to_image(frame: Any, size: tuple[int, int] | None) -> Image.Image:
    img = frame.to_image()
    if size is not None and (img.height, img.width) != size:
        img = img.resize((size[1], size[0]), Image.Resampling.BICUBIC)
    return img


def sample_frames(path: str | Path, cfg: VideoConfig, *, start: float | None = None,
                  end: float | None = None, fps: float | None = None,
                  max_frames: int | None = None, resize: bool = True,
                  info: VideoInfo | None = None, strategy: Strategy = "auto") -> list[Frame]:
    """Frames of a video (or of [start, end] seconds) as Qwen2.5-VL would receive them."""
    info = info or probe(path, cfg.root, check_tail=False)
    first, last, total = frame_range(info.frames, info.fps, start, end)
    n = smart_nframes(total, info.fps, fps=cfg.fps if fps is None else fps,
                      min_frames=cfg.min_frames,
                      max_frames=cfg.max_frames if max_frames is None else max_frames)
    idx = frame_indices(total, n, first=first, last=last)
    size = frame_size(info.height, info.width, n, cfg) if resize else None
    return decode_indices(path, idx, info, root=cfg.root, size=size, strategy=strategy)


def span_frames(path: str | Path, start: float, end: float, fps: float, cfg: VideoConfig, *,
                max_frames: int | None = None, info: VideoInfo | None = None) -> list[Frame]:
    """Frames of the span [start, end] seconds at `fps`, at most `max_frames` (evenly spaced)."""
    return sample_frames(path, cfg, start=start, end=end, fps=fps, max_frames=max_frames,
                         info=info)


def frames_at(path: str | Path, timestamps: Sequence[float], cfg: VideoConfig, *,
              resize: bool = True, info: VideoInfo | None = None) -> list[Frame]:
    """The frames shown at the given seconds (nearest frame; times are clamped to the video)."""
    info = info or probe(path, cfg.root, check_tail=False)
    idx = [min(info.frames - 1, max(0, round(t * info.fps))) for t in timestamps]
    size = frame_size(info.height, info.width, max(len(idx), 1), cfg) if resize else None
    return decode_indices(path, idx, info, root=cfg.root, size=size)


def jpeg_data_url(image: Image.Image, quality: int = 90) -> str:
    """An image as a `data:image/jpeg;base64,...` URL."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def image_part(image: Image.Image, quality: int = 90) -> dict[str, Any]:
    """An OpenAI chat `image_url` content part holding the image as base64 JPEG."""
    return {"type": "image_url", "image_url": {"url": jpeg_data_url(image, quality)}}


def load_image_part(part: dict[str, Any]) -> Image.Image:
    """The image inside an `image_url` content part with a base64 data URL (inverse of
    `image_part`)."""
    url = part["image_url"]["url"] if isinstance(part.get("image_url"), dict) else part["image_url"]
    if not url.startswith("data:") or ";base64," not in url:
        raise ValueError("only base64 data URLs are read here, got " + url[:40])
    data = base64.b64decode(url.split(";base64,", 1)[1])
    return Image.open(io.BytesIO(data)).convert("RGB")
