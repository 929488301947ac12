"""Measurable frame statistics for the frame tagger: named colours, brightness, motion, people,
foreground regions, shot changes. Each is a plain measurement with a known failure mode
(docs/stage1-captions.md lists them); none of it is scene understanding.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image

# Named colours (RGB): the tagger's colour vocabulary and the synthetic videos' palette.
NAMED_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 190, 60), "blue": (40, 70, 230),
    "yellow": (240, 220, 40), "white": (245, 245, 245), "orange": (245, 140, 20),
    "purple": (140, 50, 190), "black": (10, 10, 10), "gray": (128, 128, 128),
    "navy": (20, 25, 90), "dark green": (15, 70, 30), "maroon": (100, 20, 30),
    "pink": (240, 150, 190), "brown": (125, 80, 40), "cyan": (40, 200, 210),
    "light gray": (190, 190, 190), "dark gray": (60, 60, 60),
}
_NAMES = list(NAMED_COLOURS)
_RGB = np.array([NAMED_COLOURS[n] for n in _NAMES], np.float32)
THUMB_W = 96  # statistics run on thumbnails this wide


def thumbnail(img: Image.Image, width: int = THUMB_W) -> np.ndarray:
    """An RGB uint8 array `width` pixels wide (aspect kept)."""
    h = max(2, round(img.height * width / img.width))
    return np.asarray(img.convert("RGB").resize((width, h), Image.Resampling.BILINEAR))


def colour_labels(rgb: np.ndarray) -> np.ndarray:
    """Per pixel, the index of the nearest named colour."""
    px = rgb.reshape(-1, 3).astype(np.float32)
    d = ((px[:, None, :] - _RGB[None, :, :]) ** 2).sum(-1)
    return d.argmin(1).reshape(rgb.shape[:2])


def colour_shares(rgb: np.ndarray, min_share: float = 0.01) -> list[tuple[str, float]]:
    """Named colours covering at least `min_share` of the frame, largest first."""
    labels = colour_labels(rgb)
    counts = np.bincount(labels.ravel(), minlength=len(_NAMES)) / labels.size
    order = np.argsort(-counts)
    return [(_NAMES[i], float(counts[i])) for i in order if counts[i] >= min_share]


def brightness(rgb: np.ndarray) -> float:
    """Mean luma in [0, 1]."""
    luma = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    return float(luma.mean() / 255.0)


def brightness_word(value: float) -> str:
    return "dark" if value < 0.25 else "dim" if value < 0.45 else (
        "medium" if value < 0.65 else "bright")


def regions(rgb: np.ndarray, min_bg: float = 0.85, min_area: float = 0.003) -> int | None:
    """Connected regions that differ in named colour from a near-uniform background; None when
    the frame has no dominant background colour (the count would mean nothing)."""
    import cv2

    labels = colour_labels(rgb)
    counts = np.bincount(labels.ravel(), minlength=len(_NAMES))
    bg = int(counts.argmax())
    if counts[bg] / labels.size < min_bg:
        return None
    mask = (labels != bg).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    n, _lab, stats, _c = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return int(sum(1 for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_area * labels.size))


def motion(prev: np.ndarray, cur: np.ndarray, dt: float) -> tuple[float, float, str | None]:
    """(share of pixels moving, speed in frame widths per second, direction or None) from dense
    optical flow (Farneback) between two thumbnails `dt` seconds apart."""
    import cv2

    a = cv2.cvtColor(prev, cv2.COLOR_RGB2GRAY)
    b = cv2.cvtColor(cur, cv2.COLOR_RGB2GRAY)
    if a.shape != b.shape:
        return 0.0, 0.0, None
    flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 9, 3, 5, 1.1, 0)  # type: ignore
    mag = np.linalg.norm(flow, axis=-1)
    moving = mag > 0.5
    share = float(moving.mean())
    if share < 0.003 or dt <= 0:
        return share, 0.0, None
    vx, vy = flow[moving].mean(0)
    speed = math.hypot(vx, vy) / a.shape[1] / dt
    if math.hypot(vx, vy) < 0.3:
        return share, speed, None  # movement without a common direction (e.g. zoom, shaking)
    direction = ("right" if vx > 0 else "left") if abs(vx) >= abs(vy) else (
        "down" if vy > 0 else "up")
    return share, speed, direction


def content_change(prev: np.ndarray, cur: np.ndarray) -> float:
    """Mean HSV difference (0-255 scale), PySceneDetect's ContentDetector score without edges."""
    import cv2

    pa = cv2.cvtColor(prev, cv2.COLOR_RGB2HSV).astype(np.int16)
    pb = cv2.cvtColor(cur, cv2.COLOR_RGB2HSV).astype(np.int16)
    if pa.shape != pb.shape:
        return 255.0
    return float(np.abs(pa - pb).mean())


@lru_cache(maxsize=1)
def _hog():  # type: ignore[no-untyped-def]
    import cv2

    if not hasattr(cv2, "HOGDescriptor"):  # OpenCV 5 moved HOG to the contrib build
        return None
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    return hog


def people_detector_available() -> bool:
    """Whether the installed OpenCV has the HOG people detector."""
    return _hog() is not None


def people(img: Image.Image, min_weight: float = 0.6) -> int | None:
    """Upright people found by OpenCV's HOG people detector (needs people >= ~100 px tall);
    None when the installed OpenCV has no HOG detector."""
    hog = _hog()
    if hog is None:
        return None
    import cv2

    rgb = np.asarray(img.convert("RGB"))
    scale = 480 / max(rgb.shape[1], 1)
    if scale > 1:
        rgb = cv2.resize(rgb, None, fx=scale, fy=scale)
    rects, weights = hog.detectMultiScale(rgb, winStride=(8, 8), padding=(8, 8), scale=1.05)
    return int(sum(1 for w in np.ravel(weights) if w >= min_weight)) if len(rects) else 0
