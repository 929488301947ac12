"""VCR-Bench (1034 questions on 859 videos): multiple choice and open answers; accuracy per
`dimension` and per duration bucket.

File `v1/videos/meta_info_video.json`: `id`, `video_path`, `duration`, `dimension`, `question`
(multiple-choice options are written inside it), `multiple-choice`, `choices`, `answer`,
`reasoning`. Scoring: multiple choice by letter; a time-span answer counts when temporal
IoU > 0.7; a box when IoU > 0.5; other open answers by an LLM judge's verdict (`eval.judge`),
stored in the predictions. Without a verdict an open answer is "unjudged" and counted wrong.
The official harness extracts answers with an LLM; here the strict shared rules do it.
The CoT score (F1 against the reference steps) is not computed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from rewatch.eval.benchmarks.base import (
    Benchmark,
    BenchmarkFormatError,
    BenchScore,
    EvalItem,
    Outcome,
    choice_outcome,
    load_rows,
    need,
    register,
    safe_video_path,
    summarize,
)
from rewatch.eval.extract import extract_box, extract_span, iou_1d, iou_box

# Duration buckets (seconds): our choice, stated in docs/eval.md.
BUCKETS = ((60.0, "short (<=1 min)"), (300.0, "medium (1-5 min)"), (float("inf"), "long (>5 min)"))
TEMPORAL_IOU = 0.7
SPATIAL_IOU = 0.5


def duration_bucket(seconds: float | None) -> str:
    if seconds is None:
        return "(unknown)"
    return next(name for limit, name in BUCKETS if seconds <= limit)


def answer_type(answer: str) -> str:
    """'spatial' for a box, 'temporal' for a time span, else 'text' (judged)."""
    if extract_box(answer) is not None:
        return "spatial"
    if extract_span(answer) is not None and re.search(r"\d", answer):
        return "temporal"
    return "text"


@register
class VCRBench(Benchmark):
    name = "vcr-bench"
    title = "VCR-Bench"
    aliases = ("vcr_bench", "vcr", "VCR-Bench")
    breakdown_keys = ("dimension", "duration")
    default_file = "meta_info_video.json"
    thresholds: ClassVar[dict[str, float]] = {"temporal": TEMPORAL_IOU, "spatial": SPATIAL_IOU}

    def load(self, data: str | Path, videos: str | Path) -> list[EvalItem]:
        items = []
        for i, row in enumerate(load_rows(data)):
            where = f"{data} row {i}"
            mc = bool(row.get("multiple-choice"))
            dur = row.get("duration")
            duration = float(dur) if isinstance(dur, int | float) else None
            answer = str(need(row, "answer", where)).strip()
            options: dict[str, str] = {}
            if mc:
                choices = need(row, "choices", where)
                if not isinstance(choices, dict) or answer not in choices:
                    raise BenchmarkFormatError(f"{where}: choices must be an object holding "
                                               f"the answer letter {answer!r}")
                options = {str(k): str(v) for k, v in choices.items()}
            items.append(EvalItem(
                id=str(row.get("id", i)), bench=self.name,
                video=str(safe_video_path(videos, str(need(row, "video_path", where)), row=where)),
                question=str(need(row, "question", where)), options=options, answer=answer,
                kind="mcq" if mc else "open", duration=duration,
                categories={"dimension": str(row.get("dimension", "")),
                            "duration": duration_bucket(duration)},
                extra={"options_in_question": mc, "answer_type": "choice" if mc
                       else answer_type(answer), "reasoning": row.get("reasoning")},
            ))
        return items

    def _open(self, it: EvalItem, reply: str, judgments: dict[str, bool]) -> Outcome:
        kind = it.extra.get("answer_type", "text")
        if kind == "temporal":
            gt, pred = extract_span(it.answer), extract_span(reply)
            if gt is None or pred is None:
                return Outcome(it.id, False, "no_answer", None, it.categories)
            ok = iou_1d(pred, gt) > TEMPORAL_IOU
            return Outcome(it.id, ok, "answered", f"{pred[0]:g}-{pred[1]:g}", it.categories)
        if kind == "spatial":
            gbox, pbox = extract_box(it.answer), extract_box(reply)
            if gbox is None or pbox is None:
                return Outcome(it.id, False, "no_answer", None, it.categories)
            return Outcome(it.id, iou_box(pbox, gbox) > SPATIAL_IOU, "answered",
                           ",".join(f"{v:g}" for v in pbox), it.categories)
        if it.id not in judgments:
            return Outcome(it.id, False, "unjudged", None, it.categories)
        return Outcome(it.id, bool(judgments[it.id]), "answered", None, it.categories)

    def score(self, items: list[EvalItem], replies: dict[str, str],
              judgments: dict[str, bool] | None = None) -> BenchScore:
        judgments = judgments or {}
        outcomes = []
        for it in items:
            reply = replies.get(it.id)
            if reply is None:
                outcomes.append(Outcome(it.id, False, "missing", None, it.categories))
            elif it.kind == "mcq":
                outcomes.append(choice_outcome(it, reply))
            else:
                outcomes.append(self._open(it, reply, judgments))
        for o, it in zip(outcomes, items, strict=True):
            o.categories = {**o.categories, "answer_type": it.extra.get("answer_type", "")}
        return summarize(self.name, outcomes, (*self.breakdown_keys, "answer_type"))
