"""Stage 2 fixtures: a caption written from known events and a scripted panel (not a model).

The scripted roles answer from tables the tests control, served by the loopback
ScriptedTestServer, so each filter's accept/reject decision is known in advance.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewatch.config import Config, ModelSpec
from rewatch.models import Models
from rewatch.models.cache import ResponseCache
from rewatch.schema import CaptionLine, CaptionRecord
from rewatch.store import RunDir
from rewatch.synth.qa import generate_qa

EVENTS = [  # what happens in the synthetic clip, second by second
    (0, 2, "a dark green background, nothing moves"),
    (2, 3, "a red circle appears at the left edge"),
    (3, 5, "the red circle rolls right; a blue square stays still"),
    (5, 8, "two blue squares move left"),
    (8, 10, "the red circle leaves; a yellow triangle appears"),
]
SUMMARY = "Coloured shapes appear and move on a green background."


def shapes_caption(video_id: str = "shapes", lines: list[tuple[float, float, str]] | None = None,
                   summary: str = SUMMARY) -> CaptionRecord:
    """C_detail from the known events (a careful captioner's lines) and C_sum."""
    ev = EVENTS if lines is None else lines
    return CaptionRecord(id=f"cap-{video_id}", video_id=video_id, video_path=f"{video_id}.mp4",
                         duration=10.0, detail=[CaptionLine(start=a, end=b, text=t)
                                                for a, b, t in ev],
                         summary=summary, captioner="ground-truth")


@dataclass
class Q:
    """One scripted question with what every role says about it."""

    question: str
    answer: str
    qtype: str = "attribute"
    evidence: tuple[str, ...] = ("00:08",)
    supported: bool = True  # the F1 judge's verdict
    text: str = "no idea"  # what the panel answers with no video
    summary: str = "no idea"  # what the panel answers with C_sum
    distractors: tuple[str, ...] = ("red", "blue", "green", "purple", "orange", "pink",
                                    "white", "black")
    also_correct: tuple[int, ...] = ()

    def gen(self) -> dict[str, Any]:
        return {"question": self.question, "answer": self.answer, "qtype": self.qtype,
                "evidence": list(self.evidence)}


GOOD = Q("What colour is the shape that appears at 00:08?", "yellow")
SUMMARY_BIASED = Q("What colour is the background of the clip?", "green", evidence=("00:01",),
                   summary="green")
TEXT_BIASED = Q("Which shape is round and can roll?", "circle", qtype="attribute",
                evidence=("00:03",), text="a circle", summary="ball")
WRONG_LEXICAL = Q("How many blue squares move left?", "three", qtype="counting",
                  evidence=("00:06",))
WRONG_JUDGED = Q("Where does the red circle appear at 00:02?", "right edge",  # "edge" is cited
                 evidence=("00:02",), supported=False)
NO_EVIDENCE = Q("What colour is the triangle at the end?", "yellow", evidence=("09:59",))
LEAKY = Q("Is the circle that rolls right a red circle?", "red", evidence=("00:03",))
COUNT = Q("How many blue squares move left after 00:05?", "2", qtype="counting",
          evidence=("00:05",), distractors=("1", "3", "4", "5", "6", "7", "8", "9"))


@dataclass
class Panel:
    """A responder for ScriptedTestServer that plays M_qa, the judge and the probe panel."""

    questions: dict[str, list[Q]]  # caption marker (a word of its first line) -> questions
    same: dict[tuple[str, str], bool] = field(default_factory=dict)
    garbage_for: set[str] = field(default_factory=set)  # markers whose M_qa reply is not JSON
    anchored: dict[str, Q | str] = field(default_factory=dict)  # target line text -> question
    calls: dict[str, int] = field(default_factory=dict)
    mcq_choice: str = "A"  # what the panel picks on a multiple-choice item without the video

    def _count(self, role: str) -> None:
        self.calls[role] = self.calls.get(role, 0) + 1

    def _find(self, prompt: str) -> Q:
        known = [q for qs in self.questions.values() for q in qs] + [
            q for q in self.anchored.values() if isinstance(q, Q)]
        hits = [q for q in known if q.question in prompt]
        assert hits, f"no scripted question in {prompt[:120]!r}"
        return max(hits, key=lambda q: len(q.question))

    def __call__(self, body: dict[str, Any]) -> str:
        prompt = body["messages"][0]["content"]
        if "Choose one option." in prompt:
            self._count("mcq_probe")
            return json.dumps({"answer": self.mcq_choice})
        if "Target line:" in prompt:
            self._count("generation")
            line = re.search(r"Target line: \[[^]]*\] (.*)", prompt).group(1)
            q = self.anchored.get(line, "not json at all")
            return q if isinstance(q, str) else json.dumps(
                {"question": q.question, "answer": q.answer})
        if "different questions that the detailed caption answers" in prompt:
            self._count("generation")
            marker = next(m for m in self.questions if m in prompt)
            if marker in self.garbage_for:
                return "Sure! Here are some questions: 1. what"
            return json.dumps({"questions": [q.gen() for q in self.questions[marker]]})
        if "is the proposed answer the correct answer" in prompt:
            self._count("F1")
            q = self._find(prompt)
            return json.dumps({"supported": q.supported, "reason": "scripted"})
        if "mean the same thing" in prompt:
            self._count("equivalence")
            a = re.search(r"Answer 1: (.*)", prompt).group(1)
            b = re.search(r"Answer 2: (.*)", prompt).group(1)
            return json.dumps({"same": self.same.get((a, b), False)})
        if "wrong answers that look plausible" in prompt:
            self._count("distractors")
            return json.dumps({"distractors": list(self._find(prompt).distractors)})
        if "which option answers the question?" in prompt:
            # the key check: the scripted judge picks the answer, or a distractor it was told
            # is also correct (also_correct: 1-based indices into `distractors`)
            self._count("key_check")
            q = self._find(prompt)
            options = dict(re.findall(r"^([A-J])\. (.*)$", prompt, re.M))
            also = {q.distractors[i - 1] for i in q.also_correct}
            pick = next((v for v in options.values() if v in also), None)
            return json.dumps({"answer": pick or q.answer})
        q = self._find(prompt)
        if "Summary of a video:" in prompt:
            self._count("F3")
            return json.dumps({"answer": q.summary})
        self._count("F2")
        return json.dumps({"answer": q.text})


def scripted_config(base_url: str, **qa: Any) -> Config:
    """The embedded layout with every role pointed at the scripted server."""
    cfg = Config()
    cfg.models["llm"] = ModelSpec(backend="openai", base_url=base_url, model="scripted",
                                  max_retries=0, schema_retries=1, structured="parse")
    for k, v in qa.items():
        setattr(cfg.synth.qa, k, v)
    return cfg


def make_run(root: Path, captions: list[CaptionRecord]) -> RunDir:
    run = RunDir(root)
    for c in captions:
        run.file("captions.jsonl").append(c)
    return run


def models_for(cfg: Config, run: RunDir | None = None) -> Models:
    return Models(cfg, ResponseCache(run.cache_path) if run is not None else None)


def rows(run: RunDir, name: str) -> list[dict[str, Any]]:
    return list(run.file(name).read())


GOOD_NOISY = Q(GOOD.question, GOOD.answer, distractors=(
    "red", "Yellow", "blue", "red", "green", "purple", "yellow triangle", "orange"))
JUDGED_SAME = Q("What colour is the triangle that appears at 00:08?", "yellow",
                text="yellow shape")
FEW = Q("What does the red circle do after it appears?", "rolls right", qtype="action",
        evidence=("00:03",), distractors=("rolls right", "jumps", "Jumps"))
COUNT_CHECKED = Q(COUNT.question, COUNT.answer, qtype="counting", evidence=COUNT.evidence,
                  distractors=COUNT.distractors, also_correct=(1,))
DUPLICATE = Q(GOOD.question, "yellow triangle")
# names its answer; repaired (the answer taken out) it is GOOD's question: a duplicate
REPAIRED = Q("What colour is the yellow shape that appears at 00:08?", "yellow")
SHAPES = [GOOD_NOISY, SUMMARY_BIASED, TEXT_BIASED, WRONG_LEXICAL, WRONG_JUDGED, NO_EVIDENCE,
          LEAKY, DUPLICATE, COUNT_CHECKED, JUDGED_SAME, FEW, REPAIRED]


def shapes_run(tmp: Path) -> RunDir:
    """The hand-made caption plus three bad inputs: garbage from M_qa, empty, one line."""
    captions = [
        shapes_caption("shapes"),
        shapes_caption("garbage", [(0, 2, "a purple hexagon spins"), (2, 4, "it stops")]),
        shapes_caption("empty", []),
        shapes_caption("oneline", [(0, 4, "a white dot")]),
    ]
    return make_run(tmp, captions)


def panel() -> Panel:
    """The scripted roles for SHAPES (and a video whose M_qa reply is not JSON)."""
    return Panel({"dark green background": SHAPES, "purple hexagon": [GOOD]},
                 same={("yellow", "yellow shape"): True}, garbage_for={"purple hexagon"})


def run_stage(run: RunDir, cfg: Config, use_cache: bool = True) -> dict[str, Any]:
    """generate_qa once, with a fresh Models (and the run's cache unless use_cache is off)."""
    models = models_for(cfg, run if use_cache else None)

    async def go() -> dict[str, Any]:
        try:
            return await generate_qa(run, cfg, models)
        finally:
            await models.aclose()

    return asyncio.run(go())
