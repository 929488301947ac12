"""Stage 2 free mode over the whole caption: M_qa(C_detail, C_sum) window by window.

A long C_detail does not fit one prompt, and a model given all of it asks about its beginning.
So C_detail is cut into consecutive windows (`caption_windows`: at most `window_s` seconds and
at most the generator's prompt budget, from its `n_ctx`), the video's `questions_per_video` are
spread over them (`spread`), and `cross_window_questions` more are asked over pairs of windows
far apart (`cross_pairs`): questions that need both (order, change, counts across them). C_sum
is in every call, so every question is asked to be answerable from the detail and not from the
summary. The model cites its evidence; the driver resolves it to caption lines.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, create_model

from rewatch.config import ModelSpec, QAConfig
from rewatch.models.base import ChatModel, ContextLengthError, SchemaError
from rewatch.schema import CaptionLine, CaptionRecord, mmss
from rewatch.synth.qa_filters import ask, caption_window, caption_windows, line_text, load_prompt
from rewatch.synth.tools import ArgumentError, parse_timestamp

log = logging.getLogger(__name__)
REPLY_TOKENS_PER_QUESTION = 100  # a question, its answer, type and evidence in the schema's JSON
MIN_WINDOW_CHARS = 500  # a few caption lines: less and no question can be found


def one_of(values: tuple[str, ...]) -> Any:
    """Literal[values] built at run time (a schema enum the grammar enforces)."""
    return Literal[values]  # type: ignore[valid-type]


@cache
def generation_schema(types: tuple[str, ...], n: int) -> type[BaseModel]:
    """The reply of M_qa in free mode: up to n questions, each typed from the configured list;
    evidence holds up to 3 timestamps or spans (HH:MM:SS-HH:MM:SS past an hour)."""
    question = create_model(
        "GeneratedQuestion",
        question=(str, Field(min_length=8, max_length=200)),
        answer=(str, Field(min_length=1, max_length=60)),
        qtype=(one_of(types), ...),
        evidence=(list[Annotated[str, Field(max_length=20)]], Field(min_length=1, max_length=3)),
    )
    return create_model(
        "GeneratedQuestions",
        questions=(list[question], Field(min_length=1, max_length=n)),  # type: ignore[valid-type]
    )


def spread(n: int, k: int) -> list[int]:
    """n questions over k windows, evenly: question j goes to window round(j·(k−1)/(n−1)), so
    the first and the last window are always asked (one question: the middle window)."""
    counts = [0] * k
    for j in range(n):
        counts[math.floor(j * (k - 1) / (n - 1) + 0.5) if n > 1 else k // 2] += 1
    return counts


def cross_pairs(k: int, m: int) -> list[tuple[int, int, int]]:
    """m cross-window questions over k windows: (first, second, questions) for pairs half the
    video apart, their first windows spread over the first half."""
    if k < 2 or m <= 0:
        return []
    half = k // 2
    pairs = Counter((math.floor(p * (k - half) / m), math.floor(p * (k - half) / m) + half)
                    for p in range(m))
    return [(a, b, n) for (a, b), n in sorted(pairs.items())]


def window_budget(spec: ModelSpec, qa: QAConfig, caption: CaptionRecord) -> int:
    """Characters of C_detail one free-mode call can show: the generator's context less its
    reply (the most questions one call asks), the prompt and the summary. Raises
    ContextLengthError when that leaves less than MIN_WINDOW_CHARS."""
    duration = max([caption.duration, *(x.start for x in caption.detail)])
    k = max(1, math.ceil(duration / qa.window_s - 1e-9))
    per_call = max(math.ceil(qa.questions_per_video / k), qa.cross_window_questions, 1)
    reply = REPLY_TOKENS_PER_QUESTION * per_call + 40
    fixed = max(len(load_prompt("qa_generate.md")), len(load_prompt("qa_generate_cross.md")))
    budget = spec.prompt_chars(reply, fixed + len(caption.summary) + 200)
    if budget < MIN_WINDOW_CHARS:
        raise ContextLengthError(
            f"generator n_ctx={spec.n_ctx} leaves {budget} characters of C_detail per call "
            f"(at most {per_call} questions a call); raise models.<generator>.n_ctx or lower "
            "synth.qa.questions_per_video")
    return budget


def _span(lines: list[CaptionLine]) -> tuple[float, float]:
    return lines[0].start, max(x.end for x in lines)


def _cites_both(stamps: list[str], a: tuple[float, float], b: tuple[float, float]) -> bool:
    times = []
    for s in stamps:
        try:
            times.append(parse_timestamp(s))
        except ArgumentError:
            continue
    return any(s <= a[1] + 0.5 and e >= a[0] - 0.5 for s, e in times) and any(
        s <= b[1] + 0.5 and e >= b[0] - 0.5 for s, e in times)


async def contrastive_generation(caption: CaptionRecord, generator: ChatModel, qa: QAConfig,
                                 budget: int, tally: Counter[str] | None = None,
                                 gate: asyncio.Semaphore | None = None) -> list[dict[str, Any]]:
    """M_qa(C_detail, C_sum) in free mode over every window of C_detail (`budget` characters a
    call), plus the cross-window questions; each candidate carries its `window`. A window whose
    reply never fits the schema gives one `error` entry; raises SchemaError when none fits."""
    windows = caption_windows(caption, budget, qa.window_s)
    types = tuple(qa.question_types)
    summary = caption.summary or "(none)"
    jobs: list[tuple[dict[str, Any], str, int]] = []  # (window info, prompt, questions)
    for i, (w, n) in enumerate(zip(windows, spread(qa.questions_per_video, len(windows)),
                                   strict=True)):
        if n == 0:
            continue
        text = "\n".join(line_text(x) for x in w)
        a, b = _span(w)
        part = "a video" if len(windows) == 1 else (
            f"one part of a video, from {mmss(a)} to {mmss(b)}")
        info: dict[str, Any] = {"kind": "window", "index": i, "span": [a, b]}
        if len(text) > budget:  # one line longer than the whole budget
            info["cut_chars"] = len(text) - budget
            log.warning("%s: a caption line of %d characters cut to the %d-character window",
                        caption.video_id, len(text), budget)
        prompt = load_prompt("qa_generate.md").format(
            part=part, detail=text[:budget], summary=summary, n=n, types=", ".join(types))
        jobs.append((info, prompt, n))
    for i, j, n in cross_pairs(len(windows), qa.cross_window_questions):
        parts = []
        for w in (windows[i], windows[j]):
            sub = caption.model_copy(update={"detail": w})
            parts.append(caption_window(sub, budget // 2, sum(_span(w)) / 2))
        spans = [list(_span(windows[i])), list(_span(windows[j]))]
        prompt = load_prompt("qa_generate_cross.md").format(
            a_span=f"{mmss(spans[0][0])}-{mmss(spans[0][1])}", part_a=parts[0],
            b_span=f"{mmss(spans[1][0])}-{mmss(spans[1][1])}", part_b=parts[1],
            summary=summary, n=n, types=", ".join(types))
        jobs.append(({"kind": "cross", "windows": [i, j], "spans": spans}, prompt, n))

    async def one(prompt: str, n: int) -> Any:
        schema = generation_schema(types, n)
        if gate is None:
            return await ask(generator, prompt, schema, REPLY_TOKENS_PER_QUESTION * n + 40,
                             tally, "generation")
        async with gate:
            return await ask(generator, prompt, schema, REPLY_TOKENS_PER_QUESTION * n + 40,
                             tally, "generation")

    replies = await asyncio.gather(*(one(p, n) for _i, p, n in jobs), return_exceptions=True)
    for r in replies:
        if isinstance(r, BaseException) and not isinstance(r, SchemaError):
            raise r
    if jobs and all(isinstance(r, SchemaError) for r in replies):
        raise next(r for r in replies if isinstance(r, SchemaError))
    out: list[dict[str, Any]] = []
    for (info, _p, _n), r in zip(jobs, replies, strict=True):
        if isinstance(r, BaseException):
            out.append({"question": "", "answer": "", "qtype": types[0], "evidence": [],
                        "error": str(r)[:500], "window": info})
            continue
        for q in r.questions:
            row = q.model_dump() | {"window": info}
            if info["kind"] == "cross" and not _cites_both(row["evidence"], *info["spans"]):
                row["problem"] = (f"not_cross_window: cites {row['evidence']}, not a line of "
                                  "each part")
            out.append(row)
    return out
