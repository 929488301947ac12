"""The triple filter of Stage 2 (paper section 2): F1 answer verification, F2 text-bias and F3
summary-bias elimination by a probe panel, and answer equivalence M(Q) ≈ A.

F1 keeps a question only if C_detail supports its answer. F2 asks the panel with no video
information and keeps the question only if accuracy < theta_text; F3 gives the panel C_sum only
and keeps it only if accuracy < theta_sum. Equivalence is a normalised exact match first; a
judge decides only partial overlaps, and the method used is recorded with every answer.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, Field

from rewatch.config import Config, QAConfig
from rewatch.models import ChatModel, Models, SchemaError
from rewatch.schema import CaptionLine, CaptionRecord, mmss
from rewatch.store import stable_id
from rewatch.synth.tools import ArgumentError, content_words, parse_timestamp
from rewatch.text import digits_for_words, load_prompt

PROBE_PROMPTS = ("qa_probe_1.md", "qa_probe_2.md", "qa_probe_3.md")


# --- schemas of the model replies --------------------------------------------------------------
Short = Annotated[str, Field(max_length=60)]



class Verdict(BaseModel):
    """F1: does C_detail support the answer?"""

    supported: bool
    reason: str = Field("", max_length=60)


class ProbeAnswer(BaseModel):
    """A probe's answer to an open question."""

    answer: Short


class SameAnswer(BaseModel):
    """The equivalence judge: M(Q) ≈ A?"""

    same: bool


# --- answer equivalence ------------------------------------------------------------------------
_ARTICLES = {"a", "an", "the"}
# a question asking which way something moves (Stage 2 checks its evidence moves; the MCQ
# fill offers directions, not positions)
ASKS_DIRECTION = re.compile(r"\b(which|what) (direction|way)\b", re.I)


def normalize_answer(text: str) -> str:
    """Lowercase, punctuation and articles dropped, number words as digits."""
    words = re.findall(r"[a-z0-9]+(?:\.[0-9]+)?", str(text).lower())
    return " ".join(w for w in digits_for_words(words) if w not in _ARTICLES)


def answer_tokens(text: str) -> set[str]:
    """Content words of an answer (stemmed, stopwords out, number words as digits)."""
    return set(content_words(normalize_answer(text)))


def phrasing_words(caption: CaptionRecord) -> set[str]:
    """Answer tokens in over a quarter of C_detail's lines (and in more than two): the
    captioner's phrasing ("object", "screen"), not a detail a question can ask for."""
    others = [answer_tokens(x.text) for x in caption.detail]
    return {w for w in set().union(*others)
            if len(others) >= 4 and sum(w in o for o in others) > max(2, len(others) / 4)}


def answer_hint(caption: CaptionRecord, line: CaptionLine, seed: int = 0) -> str | None:
    """A word of the target line that C_sum lacks and few other lines share (words in over a
    quarter of the lines are the caption's phrasing, not a detail); longer words first, ties by
    a seeded draw. Digits are left out (number words are not)."""
    summary_words = answer_tokens(caption.summary)
    common = phrasing_words(caption)
    words: list[str] = []
    for w in re.findall(r"[A-Za-z]+", line.text):
        tok = answer_tokens(w)
        if tok and not tok & (summary_words | common) and w not in words:
            words.append(w)
    if not words:
        return None
    rng = random.Random(stable_id("hint", seed, caption.id, line.start, line.text))
    return max(words, key=lambda w: (min(len(w), 8), rng.random()))


@dataclass
class Match:
    """Whether a probe's answer equals the reference, and how that was decided."""

    same: bool
    method: str  # exact | tokens | disjoint | empty | judge | judge_error


async def answers_match(question: str, reference: str, candidate: str, judge: ChatModel,
                        tally: Counter[str] | None = None) -> Match:
    """M(Q) ≈ A: normalised exact match first; disjoint content words are a miss; the judge
    decides only what is left (partial overlaps)."""
    if not normalize_answer(candidate):
        return Match(False, "empty")
    if normalize_answer(candidate) == normalize_answer(reference):
        return Match(True, "exact")
    ref, cand = answer_tokens(reference), answer_tokens(candidate)
    if ref and ref == cand:
        return Match(True, "tokens")
    if not ref & cand:
        return Match(False, "disjoint")
    prompt = load_prompt("qa_same_answer.md").format(question=question, reference=reference,
                                                     candidate=candidate)
    try:
        reply = await ask(judge, prompt, SameAnswer, 16, tally, "equivalence")
    except SchemaError:
        return Match(False, "judge_error")
    return Match(bool(reply.same), "judge")


