"""Stage 3 fixtures from ground truth: captions and MCQs of synthetic videos whose every event is
known (rewatch.samples specs), so retrieval hits and correct answers are known exactly."""

from __future__ import annotations

import random
from pathlib import Path

from rewatch.samples import SHAPES_CUTS, GroundTruth, Shape, SyntheticSpec
from rewatch.schema import CaptionLine, CaptionRecord, MCQRecord, mmss
from rewatch.video.stats import NAMED_COLOURS


def truth_of(spec: SyntheticSpec, path: str | Path = "unused.mp4") -> GroundTruth:
    """The ground truth of a spec without rendering it."""
    return GroundTruth(spec, Path(path), [round(s * spec.fps) for s, _c in spec.scenes[1:]])


def _state(truth: GroundTruth, t: float) -> str:
    shapes = [f"a {s.colour} {s.kind}" + (f" moving {s.direction()}" if s.direction() else "")
              for s in truth.shapes_at(t)]
    on = ", ".join(shapes) if shapes else "no shapes"
    return f"{on} on a {truth.background_at(t)} background"


def caption_from_truth(truth: GroundTruth, video_id: str = "vid") -> CaptionRecord:
    """C_detail as a careful captioner would write it: one line per second with an event, and
    quiet stretches merged into one line."""
    spec = truth.spec
    events = truth.events()
    lines: list[CaptionLine] = []
    for sec in range(int(spec.duration)):
        ev = [e for t, e in events if sec <= t < sec + 1]
        text = (("; ".join(ev) + "; ") if ev else "") + _state(truth, sec + 0.5)
        if not ev and lines and lines[-1].text == text:
            lines[-1] = CaptionLine(start=lines[-1].start, end=sec + 1.0, text=text)
        else:
            lines.append(CaptionLine(start=float(sec), end=float(sec + 1), text=text))
    return CaptionRecord(id=f"cap-{video_id}", video_id=video_id, video_path=str(truth.path),
                         duration=spec.duration, detail=lines,
                         summary="coloured shapes on changing backgrounds",
                         captioner="ground-truth")


def many_events_spec(minutes: float = 10.0, seed: int = 0) -> SyntheticSpec:
    """A long spec where every colour/kind pair appears once and leaves later: 34 shapes,
    about 60 appear/leave events at distinct seconds."""
    rng = random.Random(seed)
    colours = list(NAMED_COLOURS)
    pairs = [(c, k) for c in colours for k in ("circle", "square")]
    rng.shuffle(pairs)
    dur = minutes * 60
    slots = rng.sample(range(5, int(dur) - 5, 3), 2 * len(pairs))
    shapes = []
    for i, (colour, kind) in enumerate(pairs):
        a, b = sorted(slots[2 * i: 2 * i + 2])
        b = min(b, a + 40)
        shapes.append(Shape(kind, colour, float(a), float(b), (50, 50)))
    return SyntheticSpec(name=f"events_{minutes:g}min", duration=dur,
                         scenes=((0.0, "black"), (dur / 2, "navy")), shapes=tuple(shapes), fps=1)


def _mcq(qid: str, video_id: str, question: str, right: str, wrong: list[str], qtype: str,
         seed: int) -> MCQRecord:
    opts = [right, *wrong[:3]]
    random.Random(seed).shuffle(opts)
    letters = "ABCD"
    return MCQRecord(id=qid, qa_id=f"qa-{qid}", video_id=video_id, question=question,
                     options=dict(zip(letters, opts, strict=False)),
                     answer=letters[opts.index(right)], qtype=qtype)


def mcqs_from_truth(truth: GroundTruth, video_id: str = "vid") -> list[MCQRecord]:
    """Questions whose answers the spec fixes: colour of the shape entering at a time,
    background when a shape appears, how many shapes at a moment."""
    out = []
    colours = [c for c in NAMED_COLOURS if " " not in c]
    for i, s in enumerate(truth.spec.shapes):
        wrong = [c for c in colours if c != s.colour][i: i + 3]
        out.append(_mcq(f"{video_id}-colour-{i}", video_id,
                        f"What colour is the {s.kind} that appears at {mmss(s.enter)}?",
                        s.colour, wrong, "attribute", i))
        bg = truth.background_at(s.enter)
        wrong_bg = [c for c in ("navy", "gray", "maroon", "black", "white") if c != bg]
        out.append(_mcq(f"{video_id}-bg-{i}", video_id,
                        f"What is the background colour when the {s.colour} {s.kind} appears?",
                        bg, wrong_bg, "attribute", 100 + i))
    return out


SPEC = SHAPES_CUTS
