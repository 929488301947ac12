"""The pixel path: with observer_uses_frames the Observer looks at real frames of the span
through the captioner (the embedded frame tagger here) instead of the caption text."""

from __future__ import annotations

import re

import pytest
from cot_scripted import Agents, answer, models_for, scripted_config, step
from cot_truth import SPEC, caption_from_truth, mcqs_from_truth

from rewatch.models.scripted_server import ScriptedTestServer
from rewatch.samples import synthetic_video
from rewatch.store import RunDir
from rewatch.synth.cot import synthesize_cot


@pytest.mark.slow
async def test_observer_reads_frames_through_the_captioner(tmp_path):
    truth = synthetic_video(tmp_path / "shapes_cuts.mp4", SPEC)
    run = RunDir(tmp_path / "run")
    run.file("captions.jsonl").append(caption_from_truth(truth))
    run.file("mcq.jsonl").append(mcqs_from_truth(truth)[0])

    def look(messages):
        n = sum(1 for m in messages if m["role"] == "assistant")
        return step("Look at the start.", "segment_query", "00:01-00:02") if n == 0 else \
            answer(messages, "B", "Decide.")

    agents = Agents(reasoner=look)
    with ScriptedTestServer(agents) as srv:
        cfg = scripted_config(srv.base_url, observer_uses_frames=True)
        models = models_for(cfg, run)
        await synthesize_cot(run, cfg, models)
        captioner_calls = models[cfg.synth.caption.captioner].stats["calls"]
    records = list(run.file("cot.jsonl").read()) + list(run.file("rejected.jsonl").read())
    obs = records[0]["trajectory"][0]["observation"]
    assert agents.calls["observer"] == 0 and captioner_calls == 1  # frames, not the caption text
    # the object captioner's sentences about the frames of 00:01-00:02: the red circle is there
    assert "red circle" in obs and "The video starts" not in obs
    stamps = re.findall(r"\[(\d{2}):(\d{2})-(\d{2}):(\d{2})\]", obs)
    assert stamps and all(1 <= int(a) * 60 + int(b) <= int(c) * 60 + int(d) <= 2
                          for a, b, c, d in stamps)
