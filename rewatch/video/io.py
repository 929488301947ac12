"""Probe and streaming decode with PyAV. Every bad input becomes a `VideoError` that says which.

Decoding streams frames: nothing here holds a whole video in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av

log = logging.getLogger(__name__)

ErrorKind = Literal[
    "missing", "empty", "truncated", "corrupt", "not_video", "audio_only", "outside_root",
    "unreadable",
]


class VideoError(Exception):
    """A video that cannot be used; `kind` names the problem, the message says why."""

    def __init__(self, kind: ErrorKind, path: str | Path, detail: str):
        self.kind = kind
        self.path = str(path)
        super().__init__(f"{kind}: {path}: {detail}")


@dataclass(frozen=True)
class VideoInfo:
    """Probed metadata of one video (seconds, frames, pixels)."""

    path: str
    duration: float
    fps: float
    frames: int
    width: int
    height: int
    rotation: int
    has_audio: bool
    codec: str
    start_time: float  # seconds of the first video frame's timestamp (usually 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ISO-BMFF (mp4/mov) files start with a box whose type is one of these.
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")


def _looks_like_container(head: bytes) -> bool:
    return (
        head[4:8] in _MP4_BOXES
        or head.startswith(b"\x1aE\xdf\xa3")  # matroska / webm
        or head.startswith(b"RIFF")  # avi
        or head.startswith(b"OggS")
        or head.startswith(b"\x00\x00\x01\xba")  # mpeg-ps
        or head.startswith(b"FLV")
    )


def resolve_path(path: str | Path, root: str | Path | None = None) -> Path:
    """The absolute path of a video file, checked to exist, be non-empty and lie under `root`."""
    p = Path(path).expanduser()
    resolved = p.resolve()
    if root is not None:
        base = Path(root).expanduser().resolve()
        if not resolved.is_relative_to(base):
            raise VideoError("outside_root", path, f"resolves to {resolved}, outside the allowed "
                             f"root {base} (video.root); move it there or change video.root")
    if not resolved.exists():
        raise VideoError("missing", path, "no such file")
    if not resolved.is_file():
        raise VideoError("unreadable", path, "not a regular file")
    if resolved.stat().st_size == 0:
        raise VideoError("empty", path, "the file is zero bytes long")
    return resolved


def open_container(path: str | Path, root: str | Path | None = None) -> Any:
    """An open PyAV input container with a video stream, or a VideoError saying why not."""
    p = resolve_path(path, root)
    try:
        container = av.open(str(p), metadata_errors="ignore")
    except av.error.FFmpegError as e:
        with open(p, "rb") as f:
            head = f.read(16)
        if _looks_like_container(head):
            raise VideoError("truncated", path, f"a video container whose index cannot be read, "
                             f"probably cut short or corrupt ({e}); re-download or re-encode "
                             "it") from None
        raise VideoError("not_video", path, f"not a recognisable video container ({e})") from None
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        if "audio" in kinds:
            raise VideoError("audio_only", path, "the file has audio but no video stream")
        raise VideoError("not_video", path, f"no video stream (streams: {kinds or 'none'})")
    return container


def _rotation(stream: Any) -> int:
    rot = stream.metadata.get("rotate") if stream.metadata else None
    if rot is not None:
        try:
            return int(float(rot)) % 360
        except ValueError:
            return 0
    return 0


def _stream_fps(stream: Any) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def probe(path: str | Path, root: str | Path | None = None, *,
          check_tail: bool = True) -> VideoInfo:
    """Metadata of a video; with `check_tail`, also decodes one frame near the end to catch
    files that were cut short (a truncated file whose index survived)."""
    container = open_container(path, root)
    try:
        stream = container.streams.video[0]
        fps = _stream_fps(stream)
        tb = stream.time_base or Fraction(1, 1)
        start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
        if stream.duration:
            duration = float(stream.duration * tb)
        elif container.duration:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        frames = stream.frames or (round(duration * fps) if fps else 0)
        if fps <= 0 or frames <= 0 or duration <= 0:
            raise VideoError("corrupt", path, f"video stream reports fps={fps}, frames={frames}, "
                             f"duration={duration:.3f}s: nothing to decode")
        info = VideoInfo(
            path=str(Path(path)), duration=duration, fps=fps, frames=int(frames),
            width=stream.codec_context.width, height=stream.codec_context.height,
            rotation=_rotation(stream), has_audio=bool(container.streams.audio),
            codec=stream.codec_context.name or "", start_time=start,
        )
        if check_tail:
            _check_tail(container, stream, info, path)
        return info
    finally:
        container.close()


def _check_tail(container: Any, stream: Any, info: VideoInfo, path: str | Path) -> None:
    tb = stream.time_base
    target = info.start_time + max(0.0, info.duration - 1.0)
    try:
        container.seek(int(target / tb), stream=stream, backward=True)
        last = None
        for frame in container.decode(stream):
            last = frame
            if frame.pts is not None and frame.pts * tb >= target:
                break
    except av.error.FFmpegError as e:
        raise VideoError("truncated", path, f"decoding near the end ({target:.1f}s) failed: {e}; "
                         "the file is cut short or corrupt") from None
    if last is None:
        raise VideoError("truncated", path, f"no frame decodes near the end ({target:.1f}s of "
                         f"{info.duration:.1f}s): the file is cut short")


def keyframe_interval(path: str | Path, root: str | Path | None = None,
                      max_packets: int = 2000) -> float:
    """Mean seconds between keyframes, measured by demuxing (not decoding) the first packets."""
    container = open_container(path, root)
    try:
        stream = container.streams.video[0]
        tb = stream.time_base
        keys: list[float] = []
        n = 0
        for packet in container.demux(stream):
            if packet.pts is None:
                continue
            n += 1
            if packet.is_keyframe:
                keys.append(float(packet.pts * tb))
            if n >= max_packets:
                break
        if len(keys) >= 2:
            return (max(keys) - min(keys)) / (len(keys) - 1)
        fps = _stream_fps(stream)
        return n / fps if fps else float("inf")  # one keyframe in the measured stretch
    finally:
        container.close()


def iter_frames(path: str | Path, root: str | Path | None = None, *, start: float = 0.0,
                end: float | None = None, threads: bool = True) -> Iterator[tuple[int, float, Any]]:
    """Decode frames in order as `(index, seconds, av.VideoFrame)`; the index counts frames from
    the start of the video (it seeks to `start` and derives indices from timestamps)."""
    container = open_container(path, root)
    try:
        stream = container.streams.video[0]
        if threads:
            stream.thread_type = "AUTO"
        tb = stream.time_base
        fps = _stream_fps(stream)
        t0 = float(stream.start_time * tb) if stream.start_time is not None else 0.0
        if start > 0:
            container.seek(int((t0 + start) / tb), stream=stream, backward=True)
        index = None
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * tb) - t0
                if index is None or start > 0:
                    index = round(t * fps)
                if end is not None and t > end + 0.5 / fps:
                    return
                if t >= start - 0.5 / fps:
                    yield index, t, frame
                index += 1
        except av.error.FFmpegError as e:
            raise VideoError("corrupt", path, f"decoding failed after frame {index}: {e}") from None
    finally:
        container.close()
