"""Correctness against the ground truth of generated videos, where the truth is known exactly.

- `caption_scores`: the captioner's event recall (each shape's appearance with its colour and
  shape at the right second ±1 s, and each departure) and precision (lines naming a colour and
  shape that is not on screen within ±1 s), and count lines that give the true count.
- `answer_truth`: whether a short answer is consistent with the truth at its evidence time:
  colours, shapes, directions, positions, counts and appear/leave events named by the answer
  must hold for a shape visible then (constrained by the colour and shape the question names).
  What the question asks narrows it: a question about the background is answered by the
  background's colour only (not a shape's), one about a shape's colour by a shape's only (not
  the background's), "where" by a position (where the shape is, at its appearance when it asks
  where one appears; an event word is no position), "which way" by a motion, and an answer
  that says a shape moves ("moving right") claims a motion, not a position; "slowly" and
  "quickly" are the shape's speed (under 0.1 or over 0.3 frame sizes a second, the object
  captioner's words for those speeds). It is a rule-based
  check of the answer's facts, not of the question's whole meaning, and says `unverifiable`
  when the answer names none of these facts.
- `heldout_specs`: generated videos that are not the demo's own (seeded layouts with circles,
  squares, rectangles and triangles), for measuring the captioner and the pipeline.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rewatch.models.objects import QUICK_ABOVE, SLOW_BELOW
from rewatch.samples import GroundTruth, Shape, SyntheticSpec
from rewatch.schema import CaptionLine
from rewatch.text import numbers_in
from rewatch.video.stats import NAMED_COLOURS

KINDS = ("circle", "square", "rectangle", "triangle")
_KIND_WORDS = {"circle": "circle", "circles": "circle", "square": "square", "squares": "square",
               "rectangle": "rectangle", "rectangles": "rectangle", "triangle": "triangle",
               "triangles": "triangle"}
_DIRECTIONS = ("left", "right", "up", "down")
_COLOUR_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, NAMED_COLOURS), key=len,
                                                     reverse=True)) + r")\b")
TOL = 1.0  # seconds either side
_MOTION_WORDS = frozenset("move moves moving moved roll rolls rolling slide slides sliding go goes "
                          "going travel travels travelling traveling drift drifts drifting".split())


def colours_in(text: str) -> list[str]:
    return _COLOUR_RE.findall(text.lower())


def kinds_in(text: str) -> list[str]:
    return [_KIND_WORDS[w] for w in re.findall(r"[a-z]+", text.lower()) if w in _KIND_WORDS]


def _visible(truth: GroundTruth, a: float, b: float) -> list[Shape]:
    """Shapes on screen at some moment of [a, b]."""
    return [s for s in truth.spec.shapes if s.enter <= b and s.leave > a]


def _backgrounds(truth: GroundTruth, a: float, b: float) -> set[str]:
    scenes = truth.spec.scenes
    out = set()
    for i, (start, colour) in enumerate(scenes):
        end = scenes[i + 1][0] if i + 1 < len(scenes) else truth.spec.duration
        if start <= b and end > a:
            out.add(colour)
    return out


@dataclass
class CaptionScore:
    """Event recall and line precision of one caption against one video's truth."""

    events: int = 0
    recalled: int = 0
    object_lines: int = 0
    false_lines: int = 0
    count_lines: int = 0
    true_counts: int = 0

    def add(self, other: CaptionScore) -> CaptionScore:
        for k in vars(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        return self

    @property
    def recall(self) -> float:
        return self.recalled / self.events if self.events else 0.0

    @property
    def precision(self) -> float:
        return 1 - self.false_lines / self.object_lines if self.object_lines else 0.0


def caption_scores(truth: GroundTruth, lines: Iterable[CaptionLine]) -> CaptionScore:
    """Recall of appear/leave events and precision of object lines (module docstring)."""
    lines = list(lines)
    score = CaptionScore()
    appear = re.compile(r"\b(appears|is)\b")
    leave = re.compile(r"\b(disappears|moves out of view|leaves)\b")
    for s in truth.spec.shapes:
        wanted = [(s.enter, appear)]
        # a shape whose last moment is a cut does not leave: the whole scene changes
        if s.leave < truth.spec.duration and not any(abs(s.leave - c) < 1e-6
                                                     for c in truth.cut_times):
            wanted.append((s.leave, leave))
        for when, verb in wanted:
            score.events += 1
            score.recalled += any(
                abs(ln.start - when) <= TOL and s.colour in colours_in(ln.text)
                and s.kind in kinds_in(ln.text) and verb.search(ln.text) for ln in lines)
    for ln in lines:
        cs, ks = colours_in(ln.text), kinds_in(ln.text)
        if cs and ks:
            score.object_lines += 1
            seen = _visible(truth, ln.start - TOL, ln.end + TOL)
            if not any(x.colour == cs[0] and x.kind == ks[0] for x in seen):
                score.false_lines += 1
        m = re.match(r"^(\w+) objects? (?:is|are) on screen", ln.text)
        if m and numbers_in(m.group(1)):
            score.count_lines += 1
            n = numbers_in(m.group(1))[0]
            t = ln.start + 0.25
            score.true_counts += any(truth.count_at(x) == n for x in (t - 0.5, t, t + 0.5))
    return score


# a pace in frame sizes per second, as the object captioner words it, so that a generated
# video checks whether it measured the speed right: (lowest, highest) speed of each word
_SLOW, _QUICK = (0.0, SLOW_BELOW), (QUICK_ABOVE, math.inf)
_PACES = {"slowly": _SLOW, "slow": _SLOW, "quickly": _QUICK, "quick": _QUICK, "fast": _QUICK}


def _speed(s: Shape, width: int, height: int) -> float:
    return math.hypot(s.velocity[0] / width, s.velocity[1] / height)


def _moves(s: Shape, direction: str) -> bool:
    return s.direction() == direction


def _side(s: Shape, t: float, direction: str, width: int, height: int) -> bool:
    x, y = s.centre(max(s.enter, min(t, s.leave)))
    return {"left": x < width / 3, "right": x > 2 * width / 3, "up": y < height / 3,
            "down": y > 2 * height / 3, "top": y < height / 3,
            "bottom": y > 2 * height / 3, "centre": width / 3 <= x <= 2 * width / 3,
            "center": width / 3 <= x <= 2 * width / 3}[direction]


def answer_truth(truth: GroundTruth, question: str, answer: str,
                 evidence: Iterable[tuple[float, float]]) -> str:
    """'true', 'false' or 'unverifiable': the answer's facts against the truth near the
    evidence spans (module docstring)."""
    spans = list(evidence) or [(0.0, truth.spec.duration)]
    a_text = answer.lower()
    colours, kinds = colours_in(a_text), kinds_in(a_text)
    q_colours, q_kinds = colours_in(question), kinds_in(question)
    words = set(re.findall(r"[a-z]+", a_text))
    dirs = [d for d in (*_DIRECTIONS, "top", "bottom", "centre", "center") if d in words]
    numbers = numbers_in(a_text)
    events = {w for w in words if w in {"appears", "appear", "appeared", "disappears",
                                        "disappear", "disappeared", "leaves", "leave", "left",
                                        "still", "stays"}}
    # "moving right" claims a motion: its direction is no position, and "moving" alone says
    # the shape moves
    claims_motion = bool(words & _MOTION_WORDS)
    paces = words & set(_PACES)
    if not (colours or kinds or dirs or numbers or events or claims_motion or paces):
        return "unverifiable"
    q_words = set(re.findall(r"[a-z]+", question.lower()))
    asks_background = "background" in q_words
    asks_motion = bool(q_words & {"way", "direction", "move", "moves", "moving", "go", "goes"})
    asks_where = not asks_motion and bool(q_words & {"where", "position", "located"})
    if asks_where and not dirs:
        return "false"  # "where ...?" answered with no position
    # "how does it move?" / "which way?" is not answered by an appearance or a departure
    # (held-out run of 0e3aa56: "How does the white triangle move ...?" had the options
    # "appears" and "disappears", counted true because the triangle appears then)
    if asks_motion and events and not (dirs or claims_motion or events & {"still", "stays"}) \
            and re.match(r"(how|which way|in which direction|what direction)\b",
                         question.lower()):
        return "false"
    if asks_where and q_colours and q_kinds:
        # "where is the blue rectangle ... before the white triangle disappears?" asks where
        # the first shape named is (the same run counted "top" true: the white triangle's place)
        q_colours, q_kinds = q_colours[:1], q_kinds[:1]
    spec = truth.spec
    for a, b in spans:
        lo, hi = a - TOL, b + TOL
        shapes = _visible(truth, lo, hi)
        # the shape the question is about, narrowed by the colours/kinds it names
        about = [s for s in shapes if (not q_colours or s.colour in q_colours or colours)
                 and (not q_kinds or s.kind in q_kinds or kinds)]
        ok = True
        if colours:
            pool = [s for s in about if s.colour in colours and (not q_kinds or kinds
                                                                 or s.kind in q_kinds)]
            # a background colour must hold over the evidence span itself (no tolerance: the
            # neighbouring shot's background is a different answer)
            mid = (a + b) / 2
            on_back = any(c in _backgrounds(truth, mid, mid) for c in colours)
            # (a question about a shape's colour is not answered by the background's)
            ok &= on_back if asks_background else bool(pool) or (on_back and not q_kinds)
            about = pool or about
        if kinds and ok:
            pool = [s for s in about if s.kind in kinds and (not q_colours or colours
                                                             or s.colour in q_colours)]
            ok &= bool(pool)
            about = pool or about
        if dirs and ok:
            t = (a + b) / 2
            appears = bool(q_words & {"appear", "appears"})  # where one appears: it enters
            # a place holds whole ("top left": top and left, of one shape); a motion in any
            # of its directions
            ok &= any((not asks_where and any(_moves(s, d) for d in dirs))
                      or (not (asks_motion or claims_motion)
                          and all(_side(s, s.enter + 0.25 if appears else t, d, spec.width,
                                        spec.height) for d in dirs))
                      for s in about)
        if claims_motion and not dirs and ok:
            ok &= any(s.direction() is not None for s in about)
        if paces and ok:
            ok &= any(_PACES[p][0] < _speed(s, spec.width, spec.height) < _PACES[p][1]
                      for s in about for p in paces)
        if numbers and ok and not (colours or kinds or dirs):
            # a count holds at the evidence moment itself (just after it, within half a second;
            # the count a second earlier or later is another answer)
            counts = {truth.count_at(t) for t in (a, a + 0.25, a + 0.5, b)}
            ok &= any(n in counts for n in numbers)
        if events and ok and not (colours or kinds or dirs or numbers):
            if events & {"still", "stays"}:
                ok &= any(s.direction() is None for s in about)
            else:
                ok &= any(lo <= s.enter <= hi or lo <= s.leave <= hi for s in about)
        if ok:
            return "true"
    return "false"


def heldout_specs(n: int = 4, seed: int = 1) -> list[SyntheticSpec]:
    """Generated videos that are not the demo's own: seeded scenes (2-3 shots, plain
    backgrounds) with 2-4 shapes of every kind entering, moving and leaving at known seconds."""
    rng = random.Random(seed)
    backgrounds = ["navy", "black", "gray", "maroon", "dark green", "white"]
    fills = ["red", "green", "blue", "yellow", "orange", "purple", "cyan", "pink", "white"]
    specs = []
    for k in range(n):
        duration = float(rng.choice([10, 12, 14]))
        cuts = sorted(rng.sample(range(3, int(duration) - 2), rng.choice([1, 2])))
        bgs = rng.sample(backgrounds, len(cuts) + 1)
        scenes = ((0.0, bgs[0]), *((float(c), bgs[i + 1]) for i, c in enumerate(cuts)))
        shapes = []
        used: set[tuple[str, str]] = set()
        for _ in range(rng.choice([2, 3, 4])):
            colour = rng.choice([c for c in fills if c not in bgs])
            kind = rng.choice(KINDS)
            if (colour, kind) in used:
                continue
            used.add((colour, kind))
            enter = float(rng.randrange(0, int(duration) - 3))
            leave = min(duration, enter + rng.randrange(3, 8))
            x, y = rng.randrange(50, 270), rng.randrange(50, 190)
            vx = rng.choice([0.0, 0.0, 30.0, -30.0])
            vx = -abs(vx) if x > 160 else abs(vx)
            shapes.append(Shape(kind, colour, enter, leave, (x, y), (vx, 0.0),
                                size=rng.choice([14, 18, 22])))
        specs.append(SyntheticSpec(name=f"heldout{seed}_{k}", duration=duration, scenes=scenes,
                                   shapes=tuple(shapes)))
    return specs


def known_truth(path: str | Path, extra: Iterable[SyntheticSpec] = ()) -> GroundTruth | None:
    """The ground truth of a generated video, found by its file name (`synthetic_path` names
    carry the spec's hash), or None for any other video."""
    from rewatch.samples import SYNTHETIC_SPECS, synthetic_path

    p = Path(path)
    for spec in (*SYNTHETIC_SPECS, *heldout_specs(), *extra):
        if synthetic_path(p.parent, spec).name == p.name:
            return GroundTruth(spec, p, [round(s * spec.fps) for s, _c in spec.scenes[1:]])
    return None


def _spans(evidence: Iterable[str]) -> list[tuple[float, float]]:
    from rewatch.synth.tools import ArgumentError, parse_timestamp

    out = []
    for e in evidence:
        stamp = e.split("]", 1)[0].strip("[ ")
        try:
            out.append(parse_timestamp(stamp))
        except ArgumentError:
            continue
    return out


def run_correctness(run: str | Path) -> dict[str, Any]:
    """Correctness of a run directory's records on its generated videos (known truth):
    accepted answers that are true, MCQs whose keyed option is true and no other option is,
    kept chains whose answer is the true one and whose observations quote C_detail."""
    from rewatch.schema import CaptionRecord
    from rewatch.store import JsonlFile
    from rewatch.synth.cot_validate import META_WORDS, unsupported_words

    root = Path(run)
    truths: dict[str, GroundTruth] = {}
    for r in JsonlFile(root / "videos.jsonl").read():
        found = known_truth(r["path"])
        if found is not None:
            truths[r["id"]] = found
    captions = {r["video_id"]: r for r in JsonlFile(root / "captions.jsonl").read()}
    qa = {r["id"]: r for r in JsonlFile(root / "qa.jsonl").read() if r["video_id"] in truths}
    verdict = {k: answer_truth(truths[r["video_id"]], r["question"], r["answer"],
                               _spans(r["evidence"])) for k, r in qa.items()}
    mcq_ok = mcq_n = 0
    mcq_key: dict[str, bool] = {}
    for m in JsonlFile(root / "mcq.jsonl").read():
        if m["qa_id"] not in qa:
            continue
        r = qa[m["qa_id"]]
        spans = _spans(r["evidence"])
        truth = truths[m["video_id"]]
        others = [answer_truth(truth, r["question"], t, spans)
                  for k, t in m["options"].items() if k != m["answer"]]
        ok = verdict[r["id"]] == "true" and "true" not in others
        mcq_key[m["id"]] = ok
        mcq_n += 1
        mcq_ok += ok
    chain_ok = chain_n = 0
    for c in JsonlFile(root / "cot.jsonl").read():
        if c["mcq_id"] not in mcq_key:
            continue
        chain_n += 1
        caption = CaptionRecord.model_validate(captions[c["video_id"]]).detail_text()
        grounded = all(not unsupported_words(s["observation"] or "", [caption], META_WORDS)
                       for s in c["trajectory"] if s.get("action"))
        chain_ok += mcq_key[c["mcq_id"]] and grounded
    counts = {v: sum(x == v for x in verdict.values()) for v in ("true", "false", "unverifiable")}
    return {
        "generated videos": len(truths),
        "accepted answers true": _share(counts["true"], len(verdict)),
        "answers false / unverifiable": f"{counts['false']} / {counts['unverifiable']}",
        "MCQ keys true": _share(mcq_ok, mcq_n),
        "chains right and grounded": _share(chain_ok, chain_n),
    }


def _share(k: int, n: int) -> str:
    return f"{k}/{n} = {100 * k / n:.0f}%" if n else "0/0"
