"""The object-level captioner: the embedded default M_cap, behind the same chat interface as a VLM.

It reads the request a VLM would get (chunk duration, frame timestamps, shot changes, then
`image_url` frames each labelled `<τs>`) and answers `{"lines": [{"start", "end", "text"}]}` with
short timestamped sentences, times relative to the chunk:

    [00:01-00:01] A red circle appears on the left.
    [00:01-00:05] The red circle moves right, from the left to the centre.
    [00:06-00:06] The red circle disappears.

Per shot it finds objects and follows them from frame to frame with classical vision (OpenCV):
- plain background (most of the frame one colour, as in generated videos): every region of
  another colour is an object;
- still camera over a textured scene: regions that differ from the shot's median frame (things
  that move or come and go; what never moves is scenery);
- moving camera: no objects (they cannot be told from the scenery); the pan or tilt is said.
Each object has a named colour, a shape (circle, square, rectangle, triangle, tall figure,
blob), a position (left/centre/right, top/bottom), a size, when it appears and leaves, and its
motion direction and speed; a line gives the count whenever it changes. A shot line gives the
background or dominant colours and the camera motion; on textured scenes an ImageNet label
(EfficientNet-Lite0) is added only above a confidence floor, hedged ("may show"). It sees no
actions, identities, text, sound or intent: docs/stage1-captions.md has its measured recall and
precision on generated videos with known ground truth.
"""

from __future__ import annotations

import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from rewatch.models.cache import ResponseCache
from rewatch.models.tagger import FrameCaptioner, TagRequest, imagenet_tags
from rewatch.video.stats import NAMED_COLOURS, colour_labels

CAPTIONER_VERSION = "2"
WORK_W = 320  # frames are analysed at most this wide
_NAMES = list(NAMED_COLOURS)
_RGB = np.array([NAMED_COLOURS[n] for n in _NAMES], np.float32)
SHAPES = ("circle", "square", "rectangle", "triangle")  # outlines told apart with confidence
# a motion's pace, in frame sizes per second: "slowly" below, "quickly" above
SLOW_BELOW, QUICK_ABOVE = 0.1, 0.3
_NUMBER_WORDS = "no one two three four five six seven eight nine ten".split()


def colour_name(rgb: np.ndarray) -> str:
    """The nearest named colour of one RGB value."""
    d = ((_RGB - np.asarray(rgb, np.float32)[None, :]) ** 2).sum(1)
    return _NAMES[int(d.argmin())]


def count_word(n: int) -> str:
    return _NUMBER_WORDS[n] if 0 <= n < len(_NUMBER_WORDS) else str(n)


@dataclass
class Blob:
    """One object found in one frame."""

    colour: str
    shape: str
    cx: float  # centroid, fraction of width / height
    cy: float
    area: float  # fraction of the frame
    touches_edge: bool


@dataclass
class Track:
    """One object followed through a shot."""

    seen: list[tuple[int, Blob]] = field(default_factory=list)  # (frame index, blob)
    missed: int = 0

    @property
    def colour(self) -> str:
        return Counter(b.colour for _, b in self.seen).most_common(1)[0][0]

    @property
    def shape(self) -> str:
        shapes = Counter(b.shape for _, b in self.seen if not b.touches_edge) or Counter(
            b.shape for _, b in self.seen)
        return shapes.most_common(1)[0][0]

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


def position_words(cx: float, cy: float) -> str:
    """'on the left', 'at the top right', 'in the centre'..."""
    h = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else ""
    v = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else ""
    if h and v:
        return f"at the {v} {h}"
    if h:
        return f"on the {h}"
    if v:
        return f"at the {v}"
    return "in the centre"


def place_word(cx: float) -> str:
    return "the left" if cx < 1 / 3 else "the right" if cx > 2 / 3 else "the centre"


def size_word(area: float) -> str:
    return "small" if area < 0.01 else "large" if area > 0.06 else ""


def classify_shape(contour: np.ndarray, area_px: float, touches_edge: bool) -> str:
    """Circle, square, rectangle, triangle, tall figure or blob from the outline."""
    import cv2

    perimeter = cv2.arcLength(contour, True)
    if perimeter <= 0 or area_px < 12:
        return "blob"
    x, y, w, h = cv2.boundingRect(contour)
    extent = area_px / max(w * h, 1)
    aspect = w / max(h, 1)
    circularity = 4 * math.pi * area_px / perimeter**2
    vertices = len(cv2.approxPolyDP(contour, 0.04 * perimeter, True))
    if not touches_edge:
        if extent > 0.88 and vertices <= 6:
            return "square" if 0.8 <= aspect <= 1.25 else "rectangle"
        if vertices in (3, 4) and 0.38 < extent < 0.62:
            return "triangle"
        if circularity > 0.78 and 0.68 < extent < 0.86 and 0.75 <= aspect <= 1.33:
            return "circle"
    if h > 1.8 * w and extent > 0.3:
        return "tall figure"
    return "blob"


