"""Stage 2: contrastive hard questions and the triple filter (paper section 2, "Contrastive Hard
QA + Triple Filtering").

M_qa(C_detail, C_sum) writes questions answerable from the detailed caption but not from the
summary (`contrastive_generation`); each candidate then meets F1 `answer_verification` (the
answer is supported by C_detail), F2 `text_bias_filter` (a probe panel without any video
information is right less often than theta_text) and F3 `summary_bias_filter` (the panel with
C_sum only is right less often than theta_sum). Accepted questions go to qa.jsonl with all the
evidence, every rejection to rejected.jsonl with its filter and reason; `reformulate_mcq`
(rewatch.synth.mcq) turns each accepted question into multiple-choice items.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, create_model

from rewatch.config import Config, QAConfig
from rewatch.models import ChatModel, ModelError, Models, SchemaError
from rewatch.schema import CaptionLine, CaptionRecord, QARecord, mmss
from rewatch.store import RunDir, stable_id
from rewatch.synth.tools import ArgumentError, content_words, parse_timestamp

log = logging.getLogger(__name__)
PROMPTS = Path(__file__).parent / "prompts"
STAGE = "qa"
PROBE_PROMPTS = ("qa_probe_1.md", "qa_probe_2.md", "qa_probe_3.md")


@cache
def load_prompt(name: str) -> str:
    """The text of a prompt file under synth/prompts/."""
    return (PROMPTS / name).read_text(encoding="utf-8")


# --- schemas of the model replies --------------------------------------------------------------
Short = Annotated[str, Field(max_length=60)]


@cache
def generation_schema(types: tuple[str, ...], n: int) -> type[BaseModel]:
    """The reply of M_qa: up to n questions, each typed from the configured list."""
    question = create_model(
        "GeneratedQuestion",
        question=(str, Field(min_length=8, max_length=200)),
        answer=(str, Field(min_length=1, max_length=60)),
        qtype=(Literal[types], ...),  # type: ignore[valid-type]
        evidence=(list[Annotated[str, Field(max_length=16)]], Field(min_length=1, max_length=3)),
    )
    return create_model(
        "GeneratedQuestions", questions=(list[question], Field(min_length=1, max_length=n))
    )


class Verdict(BaseModel):
    """F1: does C_detail support the answer?"""

    supported: bool
    reason: str = Field("", max_length=120)


class ProbeAnswer(BaseModel):
    """A probe's answer to an open question."""

    answer: Short


class SameAnswer(BaseModel):
    """The equivalence judge: M(Q) ≈ A?"""

    same: bool


# --- answer equivalence ------------------------------------------------------------------------
_NUMBERS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())}
_ARTICLES = {"a", "an", "the"}


def normalize_answer(text: str) -> str:
    """Lowercase, punctuation and articles dropped, number words as digits."""
    words = re.findall(r"[a-z0-9]+(?:\.[0-9]+)?", str(text).lower())
    return " ".join(_NUMBERS.get(w, w) for w in words if w not in _ARTICLES)


def answer_tokens(text: str) -> set[str]:
    """Content words of an answer (stemmed, stopwords out, number words as digits)."""
    return set(content_words(normalize_answer(text)))


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
    reply = await model.chat([{"role": "user", "content": prompt}], schema=schema,
                             max_tokens=max_tokens, seed=seed, temperature=temperature)
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


def resolve_evidence(caption: CaptionRecord, stamps: list[str], per_stamp: int = 2
                     ) -> list[CaptionLine]:
    """The C_detail lines a candidate cites: lines whose span holds each cited time."""
    found: list[CaptionLine] = []
    for s in stamps:
        try:
            a, b = parse_timestamp(s)
        except ArgumentError:
            continue
        hits = [c for c in caption.detail if c.start - 0.5 <= b and a <= c.end + 0.5]
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