async def ask(model: ChatModel, prompt: str, schema: type[BaseModel], max_tokens: int,
              tally: Counter[str] | None, what: str, *, seed: int | None = None,
              temperature: float | None = None) -> Any:
    """One schema-constrained call; `tally[what]` counts calls that reached the model."""
    try:
        reply = await model.chat([{"role": "user", "content": prompt}], schema=schema,
                                 max_tokens=max_tokens, seed=seed, temperature=temperature)
    except SchemaError:  # it reached the model (failed replies are never cached)
        if tally is not None:
            tally[what] += 1
        raise
    if tally is not None and not reply.cached:
        tally[what] += 1
    return reply.parsed


# --- caption helpers ---------------------------------------------------------------------------
def line_text(line: CaptionLine) -> str:
    return f"[{mmss(line.start)}-{mmss(line.end)}] {line.text}"


def caption_window(caption: CaptionRecord, max_chars: int, around: float | None = None) -> str:
    """C_detail as prompt text, cut to a window of whole lines around `around` seconds (or from
    the start) when the whole caption is longer than `max_chars`."""
    lines = [line_text(c) for c in caption.detail]
    if sum(len(x) + 1 for x in lines) <= max_chars:
        return "\n".join(lines)
    centre = 0
    if around is not None:
        centre = min(range(len(lines)), key=lambda i: abs(caption.detail[i].start - around))
    lo = hi = centre
    size = len(lines[centre][:max_chars]) + 1
    while True:
        grown = False
        for j in (hi + 1, lo - 1):
            if 0 <= j < len(lines) and not lo <= j <= hi and size + len(lines[j]) + 1 <= max_chars:
                size += len(lines[j]) + 1
                lo, hi = min(lo, j), max(hi, j)
                grown = True
        if not grown:
            break
    return "\n".join([lines[centre][:max_chars]] if lo == hi else lines[lo: hi + 1])


