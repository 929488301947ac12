"""Stage 2 free mode over the whole caption: windows, questions spread over them, cross-window
questions, C_sum in every call, on a 1-hour caption with a scripted M_qa, judge and panel (a
loopback ScriptedTestServer, not a model)."""

from __future__ import annotations

import json
import re
from typing import Any

from rewatch.models.scripted_server import ScriptedTestServer
from rewatch.schema import CaptionLine, CaptionRecord, mmss
from rewatch.synth.qa_filters import caption_windows, line_text
from rewatch.synth.qa_free import cross_pairs, spread, window_budget
from rewatch.synth.tools import parse_timestamp
from tests.qa_scripted import Panel, Q, make_run, rows, run_stage, scripted_config

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black", "pink"]
SHAPES = ["circle", "square", "triangle", "star"]
SIDES = ["left", "right", "top", "bottom", "centre"]
SUMMARY = "Shapes of many colours appear one after another over a plain background."
LINE = re.compile(r"^\[([\d:]+)-([\d:]+)\] A (\w+) (\w+) appears at the (\w+)\.$", re.M)


def hour_caption(minutes: float = 61.0, every_s: float = 15.0) -> CaptionRecord:
    """A C_detail of one line every 15 s: which colour of shape appears where (known truth)."""
    detail = []
    for i in range(int(minutes * 60 / every_s)):
        t = i * every_s
        detail.append(CaptionLine(start=t, end=t + 5, text=(
            f"A {COLOURS[i % 9]} {SHAPES[i % 4]} appears at the {SIDES[i % 5]}.")))
    return CaptionRecord(id="cap-hour", video_id="hour", video_path="hour.mp4",
                         duration=minutes * 60, detail=detail, summary=SUMMARY,
                         captioner="ground-truth")