def generation_checks(c: Candidate, seen: set[str]) -> str | None:
    """Cheap checks before any filter: the reason a candidate is malformed, or None."""
    if not normalize_answer(c.answer):
        return "empty_answer"
    if not c.evidence:
        return f"evidence_not_in_caption: cited {c.stamps} match no C_detail line"
    q, a = f" {normalize_answer(c.question)} ", normalize_answer(c.answer)
    if f" {a} " in q:
        return "answer_in_question"
    if q in seen:
        return "duplicate_question"
    seen.add(q)
    return None


# --- the paper's steps -------------------------------------------------------------------------
async def contrastive_generation(caption: CaptionRecord, generator: ChatModel, qa: QAConfig,
                                 tally: Counter[str] | None = None) -> list[dict[str, Any]]:
    """M_qa(C_detail, C_sum): questions answered by the detailed caption, not by the summary.
    Raises SchemaError when the reply never fits."""
    schema = generation_schema(tuple(qa.question_types), qa.questions_per_video)
    prompt = load_prompt("qa_generate.md").format(
        detail=caption_window(caption, qa.max_context_chars), summary=caption.summary or "(none)",
        n=qa.questions_per_video, types=", ".join(qa.question_types))
    reply = await ask(generator, prompt, schema, 100 * qa.questions_per_video + 40, tally,
                      "generation")
    return [q.model_dump() for q in reply.questions]


async def answer_verification(c: Candidate, caption: CaptionRecord, judge: ChatModel,
                              qa: QAConfig, tally: Counter[str] | None = None) -> FilterResult:
    """F1: the answer must be stated by C_detail. An answer sharing no word with C_detail is
    rejected without a call; otherwise the judge reads the cited lines and their neighbourhood."""
    detail_words = set(content_words(normalize_answer(" ".join(x.text for x in caption.detail))))
    words = answer_tokens(c.answer)
    if words and not words & detail_words:
        return FilterResult("F1", False, "answer_not_in_caption",
                            {"method": "lexical", "answer_words": sorted(words)})
    detail = caption_window(caption, qa.max_context_chars, c.evidence[0].start)
    prompt = load_prompt("qa_verify.md").format(
        detail=detail, question=c.question, answer=c.answer,
        evidence="; ".join(line_text(x) for x in c.evidence))
    try:
        v = await ask(judge, prompt, Verdict, 60, tally, "F1")
    except SchemaError as e:
        return FilterResult("F1", False, "judge_schema_error", {"method": "judge",
                                                                "error": str(e)[:300]})
    return FilterResult("F1", bool(v.supported), "supported" if v.supported else "unsupported",
                        {"method": "judge", "judge_reason": v.reason})


async def probe_accuracy(name: str, c: Candidate, context: str, theta: float, cfg: Config,
                         models: Models, tally: Counter[str] | None = None) -> FilterResult:
    """Ask the panel; keep the question only if accuracy < theta. With short_circuit the panel
    stops as soon as enough members were right to reject (a kept question is always asked of
    the whole panel)."""
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
                            "error": str(e)[:200]})
            continue
        m = await answers_match(c.question, c.answer, got.answer, judge, tally)
        valid += 1
        right += m.same
        answers.append({"model": p.model, "prompt": p.prompt, "seed": p.seed,
                        "answer": got.answer, "correct": m.same, "method": m.method})
        if qa.short_circuit and right >= theta * len(panel) and right > 0:
            break
    ev: dict[str, Any] = {"theta": theta, "answers": answers, "panel_size": len(panel),
                          "asked": len(answers), "valid": valid, "right": right}
    if valid == 0:
        return FilterResult(name, False, "probe_schema_error", ev)
    if len(answers) < len(panel):  # stopped early: even all-wrong remaining members keep it >=
        acc = right / (valid + len(panel) - len(answers))
        ev["accuracy_at_least"] = acc
        return FilterResult(name, False, f"accuracy >= {acc:.2f} >= {theta} (short circuit)", ev)
    acc = right / valid
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


# --- Stage 2 over a run directory --------------------------------------------------------------
def generation_id(caption: CaptionRecord, cfg: Config) -> str:
    """Stable id of one M_qa call: the caption and every setting that changes the questions."""
    qa = cfg.synth.qa
    return stable_id(STAGE, caption.id, cfg.models[qa.generator].model_dump(),
                     qa.question_types, qa.questions_per_video, qa.max_context_chars,
                     load_prompt("qa_generate.md"))


