"""M_seg: shot boundaries with PySceneDetect on a downscaled stream, and ~10-minute chunks.

Videos longer than `chunk_s` are cut into chunks whose boundaries are the shot boundaries
nearest to each `chunk_s` mark (the paper: only videos over 10 minutes are segmented, to keep
narrative integrity); shorter videos are one chunk. Shots are recorded either way.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rewatch.config import ModelSpec, VideoConfig
from rewatch.video.io import VideoInfo, iter_frames, probe

if TYPE_CHECKING:
    from rewatch.models.cache import ResponseCache

log = logging.getLogger(__name__)


@dataclass
class Segmentation:
    """M_seg output: cut frames, shots and chunks (seconds from the start of the video)."""

    duration: float
    fps: float
    cut_frames: list[int] = field(default_factory=list)
    shots: list[tuple[float, float]] = field(default_factory=list)
    chunks: list[tuple[float, float]] = field(default_factory=list)

    @property
    def cut_times(self) -> list[float]:
        return [f / self.fps for f in self.cut_frames]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cut_times": self.cut_times}


# HistogramDetector's default: a cut where the luma histograms of consecutive frames correlate
# at 0.80 or less. It catches cuts where only the colours change (a red scene to an orange one),
# which ContentDetector's mean HSV difference scores under its threshold.
HIST_THRESHOLD = 0.20
MIN_SHOT_S = 0.3  # at least this long between cuts


def detect_cuts(path: str | Path, cfg: VideoConfig, info: VideoInfo | None = None) -> list[int]:
    """Frame indices where a new shot starts: PySceneDetect's ContentDetector (HSV change) and
    HistogramDetector (luma histogram change) together, so that a cut where only the colour
    changes is found too; cuts the two report within `MIN_SHOT_S` of each other are one cut.

    Frames are decoded in one threaded pass and shrunk to `cfg.shot_width` pixels wide before
    the detectors see them; with `cfg.shot_fps` > 0 only that many frames per second are fed
    (docs/video.md: why every frame is the default).
    """
    from scenedetect.common import FrameTimecode
    from scenedetect.detectors import ContentDetector, HistogramDetector

    info = info or probe(path, cfg.root, check_tail=False)
    step = 1 if cfg.shot_fps <= 0 else max(1, round(info.fps / cfg.shot_fps))
    rate = info.fps / step
    width = min(cfg.shot_width, info.width) // 2 * 2
    height = max(2, round(width * info.height / info.width) // 2 * 2)
    min_len = max(1, round(MIN_SHOT_S * rate))  # counted in frames the detectors see
    detectors = [ContentDetector(threshold=cfg.shot_threshold, min_scene_len=min_len),
                 HistogramDetector(threshold=HIST_THRESHOLD, min_scene_len=min_len)]
    found: set[int] = set()
    n = -1
    for index, _t, frame in iter_frames(path, cfg.root):
        if index % step:
            continue
        n = index // step
        img = frame.to_ndarray(width=width, height=height, format="bgr24")
        for d in detectors:
            found.update(tc.frame_num for tc in d.process_frame(FrameTimecode(n, rate), img))
    if n >= 0:
        for d in detectors:
            found.update(tc.frame_num for tc in d.post_process(FrameTimecode(n, rate)))
    cuts: list[int] = []
    for c in sorted(found):  # both detectors saw the same cut (a frame apart): keep the first
        if not cuts or c - cuts[-1] >= min_len:
            cuts.append(c)
    return [c * step for c in cuts if 0 < c * step < info.frames]


def shots_from_cuts(cut_frames: list[int], fps: float,
                    duration: float) -> list[tuple[float, float]]:
    """Consecutive (start, end) seconds between cuts, covering the whole video."""
    bounds = [0.0, *[f / fps for f in cut_frames], duration]
    return [(round(a, 3), round(b, 3)) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def chunk_spans(duration: float, cut_times: list[float], chunk_s: float = 600.0
                ) -> list[tuple[float, float]]:
    """~`chunk_s` chunks: each boundary is the cut nearest a multiple of `chunk_s` (within half a
    chunk), or the mark itself when no cut is near; a tail under a quarter chunk joins the last."""
    if duration <= chunk_s:
        return [(0.0, round(duration, 3))]
    bounds = [0.0]
    k = 1
    while duration - k * chunk_s >= chunk_s / 4:
        mark = k * chunk_s
        near = [t for t in cut_times
                if abs(t - mark) <= chunk_s / 2 and t > bounds[-1] + chunk_s / 4
                and duration - t >= chunk_s / 4]
        bounds.append(min(near, key=lambda t: abs(t - mark)) if near else mark)
        k += 1
    bounds.append(duration)
    return [(round(a, 3), round(b, 3)) for a, b in zip(bounds, bounds[1:], strict=False)]


def segment(path: str | Path, cfg: VideoConfig, info: VideoInfo | None = None,
            vlm: ModelSpec | None = None, cache: ResponseCache | None = None) -> Segmentation:
    """Shots and chunks of one video (M_seg); with `cfg.segmenter` vlm a long video's chunk
    boundaries come from the VLM `vlm`, snapped to shot cuts (rewatch.video.vlm_segment)."""
    info = info or probe(path, cfg.root)
    cuts = detect_cuts(path, cfg, info)
    seg = Segmentation(duration=info.duration, fps=info.fps, cut_frames=cuts)
    seg.shots = shots_from_cuts(cuts, info.fps, info.duration)
    bounds = seg.cut_times
    if cfg.segmenter == "vlm" and info.duration > cfg.chunk_s:
        from rewatch.video.vlm_segment import vlm_boundaries

        bounds = vlm_boundaries(path, cfg, info, seg.cut_times, vlm, cache)
    seg.chunks = chunk_spans(info.duration, bounds, cfg.chunk_s)
    log.debug("%s: %d shots, %d chunks", path, len(seg.shots), len(seg.chunks))
    return seg