def caption_windows(caption: CaptionRecord, max_chars: int, window_s: float
                    ) -> list[list[CaptionLine]]:
    """C_detail in consecutive windows of whole lines that together hold every line once: the
    video in equal spans of at most `window_s` seconds (a line goes where it starts), a span
    whose text is over `max_chars` split into the fewest pieces of about equal size that fit (a
    single longer line is a window alone)."""
    if not caption.detail:
        return []
    duration = max(caption.duration, max(x.start for x in caption.detail), 1e-6)
    k = max(1, math.ceil(duration / window_s - 1e-9))
    spans: list[list[CaptionLine]] = [[] for _ in range(k)]
    for line in caption.detail:
        spans[min(k - 1, int(line.start / (duration / k)))].append(line)
    out: list[list[CaptionLine]] = []
    for span in spans:
        sizes = [len(line_text(x)) + 1 for x in span]
        total, pieces = sum(sizes), max(1, math.ceil(sum(sizes) / max_chars))
        while True:  # the fewest equal pieces (by characters) that each fit
            split: list[list[CaptionLine]] = [[] for _ in range(pieces)]
            before = 0
            for line, n in zip(span, sizes, strict=True):
                split[min(pieces - 1, before * pieces // max(total, 1))].append(line)
                before += n
            split = [w for w in split if w]
            if pieces >= len(span) or all(
                    sum(len(line_text(x)) + 1 for x in w) <= max_chars for w in split):
                break
            pieces += 1
        out += split
    return out


def resolve_evidence(caption: CaptionRecord, stamps: list[str], per_stamp: int = 2
                     ) -> list[CaptionLine]:
    """The C_detail lines a candidate cites: lines whose span holds each cited time."""
    found: list[CaptionLine] = []
    for s in stamps:
        try:
            a, b = parse_timestamp(s)
        except ArgumentError:
            continue
        if b > a:  # a span: lines that overlap it
            hits = [c for c in caption.detail if c.start < b and a < c.end]
        else:  # a point (MM:SS is rounded): lines holding it, half a second either side
            hits = [c for c in caption.detail if c.start - 0.5 <= a <= c.end + 0.5]
        hits.sort(key=lambda c: abs(c.start - a))
        for c in hits[:per_stamp]:
            if c not in found:
                found.append(c)
    return sorted(found, key=lambda c: c.start)


# --- candidates and filter results -------------------------------------------------------------
@dataclass
class Candidate:
    """One question from M_qa with its id and the caption lines it cites."""

    id: str
    gen_id: str
    index: int
    video_id: str
    question: str
    answer: str
    qtype: str
    stamps: list[str]
    evidence: list[CaptionLine] = field(default_factory=list)


@dataclass
class FilterResult:
    """A filter's verdict: passed or not, a short reason, and the evidence behind it."""

    name: str
    passed: bool
    reason: str
    evidence: dict[str, Any]


@dataclass(frozen=True)
class Probe:
    """One panel member: a probe model asked through one prompt variant with one seed."""

    model: str
    prompt: str
    seed: int
    temperature: float


def probe_panel(cfg: Config) -> list[Probe]:
    """probes x probe_prompts members; past the 3 prompt files a variant repeats a prompt with
    sampling (temperature 0.7) and its own seed."""
    qa = cfg.synth.qa
    return [Probe(m, PROBE_PROMPTS[k % len(PROBE_PROMPTS)], cfg.synth.seed + k,
                  0.0 if k < len(PROBE_PROMPTS) else 0.7)
            for m in qa.probes for k in range(qa.probe_prompts)]


def panel_description(cfg: Config, models: Models) -> dict[str, Any]:
    """What the panel is, said plainly (one model under several prompts is not several models)."""
    panel = probe_panel(cfg)
    names = sorted({models[p.model].name for p in panel})
    note = (f"{len(panel)} members = {len(cfg.synth.qa.probes)} model(s) x "
            f"{cfg.synth.qa.probe_prompts} prompt/seed variants")
    if len(names) == 1 and len(panel) > 1:
        note += f"; one model ({names[0]}) under several prompts, not independent models"
    return {"members": [vars(p) | {"model_name": models[p.model].name} for p in panel],
            "models": names, "note": note}


def reject(stage: str, item_id: str, video_id: str, filt: str, reason: str,
           **evidence: Any) -> dict[str, Any]:
    """One rejected.jsonl line: stage, id, filter, reason and the evidence."""
    return {"stage": stage, "id": item_id, "video_id": video_id, "filter": filt,
            "reason": reason, **evidence}


# --- the three filters -------------------------------------------------------------------------
async def answer_verification(c: Candidate, caption: CaptionRecord, judge: ChatModel,
                              qa: QAConfig, tally: Counter[str] | None = None) -> FilterResult:
    """F1: the answer must be stated by C_detail. An answer sharing no word with C_detail is
    rejected without a call, and so is one sharing no word with the lines it cites (its
    evidence), unless it is a count over several lines. With `f1_line_support` an anchored
    question (one evidence line, its time named in the question) whose answer words are all
    words of that line, and not only the captioner's phrasing, is supported without a call.
    Otherwise the judge reads the cited lines and their neighbourhood."""
    detail_words = set(content_words(normalize_answer(" ".join(x.text for x in caption.detail))))
    words = answer_tokens(c.answer)
    if words and not words & detail_words:
        return FilterResult("F1", False, "answer_not_in_caption",
                            {"method": "lexical", "answer_words": sorted(words)})
    cited = set().union(*(answer_tokens(x.text) for x in c.evidence))
    count_over_lines = len(c.evidence) > 1 and all(w.isdigit() for w in words)
    if words and c.evidence and not words & cited and not count_over_lines:
        return FilterResult("F1", False, "answer_not_in_evidence",
                            {"method": "lexical", "answer_words": sorted(words),
                             "evidence": [line_text(x) for x in c.evidence]})
    if qa.f1_line_support and len(c.evidence) == 1 and words:
        line = c.evidence[0]
        if mmss(line.start) in c.question and words <= answer_tokens(line.text) and \
                not words <= phrasing_words(caption):
            return FilterResult("F1", True, "supported", {"method": "line_words",
                                                          "line": line_text(line)})
    detail = caption_window(caption, qa.max_context_chars, c.evidence[0].start)
    prompt = load_prompt("qa_verify.md").format(
        detail=detail, question=c.question, answer=c.answer,
        evidence="; ".join(line_text(x) for x in c.evidence))
    try:
        v = await ask(judge, prompt, Verdict, 40, tally, "F1")
    except SchemaError as e:
        return FilterResult("F1", False, "judge_schema_error", {"method": "judge",
                                                                "error": str(e)[:300]})
    return FilterResult("F1", bool(v.supported), "supported" if v.supported else "unsupported",
                        {"method": "judge", "judge_reason": v.reason})


async def probe_accuracy(name: str, c: Candidate, context: str, theta: float, cfg: Config,
                         models: Models, tally: Counter[str] | None = None) -> FilterResult:
    """Ask the panel; keep the question only if accuracy < theta, where accuracy is the paper's
    (1/|M_probe|) * sum 1(M(Q) ~ A): a member whose reply never fit the schema counts as not
    correct (`no_answer` says how many). A panel where no member answered measured nothing and
    rejects (`probe_schema_error`). With short_circuit the panel stops as soon as enough members
    were right to reject (a kept question is always asked of the whole panel)."""
    qa = cfg.synth.qa
    panel = probe_panel(cfg)
    judge = models[qa.judge]
    answers: list[dict[str, Any]] = []
    right = valid = 0
    for p in panel:
        prompt = load_prompt(p.prompt).format(context=context, question=c.question)
        try:
            got = await ask(models[p.model], prompt, ProbeAnswer, 32, tally, name, seed=p.seed,
                            temperature=p.temperature)
        except SchemaError as e:
            answers.append({"model": p.model, "prompt": p.prompt, "seed": p.seed,
                            "correct": False, "error": str(e)[:200]})
            continue
        m = await answers_match(c.question, c.answer, got.answer, judge, tally)
        valid += 1
        right += m.same
        answers.append({"model": p.model, "prompt": p.prompt, "seed": p.seed,
                        "answer": got.answer, "correct": m.same, "method": m.method})
        if qa.short_circuit and right >= theta * len(panel) and right > 0:
            break
    ev: dict[str, Any] = {"theta": theta, "answers": answers, "panel_size": len(panel),
                          "asked": len(answers), "valid": valid,
                          "no_answer": len(answers) - valid, "right": right}
    if valid == 0:
        return FilterResult(name, False, "probe_schema_error", ev)
    acc = right / len(panel)
    if len(answers) < len(panel):  # stopped early: members not asked cannot lower it
        ev["accuracy_at_least"] = acc
        return FilterResult(name, False, f"accuracy >= {acc:.2f} >= {theta} (short circuit)", ev)
    ev["accuracy"] = acc
    passed = acc < theta
    return FilterResult(name, passed, "kept" if passed else f"accuracy {acc:.2f} >= {theta}", ev)


async def text_bias_filter(c: Candidate, cfg: Config, models: Models,
                           tally: Counter[str] | None = None) -> FilterResult:
    """F2: the panel answers without any video information; keep if accuracy < theta_text."""
    return await probe_accuracy("F2", c, "", cfg.synth.qa.theta_text, cfg, models, tally)


async def summary_bias_filter(c: Candidate, summary: str, cfg: Config, models: Models,
                              tally: Counter[str] | None = None) -> FilterResult:
    """F3: the panel sees C_sum only; keep if accuracy < theta_sum."""
    context = f"Summary of a video: {summary or '(none)'}\n"
    return await probe_accuracy("F3", c, context, cfg.synth.qa.theta_sum, cfg, models, tally)


async def triple_filter(c: Candidate, caption: CaptionRecord, cfg: Config, models: Models,
                        tally: Counter[str] | None = None) -> list[FilterResult]:
    """F1, F2, F3 in `filter_order`; with short_circuit the first rejection ends it."""
    qa = cfg.synth.qa
    results: list[FilterResult] = []
    for name in qa.filter_order:
        if name == "F1":
            r = await answer_verification(c, caption, models[qa.judge], qa, tally)
        elif name == "F2":
            r = await text_bias_filter(c, cfg, models, tally)
        else:
            r = await summary_bias_filter(c, caption.summary, cfg, models, tally)
        results.append(r)
        if not r.passed and qa.short_circuit:
            break
    return results