def generation_index(rec: QARecord) -> int:
    """The position of an accepted question in its M_qa reply (the order of a video's items)."""
    gen = rec.filters.get("generation")
    return int(gen.get("index", 0)) if isinstance(gen, dict) else 0


def reject(stage: str, item_id: str, video_id: str, filt: str, reason: str,
           **evidence: Any) -> dict[str, Any]:
    """One rejected.jsonl line: stage, id, filter, reason and the evidence."""
    return {"stage": stage, "id": item_id, "video_id": video_id, "filter": filt,
            "reason": reason, **evidence}


@dataclass
class _Done:
    """What the run directory already holds (resume)."""

    qa_rows: dict[str, dict[str, Any]]
    rejected_ids: set[str]
    mcq_qa_ids: set[str]  # accepted questions whose MCQ items are written or rejected
    by_gen: dict[str, tuple[int, set[str]]]  # gen_id -> (candidates, decided candidate ids)
    mcq_ids: set[str]

    @classmethod
    def load(cls, run: RunDir, per_question: int) -> _Done:
        qa_rows = list(run.file("qa.jsonl").read())
        rej_rows = list(run.file("rejected.jsonl").read())
        by_gen: dict[str, tuple[int, set[str]]] = {}
        for r in qa_rows + [x for x in rej_rows if x.get("stage") == STAGE]:
            g = (r.get("filters") or {}).get("generation") or r.get("generation") or {}
            if "gen_id" in g:
                n, ids = by_gen.setdefault(g["gen_id"], (g.get("candidates", 0), set()))
                ids.add(r["id"])
        mcq_rows = list(run.file("mcq.jsonl").read())
        per_qa = Counter(r.get("qa_id") for r in mcq_rows)
        mcq_qa = {k for k, n in per_qa.items() if n >= per_question}
        mcq_qa |= {r["qa_id"] for r in rej_rows if r.get("stage") == "mcq" and "qa_id" in r}
        return cls({r["id"]: r for r in qa_rows}, {r["id"] for r in rej_rows}, mcq_qa, by_gen,
                   {r["id"] for r in mcq_rows})

    def video_done(self, gen_id: str) -> bool:
        if gen_id in self.rejected_ids:
            return True
        n, ids = self.by_gen.get(gen_id, (0, set()))
        return n > 0 and len(ids) >= n and all(
            i in self.mcq_qa_ids for i in ids if i in self.qa_rows)


