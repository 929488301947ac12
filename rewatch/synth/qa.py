"""Stage 2: contrastive hard questions and the triple filter (paper section 2, "Contrastive Hard
QA + Triple Filtering").

M_qa(C_detail, C_sum) writes questions answerable from the detailed caption but not from the
summary (`contrastive_generation`); each candidate then meets F1 `answer_verification` (the
answer is supported by C_detail), F2 `text_bias_filter` (a probe panel without any video
information is right less often than theta_text) and F3 `summary_bias_filter` (the panel with
C_sum only is right less often than theta_sum); the filters live in rewatch.synth.qa_filters.
Accepted questions go to qa.jsonl with all the evidence, every rejection to rejected.jsonl with
its filter and reason; `reformulate_mcq` (rewatch.synth.mcq) turns each accepted question into
multiple-choice items.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydantic import BaseModel, Field, create_model

from rewatch.config import Config, QAConfig
from rewatch.models import ChatModel, ModelError, Models, SchemaError
from rewatch.schema import CaptionLine, CaptionRecord, QARecord, mmss
from rewatch.store import Emit, RunDir, error_record, stable_id
from rewatch.synth.mcq import LetterBalancer, build_video_mcqs
from rewatch.synth.qa_filters import (
    ASKS_DIRECTION,
    Candidate,
    answer_hint,
    answer_tokens,
    answer_verification,
    answers_match,
    ask,
    caption_window,
    line_text,
    load_prompt,
    normalize_answer,
    panel_description,
    phrasing_words,
    probe_panel,
    reject,
    resolve_evidence,
    summary_bias_filter,
    text_bias_filter,
    triple_filter,
)
from rewatch.synth.qa_free import contrastive_generation, one_of, window_budget
from rewatch.text import numbers_in

__all__ = [
    "Candidate", "answer_tokens", "answer_verification", "answers_match", "anchored_generation",
    "contrastive_generation", "contrastive_targets", "generate_qa", "normalize_answer",
    "QAContext", "video_questions",
    "probe_panel", "summary_bias_filter", "text_bias_filter", "triple_filter",
]

log = logging.getLogger(__name__)
STAGE = "qa"


# --- contrastive generation --------------------------------------------------------------------
# a question: opens with a question or time word, ends with "?" (the grammar holds a small
# model to this; it otherwise writes identifiers or statements); no brackets (a 1.5B model
# otherwise runs on into caption lines: "... and the new00:00-00:00] Two objects are ...?");
# printable ASCII only (at a loss it padded a question with full-width marks: "... 00:00-  ？?"),
# and no braces or other code marks (after a line's span it closed a bracket that is not there:
# "the yellow 00:04-00:08} disappears", 2 accepted questions of two runs of 0e3aa56); "_" stays
# for a cloze's blank ("which word fills the blank: ___ shapes appear?")
_Q_CHARS = r"[ !#->@-Z_a-z]"
_Q_CHARS_NO_DIGIT = r"[ !#-/:->@-Z_a-z]"
_Q_CHARS_NO_DIGIT_DASH = r"[ !#-,./:->@-Z_a-z]"
QUESTION_PATTERN = (r"^(What|Which|When|Where|How|Who|Why|Whose|In|At|After|Before|During|Is|"
                    rf"Are|Does|Do) {_Q_CHARS}{{4,180}}\?$")


class AnchoredQuestion(BaseModel):
    """The reply of M_qa in anchored mode: one question about one target line."""

    answer: str = Field(min_length=1, max_length=60)
    question: str = Field(min_length=8, max_length=200, pattern=QUESTION_PATTERN)


@cache
def fixed_answer_schema(answer: str | None, about: tuple[str, ...] = (),
                        span_end: str | None = None) -> type[BaseModel]:
    """AnchoredQuestion with the answer forced to `answer` (answer_hint=fix; None: free): the
    model writes the question to it (the answer comes first, so the question is written
    knowing it), and with `about` the question must name one of those words of the target
    line (or its time, with `anchor_time`; `span_end` lets it name the line's whole span,
    "00:03-00:07")."""
    pattern = QUESTION_PATTERN
    if about:
        alts = "|".join(re.escape(w) for w in about)
        # at most 80 characters after the named word or time: past that the 1.5B model was
        # running on into caption text ("... at 00:02 when the navy blob appears in the centre
        # and a00:00-00:00 the dark gray blob is in the centre?"). The named word or time
        # follows a space; a question that must name its time writes no other digit: 7 of 36
        # questions of demo run c5e505d glued a time to a word or listed other times
        # ("slowly00:02-00:04", "at 00:04, 400:02")
        timed = all(re.fullmatch(r"\d{2}:\d{2}", w) for w in about)
        rest = _Q_CHARS_NO_DIGIT if timed else _Q_CHARS
        after = rf"{rest}{{0,80}}"
        if timed:
            # the 1.5B model wants to write the target line's whole span: held to its start it
            # wrote "00:03- ?" (3 of 20 candidates of a held-out run of 03538a5). The time is
            # followed by the span's end or by no dash
            span = rf"(-{re.escape(span_end)})?" if span_end else ""
            after = rf"{span}({_Q_CHARS_NO_DIGIT_DASH}{rest}{{0,79}})?"
        pattern = QUESTION_PATTERN.replace(rf"{_Q_CHARS}{{4,180}}\?$",
                                           rf"({rest}{{0,89}} )?({alts}){after}\?$")
    answer_type: Any = (one_of((answer,)), ...) if answer is not None else (
        str, Field(min_length=1, max_length=60))
    return create_model("AnchoredQuestion", answer=answer_type,
                        question=(str, Field(min_length=8, max_length=200, pattern=pattern)))


def line_words(line: CaptionLine, answer: str, limit: int = 8) -> tuple[str, ...]:
    """Lowercase words of a caption line a question about it can name (not the answer)."""
    skip = answer_tokens(answer)
    out: list[str] = []
    for w in re.findall(r"[a-z]{3,}", line.text.lower()):
        if answer_tokens(w) and not answer_tokens(w) & skip and w not in out:
            out.append(w)
    return tuple(out[:limit])


def ambiguous_lines(caption: CaptionRecord) -> set[int]:
    """Indices of lines another line contradicts at the same MM:SS: the same sentence with
    another number ("[00:03] Two objects are on screen now." for a line at 2.6 s, "[00:03] Five
    objects ..." at 3.0 s). At the caption's resolution "just after 00:03" is either."""
    def form(text: str) -> str:
        return " ".join("#" if numbers_in(w) else w for w in text.lower().split())

    by_key: dict[tuple[str, str], set[str]] = {}
    for c in caption.detail:
        by_key.setdefault((mmss(c.start), form(c.text)), set()).add(c.text)
    return {i for i, c in enumerate(caption.detail)
            if len(by_key[(mmss(c.start), form(c.text))]) > 1}


def contrastive_targets(caption: CaptionRecord, n: int, seed: int = 0) -> list[CaptionLine]:
    """The n C_detail lines the summary covers least (share of their content words absent from
    C_sum), in time order: where a detail-only question can be found. A line another line
    contradicts at the same MM:SS (`ambiguous_lines`) is no target."""
    summary_words = set(answer_tokens(caption.summary))
    rng = random.Random(stable_id("targets", seed, caption.id))
    scored = []
    seen: set[str] = set()
    ambiguous = ambiguous_lines(caption)
    for i, line in enumerate(caption.detail):
        words = answer_tokens(line.text)
        if len(words) < 2 or line.text in seen or i in ambiguous:
            continue
        seen.add(line.text)
        novel = words - summary_words
        scored.append((len(novel) / len(words), len(novel), rng.random(), line))
    scored.sort(key=lambda x: x[:3], reverse=True)
    return sorted((x[3] for x in scored[:n]), key=lambda c: c.start)


def target_types(caption: CaptionRecord, qa: QAConfig, n: int, seed: int = 0) -> list[str]:
    """Question types for n anchored questions: the configured list in turn, from a seeded
    offset per video, so the type mix follows the config."""
    off = random.Random(stable_id("types", seed, caption.id)).randrange(len(qa.question_types))
    return [qa.question_types[(off + i) % len(qa.question_types)] for i in range(n)]


async def anchored_generation(caption: CaptionRecord, line: CaptionLine, qtype: str,
                              generator: ChatModel, qa: QAConfig, seed: int = 0,
                              tally: Counter[str] | None = None) -> dict[str, Any]:
    """M_qa(C_detail, C_sum) on one target line: a question of `qtype` whose answer is in that
    line and not in the summary; the evidence is the line. Raises SchemaError."""
    hint = answer_hint(caption, line, seed) if qa.answer_hint != "off" else None
    prompt = load_prompt("qa_generate_anchored.md").format(
        context=caption_window(caption, qa.anchor_context_chars, line.start),
        summary=caption.summary or "(none)", line=line_text(line), qtype=qtype,
        hint=f'Answer: "{hint}"\n' if hint else "")
    schema: type[BaseModel] = AnchoredQuestion
    if hint and qa.answer_hint == "fix":
        schema = fixed_answer_schema(hint, line_words(line, hint))
    elif qa.anchor_time:  # the question names the target line's time: one moment, no doubt
        start, end = mmss(line.start), mmss(line.end)
        schema = fixed_answer_schema(None, (start,), end if end != start else None)
    got = await ask(generator, prompt, schema, 120, tally, "generation")
    return {"question": got.question, "answer": got.answer, "qtype": qtype,
            "evidence": [f"{mmss(line.start)}-{mmss(line.end)}"], "line": line}


# words that follow a head noun rather than being modified by the word before them
_AFTER_NOUN = frozenset(
    "at that which who when where while in on to from after before as and or is are was were "
    "moves move moving appears appear appearing leaves leave stays stay does do has have "
    "comes come goes go".split())


def repair_answer_in_question(question: str, answer: str, phrasing: set[str]) -> str | None:
    """A wh-question that names its own answer, with the answer taken out, or None.

    The 1.5B M_qa writes "What colour is the dark green blob ...?" for the answer "green" in
    most anchored calls, and told so, writes it again (1 of 11 fixed on a retry, measured on a
    demo run's rejections). The question is still the right one once the answer is out: a
    modifier is deleted ("the dark green blob" -> "the dark blob"), a one-word head noun
    followed by a preposition or verb becomes "object" ("the black triangle at 00:03" ->
    "the black object at 00:03"). Nothing else is rewritten: yes/no questions (deleting the
    answer would change what they ask), answers that are the captioner's phrasing (`phrasing`,
    e.g. "screen"), "How many" questions (the count's noun may not be what is counted) and
    answers in any other position stay rejected. The repaired question
    then meets every check and filter like any other."""
    if not re.match(r"^(What|Which|How|Where|When|Who)\b", question) or \
            question.lower().startswith("how many"):  # "three squares" out: circles counted
        return None
    words = answer.split()
    if not words or answer_tokens(answer) & phrasing:
        return None
    pattern = re.compile(r"(?<![\w-])" + r"\s+".join(map(re.escape, words)) + r"(?![\w-])",
                         re.I)

    def fix(m: re.Match[str]) -> str:
        before = re.findall(r"[A-Za-z]+", question[:m.start()])
        after = re.match(r"\s*([A-Za-z]+)", question[m.end():])
        if after and after.group(1).lower() not in _AFTER_NOUN:
            return ""  # a modifier of the next word
        if after and len(words) == 1 and before and before[-1].lower() not in _AFTER_NOUN:
            return "object"  # the head noun
        raise ValueError("answer in no position that can be taken out")

    try:
        out = " ".join(pattern.sub(fix, question).split()).replace(" ?", "?")
    except ValueError:
        return None
    if re.search(rf"(?<!\w){re.escape(normalize_answer(answer))}(?!\w)",
                 normalize_answer(out)) or not re.match(QUESTION_PATTERN, out):
        return None
    return out


_ASKS_WHICH_THING = re.compile(r"\b(which|what)\b(\s+\w+){0,3}?\s+(objects?|shapes?|things?|"
                               r"colou?rs?|kind|type)\b", re.I)
_MOTION = re.compile(r"\b(mov|walk|run|driv|fl[iy]|turn|go|head|travel|roll|slid|fall|fell|ris|"
                     r"rose|cross|pan|swim|climb|jump|drift)(e|es|ed|s|ing|ning|ving)?\b", re.I)
_TIME_IN_TEXT = re.compile(r"(?<![\d:])(\d{1,2}):(\d{2})(?::(\d{2}))?(?![\d:])")


_NAMES_PROMPT = re.compile(r"\b(target line|caption ?lines?|cited lines?)\b", re.I)


def time_problem(question: str, duration: float) -> str | None:
    """A time the question names that cannot be read or lies past the video's end ("at
    00:06:06" in a 12-second video, "is00:09" glued to a word), or None."""
    if re.search(r"[A-Za-z]\d{1,2}:\d{2}|\d{3,}:\d{2}", question):
        return f"malformed_time: {question!r} glues a time to a word or a number"
    for m in _TIME_IN_TEXT.finditer(question):
        h, mm, ss = (int(m[1]), int(m[2]), int(m[3])) if m[3] else (0, int(m[1]), int(m[2]))
        if ss > 59 or mm > 59 and m[3] or h * 3600 + mm * 60 + ss > duration + 1:
            return f"time_outside_video: {m[0]} (video runs {mmss(0)}-{mmss(duration)})"
    return None


def generation_checks(c: Candidate, seen: set[str], duration: float | None = None
                      ) -> str | None:
    """Cheap checks before any filter: the reason a candidate is malformed, or None."""
    if not normalize_answer(c.answer):
        return "empty_answer"
    if duration is not None and (bad := time_problem(c.question, duration)):
        return bad
    # a count does not answer which object or attribute, and "how many" is answered by a count
    # ("Which object is on screen just after 00:09?" -> "one"; "What is the second object
    # ...?" -> "two")
    count = bool(numbers_in(c.answer)) and ":" not in c.answer and len(c.answer.split()) <= 2
    if count and _ASKS_WHICH_THING.search(c.question):
        return "answer_type_mismatch: a count answers a question about which thing"
    if not count and re.search(r"\bhow many\b", c.question, re.I):
        return "answer_type_mismatch: 'how many' is not answered by a count"
    if not c.evidence:
        return f"evidence_not_in_caption: cited {c.stamps} match no C_detail line"
    # a question about the video, not about the prompt M_qa read (held-out run: "What detail
    # does the target line describe about the pink object at 00:06?"), and no time range left
    # open ("... before any movement occurs, 00:00- ?")
    if _NAMES_PROMPT.search(c.question):
        return "question_names_the_prompt"
    if re.search(r"\d:\d{2}\s*-(?!\s*\d)", c.question):
        return "malformed_time: a time range with no end"
    # which way something moves, asked of lines where nothing moves (demo run be00494: "Which
    # direction does the green square move ... at 00:01?" -> "left", of "The green square
    # stays still at the top left.")
    if ASKS_DIRECTION.search(c.question) and not _MOTION.search(
            " ".join(x.text for x in c.evidence)):
        return "answer_type_mismatch: asks which way it moves; its evidence shows no motion"
    q, a = f" {normalize_answer(c.question)} ", normalize_answer(c.answer)
    if f" {a} " in q:
        return "answer_in_question"
    # the question names something of its evidence lines (a word of the answer may be it:
    # "What colour is the background ..." -> "gray background")
    about = answer_tokens(" ".join(x.text for x in c.evidence))
    if not answer_tokens(c.question) & about:
        return "question_not_about_evidence"
    if q in seen:
        return "duplicate_question"
    seen.add(q)
    return None


# --- Stage 2 over a run directory --------------------------------------------------------------
def generation_id(caption: CaptionRecord, cfg: Config) -> str:
    """Stable id of a video's generation: the caption and every setting that changes it."""
    qa = cfg.synth.qa
    mode_prompt = "qa_generate.md" if qa.generation == "free" else "qa_generate_anchored.md"
    free = (qa.window_s, qa.cross_window_questions, load_prompt("qa_generate_cross.md")
            ) if qa.generation == "free" else ()
    return stable_id(STAGE, caption.id, cfg.models[qa.generator].identity(), qa.generation,
                     qa.question_types, qa.questions_per_video, qa.max_context_chars,
                     qa.anchor_context_chars, qa.answer_hint, qa.anchor_time,
                     qa.repair_answer_in_question, cfg.synth.seed,
                     load_prompt(mode_prompt), *free)


def generation_index(rec: QARecord) -> int:
    """The position of an accepted question among its video's candidates."""
    gen = rec.filters.get("generation")
    return int(gen.get("index", 0)) if isinstance(gen, dict) else 0


@dataclass
class _Done:
    """What the run directory already holds (resume)."""

    qa_rows: dict[str, dict[str, Any]]
    rejected_ids: set[str]
    mcq_qa_ids: set[str]  # accepted questions whose MCQ items are all written, or rejected
    by_gen: dict[str, tuple[int, set[str]]]  # gen_id -> (candidates, decided candidate ids)
    mcq_ids: set[str]
    letters: dict[str, Counter[str]] = field(default_factory=dict)  # video_id -> MCQ letters

    @classmethod
    def load(cls, run: RunDir, per_question: int) -> _Done:
        qa_rows = list(run.file("qa.jsonl").read())
        rej_rows = list(run.file("rejected.jsonl").read())
        by_gen: dict[str, tuple[int, set[str]]] = {}
        for r in qa_rows + [x for x in rej_rows if x.get("stage") == STAGE]:
            g = (r.get("filters") or {}).get("generation") or r.get("generation") or {}
            if "gen_id" in g:
                _n, ids = by_gen.setdefault(g["gen_id"], (g.get("candidates", 0), set()))
                ids.add(r["id"])
        mcq_rows = list(run.file("mcq.jsonl").read())
        per_qa = Counter(r.get("qa_id") for r in mcq_rows)
        mcq_qa = {k for k, n in per_qa.items() if k and n >= per_question}
        mcq_qa |= {r["qa_id"] for r in rej_rows if r.get("stage") == "mcq" and "qa_id" in r}
        letters: dict[str, Counter[str]] = {}
        for r in mcq_rows:
            letters.setdefault(r.get("video_id", ""), Counter())[r.get("answer", "")] += 1
        return cls({r["id"]: r for r in qa_rows}, {r["id"] for r in rej_rows}, mcq_qa, by_gen,
                   {r["id"] for r in mcq_rows}, letters)

    def decided(self, item_id: str) -> bool:
        return item_id in self.qa_rows or item_id in self.rejected_ids

    def video_done(self, gen_id: str) -> bool:
        if gen_id in self.rejected_ids:
            return True
        n, ids = self.by_gen.get(gen_id, (0, set()))
        return n > 0 and len(ids) >= n and all(
            i in self.mcq_qa_ids for i in ids if i in self.qa_rows)


@dataclass
class QAContext:
    """What Stage 2's per-video function needs besides the caption: the config, the models,
    what the run already holds, and this process's bound on model calls in flight."""

    cfg: Config
    models: Models
    done: _Done
    sem: asyncio.Semaphore
    tally: Counter[str] = field(default_factory=Counter)  # model calls per step

    @property
    def generator(self) -> ChatModel:
        return self.models[self.cfg.synth.qa.generator]


async def video_questions(caption: CaptionRecord, ctx: QAContext, emit: Emit) -> Counter[str]:
    """Stage 2 as a function of one video: contrastive generation, the triple filter and the
    MCQ reformulation of one caption, its qa.jsonl, mcq.jsonl, rejected.jsonl and errors.jsonl
    records going to `emit`. Returns its counts ("rejected:<stage>:<filter>" per rejection).
    The MCQ answer letters are balanced within the video (from the letters it already has), so
    a video's items do not depend on which other videos ran before it: the same records under
    any driver and order."""
    cfg, models, done, sem, tally = ctx.cfg, ctx.models, ctx.done, ctx.sem, ctx.tally
    qa = cfg.synth.qa
    generator = ctx.generator
    counts: Counter[str] = Counter()

    def write_reject(row: dict[str, Any]) -> None:
        emit("rejected.jsonl", row)
        counts[f"rejected:{row['stage']}:{row['filter']}"] += 1

    async def generate(gen_id: str) -> list[dict[str, Any]] | None:
        """Raw candidates (a dict each; {"error": ...} for an anchored call that never fit), or
        None when the free-mode call failed and the video was rejected."""
        if qa.generation == "free":
            budget = window_budget(cfg.models[qa.generator], qa, caption)
            try:  # window by window, each call under the semaphore
                return await contrastive_generation(caption, generator, qa, budget, tally,
                                                    gate=sem)
            except SchemaError as e:
                write_reject(reject(STAGE, gen_id, caption.video_id, "generation",
                                    "schema_error", caption_id=caption.id, error=str(e)[:500]))
                return None
        targets = contrastive_targets(caption, qa.questions_per_video, cfg.synth.seed)
        types = target_types(caption, qa, len(targets), cfg.synth.seed)

        async def one(i: int, line: CaptionLine, qtype: str) -> dict[str, Any]:
            stamp = {"question": "", "answer": "", "qtype": qtype,
                     "evidence": [f"{mmss(line.start)}-{mmss(line.end)}"], "line": line}
            if done.decided(stable_id(gen_id, i)):
                return stamp | {"decided": True}
            try:
                async with sem:
                    return await anchored_generation(caption, line, qtype, generator, qa,
                                                     cfg.synth.seed, tally)
            except SchemaError as e:
                return stamp | {"error": str(e)[:500]}

        return list(await asyncio.gather(*(one(i, ln, t) for i, (ln, t) in
                                           enumerate(zip(targets, types, strict=True)))))

    async def filter_candidate(c: Candidate, gen: dict[str, Any]) -> QARecord | None:
        base = {"question": c.question, "answer": c.answer, "qtype": c.qtype,
                "evidence_lines": [line_text(x) for x in c.evidence], "generation": gen}
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
                                "panel": panel_description(cfg, models)})
        emit("qa.jsonl", rec)
        counts["accepted"] += 1
        return rec

    gen_id = generation_id(caption, cfg)
    try:
        if done.video_done(gen_id):
            counts["videos_skipped"] += 1
            return counts
        counts["videos"] += 1
        lines = [x for x in caption.detail if x.text.strip()]
        if len(lines) < qa.min_caption_lines:
            why = "empty_caption" if not lines else (
                f"caption_too_short: {len(lines)} line(s), min_caption_lines="
                f"{qa.min_caption_lines}")
            write_reject(reject(STAGE, gen_id, caption.video_id, "input", why,
                                caption_id=caption.id))
            return counts
        raw = await generate(gen_id)
        if raw is None:
            return counts
        counts["candidates"] += len(raw)
        phrasing = phrasing_words(caption)
        seen: set[str] = set()
        todo: list[tuple[Candidate, dict[str, Any]]] = []
        for i, q in enumerate(raw):  # checks in candidate order: duplicates are the later
            c = Candidate(stable_id(gen_id, i), gen_id, i, caption.video_id,
                          q["question"].strip(), q["answer"].strip(), q["qtype"],
                          q["evidence"])
            c.evidence = [q["line"]] if "line" in q else resolve_evidence(caption, c.stamps)
            gen = {"gen_id": gen_id, "index": i, "candidates": len(raw),
                   "mode": qa.generation, "generator": generator.name,
                   **({"window": q["window"]} if "window" in q else {})}
            if q.get("decided") or done.decided(c.id):
                prev = done.qa_rows.get(c.id)
                if prev is not None:
                    seen.add(f" {normalize_answer(prev['question'])} ")
                continue
            if qa.repair_answer_in_question and "error" not in q and \
                    generation_checks(c, set()) == "answer_in_question":
                fixed = repair_answer_in_question(c.question, c.answer, phrasing)
                if fixed is not None:
                    gen["repaired_from"], c.question = c.question, fixed
                    counts["repaired"] += 1
            problem = ("schema_error" if "error" in q else
                       q.get("problem") or generation_checks(c, seen, caption.duration or None))
            if problem:
                write_reject(reject(STAGE, c.id, c.video_id, "generation", problem,
                                    question=c.question, answer=c.answer, qtype=c.qtype,
                                    evidence_lines=[line_text(x) for x in c.evidence],
                                    generation=gen, **({"error": q["error"]}
                                                       if "error" in q else {})))
                continue
            todo.append((c, gen))
        new = await asyncio.gather(*(filter_candidate(c, g) for c, g in todo))
        accepted = [r for r in new if r is not None] + [
            QARecord.model_validate(done.qa_rows[stable_id(gen_id, i)])
            for i in range(len(raw)) if stable_id(gen_id, i) in done.qa_rows]
        todo_mcq = sorted((r for r in accepted if r.id not in done.mcq_qa_ids),
                          key=generation_index)
        balancer = LetterBalancer(qa.num_options, cfg.synth.seed,
                                  done.letters.get(caption.video_id))
        async with sem:
            items, rejections = await build_video_mcqs(todo_mcq, caption, cfg, models,
                                                       balancer, tally, done.mcq_ids)
        for row in rejections:
            write_reject(row)
        for m in items:
            emit("mcq.jsonl", m)
            counts["mcq"] += 1
    except ModelError as e:
        emit("errors.jsonl", error_record(STAGE, gen_id, e))
        counts["errors"] += 1
    return counts