class WindowQA(Panel):
    """The scripted M_qa reads the caption lines a generation prompt shows and asks about them
    (spread evenly over the lines shown; a cross-window call relates a line of each part). The
    judge, panel and distractor roles are Panel's, for the questions it wrote."""

    def __init__(self, bad_cross: set[str] = frozenset(), garbage: set[str] = frozenset()):
        super().__init__({"generated": []})
        self.generation_prompts: list[str] = []
        self.bad_cross = bad_cross  # part A spans whose cross question cites part B only
        self.garbage = garbage  # window spans ("from MM:SS") whose reply is not JSON

    def _ask(self, m: re.Match[str], other: re.Match[str] | None = None) -> Q:
        start, end, colour, shape, side = m.groups()
        if other is None:
            q = Q(f"What colour is the {shape} that appears at the {side} at {start}?", colour,
                  evidence=(f"{start}-{end}",))
        else:
            o_start, _o_end, _c, o_shape, _s = other.groups()
            q = Q(f"After the {o_shape} at {o_start}, what colour is the {shape} that appears "
                  f"at the {side} at {start}?", colour, qtype="temporal order",
                  evidence=(o_start, start))
        q.distractors = tuple(c for c in COLOURS if c != colour)
        self.questions["generated"].append(q)
        return q

    def __call__(self, body: dict[str, Any]) -> str:
        prompt = body["messages"][0]["content"]
        n = re.search(r"Write (\d+) different questions", prompt)
        if n is None:
            return super().__call__(body)
        self._count("generation")
        self.generation_prompts.append(prompt)
        n_q = int(n.group(1))
        if "Part A (" in prompt:
            a = list(LINE.finditer(prompt.split("Part B (")[0]))
            b = list(LINE.finditer(prompt.split("Part B (")[1]))
            qs = [self._ask(b[len(b) * (k + 1) // (n_q + 1)], a[len(a) * (k + 1) // (n_q + 1)])
                  for k in range(n_q)]
            span = re.search(r"Part A \(([\d:]+)-", prompt).group(1)
            if span in self.bad_cross:
                qs[0].evidence = qs[0].evidence[1:]
        else:
            where = re.search(r"from ([\d:]+) to", prompt)
            if where and where.group(1) in self.garbage:
                return "Here are the questions you asked for!"
            lines = list(LINE.finditer(prompt))
            qs = [self._ask(lines[len(lines) * (2 * k + 1) // (2 * n_q)]) for k in range(n_q)]
        return json.dumps({"questions": [q.gen() for q in qs]})


def evidence_start(evidence_line: str) -> float:
    return parse_timestamp(evidence_line[1:evidence_line.index("]")])[0]


def test_windows_cover_the_caption_once_within_the_budget():
    cap = hour_caption()
    wins = caption_windows(cap, 100_000, 600.0)
    assert len(wins) == 7  # 61 minutes in equal spans of at most 10 minutes
    assert [x for w in wins for x in w] == cap.detail
    assert all(w[-1].start - w[0].start < 3660 / 7 for w in wins)
    small = caption_windows(cap, 1000, 600.0)
    assert [x for w in small for x in w] == cap.detail
    assert all(sum(len(line_text(x)) + 1 for x in w) <= 1000 for w in small)
    assert len(small) > len(wins)
    assert spread(12, 7) == [1, 2, 2, 2, 2, 2, 1] and spread(4, 6) == [1, 0, 1, 1, 0, 1]
    assert [i for i, n in enumerate(spread(4, 12)) if n] == [0, 4, 7, 11]  # the ends are asked
    assert spread(1, 5) == [0, 0, 1, 0, 0] and spread(3, 1) == [3]
    assert cross_pairs(7, 3) == [(0, 3, 1), (1, 4, 1), (2, 5, 1)]
    assert cross_pairs(2, 2) == [(0, 1, 2)] and cross_pairs(1, 2) == []


def test_hour_caption_questions_from_every_quarter_and_across_windows(tmp_path):
    cap = hour_caption()
    run = make_run(tmp_path / "run", [cap])
    script = WindowQA(bad_cross={"08:45"})
    with ScriptedTestServer(script) as srv:
        cfg = scripted_config(srv.base_url, generation="free", questions_per_video=12,
                              cross_window_questions=3, mcq_per_question=1)
        out = run_stage(run, cfg)
    budget = window_budget(cfg.models["llm"], cfg.synth.qa, cap)
    prompts = script.generation_prompts
    assert len(prompts) == 7 + 3 == out["calls"]["generation"]
    # C_sum in every call; every caption line shown to one window call, none past the budget
    assert all(SUMMARY in p for p in prompts)
    window_prompts = [p for p in prompts if "Part A (" not in p]
    shown = [m.group(0) for p in window_prompts for m in LINE.finditer(p)]
    assert sorted(shown) == sorted(line_text(x) for x in cap.detail)
    for p in window_prompts:
        detail = p.split("one timestamped line per moment:\n")[1].split("\n\nShort summary")[0]
        assert len(detail) <= budget
    accepted = rows(run, "qa.jsonl")
    assert out["candidates"] == 15 and len(accepted) == 14
    starts = [evidence_start(e) for r in accepted for e in r["evidence"]]
    assert starts
    for quarter in range(4):
        lo, hi = quarter * 915, (quarter + 1) * 915
        assert any(lo <= t < hi for t in starts), f"no evidence in quarter {quarter + 1}"
    # before: one 6000-character window from the start, nothing after 05:12 could be asked
    assert max(starts) > 3300
    # cross-window questions cite a line of each of two windows half the video apart
    cross = [r for r in accepted if r["filters"]["generation"]["window"]["kind"] == "cross"]
    assert len(cross) == 2
    for r in cross:
        a, b = (evidence_start(e) for e in r["evidence"])
        assert b - a > 1200
    rejected = [r for r in rows(run, "rejected.jsonl") if r["filter"] == "generation"]
    assert [r["reason"].split(":")[0] for r in rejected] == ["not_cross_window"]
    assert rejected[0]["generation"]["window"]["spans"][0][0] == 525.0  # window 2 of 7


def test_a_window_whose_reply_never_fits_rejects_that_window_only(tmp_path):
    cap = hour_caption(minutes=20.0)
    run = make_run(tmp_path / "run", [cap])
    script = WindowQA(garbage={mmss(600.0)})
    with ScriptedTestServer(script) as srv:
        cfg = scripted_config(srv.base_url, generation="free", questions_per_video=4,
                              cross_window_questions=0, mcq_per_question=1)
        out = run_stage(run, cfg)
    rejected = [r for r in rows(run, "rejected.jsonl") if r["filter"] == "generation"]
    assert [r["reason"] for r in rejected] == ["schema_error"]
    assert rejected[0]["generation"]["window"]["span"][0] == 600.0
    accepted = rows(run, "qa.jsonl")
    assert len(accepted) == out["accepted"] == 2
    assert all(evidence_start(e) < 600 for r in accepted for e in r["evidence"])


def test_a_generator_context_too_small_for_a_window_is_an_error_line(tmp_path):
    run = make_run(tmp_path / "run", [hour_caption(minutes=20.0)])
    with ScriptedTestServer(WindowQA()) as srv:
        cfg = scripted_config(srv.base_url, generation="free")
        cfg.models["llm"].n_ctx = 1000
        out = run_stage(run, cfg)
    assert out["errors"] == 1 and out["candidates"] == 0
    (err,) = list(run.errors.read())
    assert err["error"] == "ContextLengthError" and "raise models.<generator>.n_ctx" in err[
        "message"]