async def generate_qa(run: RunDir, cfg: Config, models: Models, progress: Any = None
                      ) -> dict[str, Any]:
    """Stage 2 over a run directory: captions.jsonl -> qa.jsonl, mcq.jsonl, rejected.jsonl.

    Resumable: finished videos are skipped without a model call; a video cut off half-way
    replays its finished calls from the response cache. Returns counts (per filter, per step).
    """
    from rewatch.synth.mcq import LetterBalancer, build_video_mcqs

    qa = cfg.synth.qa
    captions = [CaptionRecord.model_validate(r) for r in run.file("captions.jsonl").read()]
    qa_file, rej_file, mcq_file = (run.file(n) for n in ("qa.jsonl", "rejected.jsonl",
                                                         "mcq.jsonl"))
    done = _Done.load(run, qa.mcq_per_question)
    balancer = LetterBalancer.from_file(mcq_file, qa.num_options, cfg.synth.seed)
    panel = panel_description(cfg, models)
    tally: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    rejected_by: Counter[str] = Counter()
    sem = asyncio.Semaphore(cfg.synth.concurrency)
    task = progress.add_task("stage 2: questions", total=len(captions)) if progress else None

    def write_reject(row: dict[str, Any]) -> None:
        rej_file.append(row)
        rejected_by[f"{row['stage']}:{row['filter']}"] += 1

    async def one_candidate(caption: CaptionRecord, c: Candidate, n: int, seen: set[str]
                            ) -> QARecord | None:
        gen = {"gen_id": c.gen_id, "index": c.index, "candidates": n,
               "generator": models[qa.generator].name}
        base = {"question": c.question, "answer": c.answer, "qtype": c.qtype,
                "evidence_lines": [line_text(x) for x in c.evidence], "generation": gen}
        problem = generation_checks(c, seen)
        if problem:
            write_reject(reject(STAGE, c.id, c.video_id, "generation", problem, **base))
            return None
        async with sem:
            results = await triple_filter(c, caption, cfg, models, tally)
        verdicts = {r.name: {"passed": r.passed, "reason": r.reason, **r.evidence}
                    for r in results}
        failed = next((r for r in results if not r.passed), None)
        if failed is not None:
            write_reject(reject(STAGE, c.id, c.video_id, failed.name, failed.reason,
                                filters=verdicts, **base))
            return None
        rec = QARecord(id=c.id, video_id=c.video_id, question=c.question, answer=c.answer,
                       qtype=c.qtype, evidence=[line_text(x) for x in c.evidence],
                       filters={"generation": gen, "order": list(qa.filter_order), **verdicts,
                                "panel": panel})
        qa_file.append(rec)
        counts["accepted"] += 1
        return rec

    async def one_video(caption: CaptionRecord) -> None:
        gen_id = generation_id(caption, cfg)
        try:
            if done.video_done(gen_id):
                counts["videos_skipped"] += 1
                return
            counts["videos"] += 1
            lines = [x for x in caption.detail if x.text.strip()]
            if len(lines) < qa.min_caption_lines:
                why = "empty_caption" if not lines else (
                    f"caption_too_short: {len(lines)} line(s), min_caption_lines="
                    f"{qa.min_caption_lines}")
                write_reject(reject(STAGE, gen_id, caption.video_id, "input", why,
                                    caption_id=caption.id))
                return
            try:
                async with sem:
                    raw = await contrastive_generation(caption, models[qa.generator], qa, tally)
            except SchemaError as e:
                write_reject(reject(STAGE, gen_id, caption.video_id, "generation",
                                    "schema_error", caption_id=caption.id, error=str(e)[:500]))
                return
            seen: set[str] = set()
            cands = []
            for i, q in enumerate(raw):
                c = Candidate(stable_id(gen_id, i), gen_id, i, caption.video_id,
                              q["question"].strip(), q["answer"].strip(), q["qtype"],
                              q["evidence"])
                c.evidence = resolve_evidence(caption, c.stamps)
                cands.append(c)
            counts["candidates"] += len(cands)
            todo = [c for c in cands if c.id not in done.qa_rows and c.id not in
                    done.rejected_ids]
            for c in cands:  # earlier questions count as seen for duplicate checks
                if c not in todo:
                    seen.add(f" {normalize_answer(c.question)} ")
            new = await asyncio.gather(*(one_candidate(caption, c, len(cands), seen)
                                         for c in todo))
            accepted = [r for r in new if r is not None] + [
                QARecord.model_validate(done.qa_rows[c.id]) for c in cands
                if c.id in done.qa_rows]
            todo_mcq = sorted((r for r in accepted if r.id not in done.mcq_qa_ids),
                              key=generation_index)
            async with sem:
                items, rejections = await build_video_mcqs(todo_mcq, caption, cfg, models,
                                                           balancer, tally, done.mcq_ids)
            for row in rejections:
                write_reject(row)
            for m in items:
                if m.id not in mcq_file:
                    mcq_file.append(m)
                    counts["mcq"] += 1
        except ModelError as e:
            run.record_error(STAGE, gen_id, e)
            counts["errors"] += 1
        finally:
            if progress is not None:
                progress.advance(task)

    await asyncio.gather(*(one_video(c) for c in captions))
    out: dict[str, Any] = {k: counts[k] for k in ("videos", "videos_skipped", "candidates",
                                                  "accepted", "mcq", "errors")}
    out["rejected"] = dict(rejected_by)
    out["calls"] = dict(tally)
    out["calls_total"] = sum(tally.values())
    return out
