"""F2/F3 probe accuracy is the paper's (1/|M_probe|) * sum 1(M(Q) ~ A): a member with no valid
answer counts as not correct, and the record says how many did not answer. The panel members
are played by the scripted loopback server (not a model): each probe prompt file gets its own
scripted reply."""

from __future__ import annotations

from typing import Any

import pytest
from qa_scripted import models_for, scripted_config

from rewatch.models.scripted_server import ScriptedTestServer
from rewatch.synth.qa_filters import Candidate, probe_accuracy

QUESTION = "What colour is the shape that appears at 00:08?"
# a phrase only each probe prompt file has -> what that member replies
PROMPT_MARKS = ("Give your best short answer", "You cannot see the video",
                "Answer the question about a video in at most five words")


def responder(replies: tuple[str, str, str]):
    def reply(body: dict[str, Any]) -> str:
        text = body["messages"][0]["content"]  # the probe prompt (a re-ask comes after it)
        for mark, r in zip(PROMPT_MARKS, replies, strict=True):
            if mark in text:
                return r
        raise AssertionError(f"unscripted prompt {text[:100]!r}")
    return reply


def candidate() -> Candidate:
    return Candidate(id="q1", gen_id="g1", index=0, video_id="v", question=QUESTION,
                     answer="yellow", qtype="attribute", stamps=["00:08"])


async def run(replies: tuple[str, str, str], theta: float = 0.5):
    with ScriptedTestServer(responder(replies)) as srv:
        cfg = scripted_config(srv.base_url, theta_text=theta, short_circuit=False)
        models = models_for(cfg)
        try:
            return await probe_accuracy("F2", candidate(), "", theta, cfg, models), srv
        finally:
            await models.aclose()


RIGHT, WRONG, GARBAGE = '{"answer": "yellow"}', '{"answer": "purple"}', "Sure! it is yellow"


async def test_member_without_a_valid_answer_counts_as_not_correct() -> None:
    r, srv = await run((RIGHT, GARBAGE, WRONG), theta=0.5)
    ev = r.evidence
    assert len(ev["answers"]) == 3 and ev["panel_size"] == 3
    assert ev["valid"] == 2 and ev["no_answer"] == 1 and ev["right"] == 1
    # 1 right of |M_probe| = 3, not 1 of the 2 that answered (0.5 would reject at theta 0.5)
    assert ev["accuracy"] == pytest.approx(1 / 3)
    assert r.passed and r.reason == "kept"
    bad = [a for a in ev["answers"] if "error" in a]
    assert len(bad) == 1 and bad[0]["correct"] is False
    assert bad[0]["prompt"] == "qa_probe_2.md"
    assert len(srv.requests) == 4  # the garbage member was re-asked once (schema_retries=1)


async def test_two_right_and_one_silent_is_two_thirds() -> None:
    r, _ = await run((RIGHT, RIGHT, GARBAGE), theta=0.7)
    assert r.evidence["accuracy"] == pytest.approx(2 / 3) and r.evidence["no_answer"] == 1
    assert r.passed  # 2/3 < 0.7 (the old 2/2 = 1.0 rejected it)
    r, _ = await run((RIGHT, RIGHT, GARBAGE), theta=0.6)
    assert not r.passed and r.reason == "accuracy 0.67 >= 0.6"


async def test_panel_with_no_answer_at_all_rejects() -> None:
    r, _ = await run((GARBAGE, GARBAGE, GARBAGE))
    assert not r.passed and r.reason == "probe_schema_error"
    assert r.evidence["valid"] == 0 and r.evidence["no_answer"] == 3