def qa_summary(counts: Counter[str], tally: Counter[str]) -> dict[str, Any]:
    """Stage 2's result from the per-video counts and the model calls per step."""
    out: dict[str, Any] = {k: counts[k] for k in ("videos", "videos_skipped", "candidates",
                                                  "repaired", "accepted", "mcq", "errors")}
    out["rejected"] = {k.removeprefix("rejected:"): v for k, v in counts.items()
                       if k.startswith("rejected:")}
    out["calls"] = dict(tally)
    out["calls_total"] = sum(tally.values())
    return out


async def generate_qa(run: RunDir, cfg: Config, models: Models, progress: Any = None
                      ) -> dict[str, Any]:
    """Stage 2 over a run directory: captions.jsonl -> qa.jsonl, mcq.jsonl, rejected.jsonl.

    Resumable: finished videos and decided questions are skipped without a model call; a video
    cut off half-way replays its other finished calls from the response cache. Returns counts
    (per filter, and model calls per step).
    """
    captions = [CaptionRecord.model_validate(r) for r in run.file("captions.jsonl").read()]
    mcq_file = run.file("mcq.jsonl")
    write = run.emitter(mcq_file)

    def emit(name: str, record: Any) -> None:
        if name != "mcq.jsonl" or record.id not in mcq_file:
            write(name, record)

    ctx = QAContext(cfg, models, _Done.load(run, cfg.synth.qa.mcq_per_question),
                    asyncio.Semaphore(cfg.synth.concurrency))
    counts: Counter[str] = Counter()
    # one video at a time keeps an in-process model's cached prompt prefix (the caption) warm
    videos_gate = asyncio.Semaphore(cfg.synth.videos_at_once or max(1, len(captions)))
    task = progress.add_task("stage 2: questions", total=len(captions)) if progress else None

    async def one_video(caption: CaptionRecord) -> None:
        try:
            async with videos_gate:
                counts.update(await video_questions(caption, ctx, emit))
        finally:
            if progress is not None:
                progress.advance(task)

    await asyncio.gather(*(one_video(c) for c in captions))
    return qa_summary(counts, ctx.tally)