def find_blobs(mask: np.ndarray, rgb: np.ndarray, min_area: float) -> list[Blob]:
    """Connected regions of `mask` with their colour (interior mean) and shape."""
    import cv2

    h, w = mask.shape
    n, labels, stats, cents = cv2.connectedComponentsWithStats(  # type: ignore[call-overload]
        mask.astype(np.uint8), connectivity=8)
    out = []
    for i in range(1, n):
        area = stats[i, cv2.CC_STAT_AREA]
        if area < min_area * h * w:
            continue
        comp = (labels == i).astype(np.uint8)
        inner = cv2.erode(comp, np.ones((3, 3), np.uint8))
        pixels = rgb[inner.astype(bool)] if inner.sum() >= 4 else rgb[comp.astype(bool)]
        x, y, bw, bh = (stats[i, k] for k in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP,
                                              cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT))
        edge = x <= 0 or y <= 0 or x + bw >= w or y + bh >= h
        contours, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        contour = max(contours, key=cv2.contourArea)
        out.append(Blob(colour_name(np.median(pixels, 0)),
                        classify_shape(contour, float(area), edge),
                        float(cents[i][0] / w), float(cents[i][1] / h), float(area / (h * w)),
                        edge))
    return out


def camera_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Global translation (dx, dy) in pixels from frame a to frame b (phase correlation)."""
    import cv2

    ga = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gb = cv2.cvtColor(b, cv2.COLOR_RGB2GRAY).astype(np.float32)
    (dx, dy), response = cv2.phaseCorrelate(ga, gb)
    return (float(dx), float(dy)) if response > 0.05 else (0.0, 0.0)


class ObjectCaptioner(FrameCaptioner):
    """M_cap's embedded stand-in: objects, their motion and counts, shots and camera motion."""

    _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="objects")

    def __init__(self, model: str = "opencv-objects", *, cache: ResponseCache | None = None,
                 min_area: float = 0.002, plain_share: float = 0.7,
                 imagenet_floor: float = 0.5, pan_speed: float = 0.04, max_objects: int = 6):
        super().__init__(f"objects:{model}@{CAPTIONER_VERSION}", cache=cache, schema_retries=0)
        self.min_area = min_area
        self.plain_share = plain_share  # share of the frame in the background colour: "plain"
        self.imagenet_floor = imagenet_floor
        self.pan_speed = pan_speed  # frame widths per second of global shift: the camera moves
        self.max_objects = max_objects  # per shot (half of it on textured scenes)

    # --- the chunk --------------------------------------------------------------------------
    def describe(self, req: TagRequest) -> list[dict[str, Any]]:
        """The captioner's lines for one chunk, times relative to it, sorted by start."""
        order = np.argsort(req.times, kind="stable")
        times = [req.times[i] for i in order]
        frames = [_work(req.images[i]) for i in order]
        shots = _split_shots(times, req.shot_changes, req.duration)
        lines: list[dict[str, Any]] = []
        for k, (idx, start, end) in enumerate(shots):
            lead = "New shot"
            if k == 0 and start <= 0 and not req.at_cut:
                lead = "The shot goes on" if req.continues else "The video starts"
            lines += self._shot(lead, idx, start, end, times, frames,
                                [req.images[order[i]] for i in idx])
        return sorted(lines, key=lambda x: (x["start"], x["end"]))

    def _shot(self, lead: str, idx: list[int], start: float, end: float, times: list[float],
              frames: list[np.ndarray], images: list[Image.Image]) -> list[dict[str, Any]]:
        shot_frames = [frames[i] for i in idx]
        shot_times = [times[i] for i in idx]
        span = max(shot_times[-1] - shot_times[0], 1e-6)
        shifts = [camera_shift(a, b) for a, b in zip(shot_frames, shot_frames[1:], strict=False)]
        dx = float(np.median([s[0] for s in shifts])) if shifts else 0.0
        dy = float(np.median([s[1] for s in shifts])) if shifts else 0.0
        steps = max(len(shifts), 1)
        width = shot_frames[0].shape[1]
        vx, vy = dx * steps / span / width, dy * steps / span / width
        median = np.median(np.stack(shot_frames), 0).astype(np.uint8)
        bg_rgb = np.median(_border(median), 0)
        dist = np.linalg.norm(median.astype(np.float32) - bg_rgb[None, None, :], axis=-1)
        plain = float((dist < 40).mean()) >= self.plain_share
        # over a plain background a camera move cannot be seen: a global shift is an object's
        moving_camera = not plain and math.hypot(vx, vy) > self.pan_speed
        scene = self._scene_words(median, plain, bg_rgb, images)
        camera = ""
        if moving_camera:
            # content moving left means the camera turns right
            pan = ("pans right" if vx < 0 else "pans left") if abs(vx) >= abs(vy) else (
                "tilts down" if vy < 0 else "tilts up")
            camera = f" The camera {pan}."
        elif not plain:
            camera = " The camera is still."
        out = [_line(start, end, f"{lead}: {scene}.{camera}")]
        if moving_camera:
            return out
        per_frame = []
        for f in shot_frames:
            if plain:
                d = np.linalg.norm(f.astype(np.float32) - bg_rgb[None, None, :], axis=-1)
                fg = d > 60
                blobs = find_blobs(_clean(fg), f, self.min_area)
                if len(blobs) <= self.max_objects:
                    # split by named colour, so touching shapes of two colours stay two; a
                    # many-coloured thing (a textured object) stays one region
                    labels = colour_labels(f)
                    split = [b for idx in np.unique(labels[fg])
                             for b in find_blobs(_clean(fg & (labels == idx)), f, self.min_area)]
                    if len(split) <= self.max_objects + 2:
                        blobs = split
                per_frame.append(blobs)
            else:
                d = np.abs(f.astype(np.int16) - median.astype(np.int16)).max(-1)
                per_frame.append(find_blobs(_clean(d > 40), f, 5 * self.min_area))
        tracks = self._track(per_frame)
        if not plain:  # on a textured scene a one-frame region is noise more often than not
            tracks = [t for t in tracks if len(t.seen) >= 2]
        # the most salient objects: largest over the longest time
        keep = self.max_objects if plain else self.max_objects // 2
        ranked = sorted(tracks, key=lambda t: -sum(b.area for _, b in t.seen))[:keep]
        tracks = [t for t in tracks if t in ranked]
        out += self._track_lines(tracks, shot_times, start, end)
        return out

    def _scene_words(self, median: np.ndarray, plain: bool, bg_rgb: np.ndarray,
                     images: list[Image.Image]) -> str:
        if plain:
            return f"a plain {colour_name(bg_rgb)} background"
        from rewatch.video.stats import colour_shares, thumbnail

        shares = colour_shares(thumbnail(Image.fromarray(median)), min_share=0.15)
        words = " and ".join(c for c, _ in shares[:2]) or "mixed colours"
        text = f"a scene in mostly {words}"
        tags = imagenet_tags([images[len(images) // 2]], top_k=1,
                             min_confidence=self.imagenet_floor)[0]
        if tags:
            name, p = tags[0]
            text += f"; it may show {_article(name)} {name} (ImageNet guess, {p:.2f})"
        return text

    # --- objects across frames ----------------------------------------------------------------
    @staticmethod
    def _track(per_frame: list[list[Blob]], max_jump: float = 0.3) -> list[Track]:
        """Greedy frame-to-frame matching by colour, then nearest centroid; a track survives
        one missed frame."""
        done: list[Track] = []
        active: list[Track] = []
        for i, blobs in enumerate(per_frame):
            pairs = []
            for ti, t in enumerate(active):
                last = t.seen[-1][1]
                for bi, b in enumerate(blobs):
                    if b.colour != last.colour or (
                            b.shape in SHAPES and t.shape in SHAPES and b.shape != t.shape):
                        continue
                    d = math.hypot(b.cx - last.cx, b.cy - last.cy)
                    if d <= max_jump * (1 + t.missed):
                        pairs.append((d, ti, bi))
            used_t: set[int] = set()
            used_b: set[int] = set()
            for _d, ti, bi in sorted(pairs):
                if ti in used_t or bi in used_b:
                    continue
                used_t.add(ti)
                used_b.add(bi)
                active[ti].seen.append((i, blobs[bi]))
                active[ti].missed = 0
            still = []
            for ti, t in enumerate(active):
                if ti in used_t:
                    still.append(t)
                elif t.missed < 1:
                    t.missed += 1
                    still.append(t)
                else:
                    done.append(t)
            active = still + [Track([(i, b)]) for bi, b in enumerate(blobs) if bi not in used_b]
        return sorted(done + active, key=lambda t: (t.seen[0][0], t.seen[0][1].cx))

    def _track_lines(self, tracks: list[Track], times: list[float], start: float,
                     end: float) -> list[dict[str, Any]]:
        out = []
        n_frames = len(times)
        events: list[tuple[float, int]] = []  # (time, +1 appear / -1 leave) for counts
        for t in tracks:
            first_i, first = t.seen[0]
            last_i, last = t.seen[-1]
            size = size_word(float(np.median([b.area for _, b in t.seen])))
            what = f"{size} {t.name}".strip()
            article = _cap(_article(what))
            t0 = times[first_i]
            if first_i == 0:
                out.append(_line(start, start, f"{article} {what} is "
                                 f"{position_words(first.cx, first.cy)}."))
            else:
                out.append(_line(t0, t0, f"{article} {what} appears "
                                 f"{position_words(first.cx, first.cy)}."))
            events.append((start if first_i == 0 else t0, +1))
            t1 = times[last_i]
            dxy = (last.cx - first.cx, last.cy - first.cy)
            dist = math.hypot(*dxy)
            if last_i > first_i and dist > 0.08:
                direction = (("right" if dxy[0] > 0 else "left") if abs(dxy[0]) >= abs(dxy[1])
                             else ("down" if dxy[1] > 0 else "up"))
                speed = dist / max(t1 - t0, 1e-6)
                pace = "slowly" if speed < SLOW_BELOW else "quickly" if speed > QUICK_ABOVE else ""
                path = ""
                if place_word(first.cx) != place_word(last.cx):
                    path = f", from {place_word(first.cx)} to {place_word(last.cx)}"
                manner = f" {pace}" if pace else ""
                out.append(_line(t0, t1, f"The {t.name} moves {direction}{manner}{path}."))
            elif last_i - first_i >= 2:
                out.append(_line(t0, t1, f"The {t.name} stays still "
                                 f"{position_words(last.cx, last.cy)}."))
            if last_i < n_frames - 1:
                gone = times[last_i + 1]
                edge = last.touches_edge or min(last.cx, 1 - last.cx, last.cy, 1 - last.cy) < 0.12
                verb = "moves out of view" if edge and dist > 0.08 else "disappears"
                out.append(_line(gone, gone, f"The {t.name} {verb}."))
                events.append((gone, -1))
        # one line per change of the number of objects on screen
        count = 0
        by_time: dict[float, int] = {}
        for when, delta in sorted(events):
            by_time[when] = by_time.get(when, 0) + delta
        for when in sorted(by_time):
            if by_time[when] == 0:
                continue
            count += by_time[when]
            if count > 1 or (count == 1 and by_time[when] < 0):
                noun = "object is" if count == 1 else "objects are"
                out.append(_line(when, when, f"{_cap(count_word(count))} {noun} on screen now."))
        return out


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _line(start: float, end: float, text: str) -> dict[str, Any]:
    return {"start": round(start, 3), "end": round(max(end, start), 3), "text": text}


def _work(img: Image.Image) -> np.ndarray:
    if img.width <= WORK_W:
        return np.asarray(img.convert("RGB"))
    h = max(2, round(img.height * WORK_W / img.width))
    return np.asarray(img.convert("RGB").resize((WORK_W, h), Image.Resampling.BILINEAR))


def _border(rgb: np.ndarray, width: int = 3) -> np.ndarray:
    return np.concatenate([rgb[:width].reshape(-1, 3), rgb[-width:].reshape(-1, 3),
                           rgb[:, :width].reshape(-1, 3), rgb[:, -width:].reshape(-1, 3)]
                          ).astype(np.float32)


def _clean(mask: np.ndarray) -> np.ndarray:
    import cv2

    m: Any = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return np.asarray(cv2.morphologyEx(m, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)))


def _split_shots(times: list[float], changes: list[float] | None, duration: float
                 ) -> list[tuple[list[int], float, float]]:
    """Frame indices per shot with the shot's start and end (relative seconds)."""
    cuts = sorted(c for c in (changes or []) if 0 < c < duration)
    bounds = [0.0, *cuts, duration]
    shots = []
    for a, b in zip(bounds, bounds[1:], strict=False):
        idx = [i for i, t in enumerate(times) if a <= t < b or (b == duration and t == b)]
        if idx:
            shots.append((idx, a, b))
    return shots


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"
