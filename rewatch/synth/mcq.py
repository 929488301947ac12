"""Multiple-choice reformulation of accepted questions (the paper's 85k questions -> 170k items).

Each accepted question gets `mcq_per_question` items whose distractors are plausible (written by
M_qa from the caption), distinct (normalised duplicates and answer look-alikes dropped) and
checked to be wrong against C_detail (the judge names options that are also true; they go).
The correct letter is chosen to balance letters across the whole dataset; the distractors fill
the other letters in a seeded shuffle.
"""

from __future__ import annotations

import random
import string
from collections import Counter
from collections.abc import Iterable
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, create_model

from rewatch.config import Config
from rewatch.models import Models, SchemaError
from rewatch.schema import CaptionRecord, MCQRecord, QARecord
from rewatch.store import JsonlFile, stable_id
from rewatch.synth.qa_filters import (
    answer_tokens,
    ask,
    caption_window,
    load_prompt,
    normalize_answer,
    reject,
    resolve_evidence,
)

STAGE = "mcq"


def letters_for(n: int) -> str:
    """The option letters A.. for n options."""
    return string.ascii_uppercase[:n]


@cache
def distractor_schema(n: int) -> type[BaseModel]:
    """The reply of M_qa asked for up to n distractors."""
    return create_model("Distractors", distractors=(
        list[Annotated[str, Field(max_length=60)]], Field(min_length=1, max_length=n)))


class DistractorCheck(BaseModel):
    """The judge's reply: numbers of the options that C_detail makes correct too."""

    also_correct: list[int] = Field(default_factory=list, max_length=12)


@cache
def check_schema(n: int) -> type[BaseModel]:
    """DistractorCheck for n listed options: numbers 1..n, at most n of them (a small model
    otherwise counts on until it runs out of tokens)."""
    numbers: Any = Literal[tuple(range(1, n + 1))]  # type: ignore[valid-type]
    return create_model("DistractorCheck", also_correct=(
        list[numbers], Field(default_factory=list, max_length=n)))


def validate_mcq(options: dict[str, str], answer: str, num_options: int | None = None
                 ) -> str | None:
    """Why a multiple-choice item is malformed, or None: letters A.. in order, no empty or
    duplicate option, the answer one of the letters."""
    letters = list(options)
    if num_options is not None and len(letters) != num_options:
        return f"wrong_option_count: {len(letters)} options, expected {num_options}"
    if letters != list(letters_for(len(letters))):
        return f"letters_not_in_order: {''.join(letters)}"
    if answer not in options:
        return f"answer_not_among_options: {answer!r} not in {''.join(letters)}"
    texts = [normalize_answer(v) for v in options.values()]
    if any(not t for t in texts):
        return "empty_option"
    dup = [t for t, k in Counter(texts).items() if k > 1]
    if dup:
        return f"duplicate_options: {dup[0]!r}"
    return None


def clean_distractors(answer: str, raw: Iterable[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Keep distinct distractors that are not the answer in other words; say why others go."""
    kept: list[str] = []
    dropped: list[dict[str, str]] = []
    a_norm, a_tok = normalize_answer(answer), answer_tokens(answer)
    seen = {a_norm}
    for text in raw:
        t = " ".join(str(text).split())
        n, tok = normalize_answer(t), answer_tokens(t)
        if not n:
            why = "empty"
        elif n == a_norm or (a_tok and tok == a_tok):
            why = "equals_answer"
        elif n in seen:
            why = "duplicate"
        elif a_tok and (a_tok <= tok or (tok and tok <= a_tok)):
            why = "overlaps_answer"
        else:
            seen.add(n)
            kept.append(t)
            continue
        dropped.append({"text": t, "reason": why})
    return kept, dropped


class LetterBalancer:
    """Picks each item's correct letter among the least used so far (ties by a seeded draw),
    so letters stay balanced across the dataset, reruns included."""

    def __init__(self, num_options: int, seed: int = 0, counts: Counter[str] | None = None):
        self.letters = letters_for(num_options)
        self.seed = seed
        self.counts: Counter[str] = Counter({x: 0 for x in self.letters})
        for k, v in (counts or {}).items():
            if k in self.counts:
                self.counts[k] += v

    @classmethod
    def from_file(cls, mcq_file: JsonlFile, num_options: int, seed: int = 0) -> LetterBalancer:
        """Start from the letters already in mcq.jsonl (resume keeps the balance)."""
        return cls(num_options, seed, Counter(r.get("answer", "") for r in mcq_file.read()))

    def choose(self, item_id: str) -> str:
        low = min(self.counts.values())
        tied = [x for x in self.letters if self.counts[x] == low]
        letter = random.Random(stable_id(self.seed, item_id)).choice(tied)
        self.counts[letter] += 1
        return letter


def place_options(answer: str, distractors: list[str], letter: str, key: str,
                  seed: int = 0) -> dict[str, str]:
    """Options A..: the answer at `letter`, the distractors in a seeded shuffle elsewhere."""
    rest = list(distractors)
    random.Random(stable_id("shuffle", seed, key)).shuffle(rest)
    letters = letters_for(len(distractors) + 1)
    options = {}
    for x in letters:
        options[x] = answer if x == letter else rest.pop()
    return options


async def reformulate_mcq(qa: QARecord, caption: CaptionRecord, cfg: Config, models: Models,
                          tally: Counter[str] | None = None
                          ) -> tuple[list[list[str]], dict[str, Any]]:
    """Distractor sets for the items of one question, and the evidence of the checks.

    An empty list means the question cannot be reformulated; evidence["reason"] says why.
    """
    q = cfg.synth.qa
    need = q.num_options - 1
    want = min(12, need * q.mcq_per_question)
    around = resolve_evidence(caption, [e.split("]", 1)[0].strip("[") for e in qa.evidence[:1]])
    detail = caption_window(caption, q.max_context_chars, around[0].start if around else None)
    ev: dict[str, Any] = {}
    try:
        got = await ask(models[q.generator], load_prompt("qa_distractors.md").format(
            detail=detail, question=qa.question, answer=qa.answer, n=want),
            distractor_schema(want), 24 * want + 40, tally, "distractors")
    except SchemaError as e:
        return [], {"reason": "distractor_schema_error", "error": str(e)[:300]}
    pool, dropped = clean_distractors(qa.answer, got.distractors)
    ev["proposed"], ev["dropped"] = list(got.distractors), dropped
    if q.caption_distractors and len(pool) < want:
        extra = caption_distractors(caption, qa, cfg.synth.seed)
        pool, _more = clean_distractors(qa.answer, [*pool, *extra])
        ev["from_caption"] = [t for t in pool if t in extra]
    if len(pool) < need:
        return [], ev | {"reason": f"too_few_distractors: {len(pool)} distinct, need {need}"}
    listing = "\n".join(f"{i}. {t}" for i, t in enumerate(pool, 1))
    try:
        check = await ask(models[q.judge], load_prompt("qa_distractor_check.md").format(
            detail=detail, question=qa.question, answer=qa.answer, options=listing),
            check_schema(len(pool)), 8 + 4 * len(pool), tally, "distractor_check")
    except SchemaError as e:
        return [], ev | {"reason": "check_schema_error", "error": str(e)[:300]}
    also = {i for i in check.also_correct if 1 <= i <= len(pool)}
    ev["also_correct"] = [pool[i - 1] for i in sorted(also)]
    pool = [t for i, t in enumerate(pool, 1) if i not in also]
    if len(pool) < need:
        return [], ev | {"reason": f"too_few_distractors_after_check: {len(pool)} left, need "
                                   f"{need}"}
    rng = random.Random(stable_id("distractors", cfg.synth.seed, qa.id))
    sets = []
    if len(pool) >= need * q.mcq_per_question:  # disjoint sets: two genuinely different items
        shuffled = rng.sample(pool, len(pool))
        sets = [shuffled[j * need:(j + 1) * need] for j in range(q.mcq_per_question)]
    else:
        sets = [rng.sample(pool, need) for _ in range(q.mcq_per_question)]
    ev["pool"] = pool
    return sets, ev


def caption_distractors(caption: CaptionRecord, qa: QARecord, seed: int = 0) -> list[str]:
    """Detail words of the video's other caption lines (`answer_hint` of each line), in a seeded
    order, leaving out any word of the question's evidence lines (it may be true here)."""
    from rewatch.synth.qa import answer_hint

    evidence = answer_tokens(" ".join(qa.evidence))
    words = []
    for line in caption.detail:
        w = answer_hint(caption, line, seed)
        if w and not answer_tokens(w) & evidence and w not in words:
            words.append(w)
    random.Random(stable_id("caption-distractors", seed, qa.id)).shuffle(words)
    return words


def mcq_id(qa_id: str, j: int, cfg: Config) -> str:
    """Stable id of the j-th item of an accepted question."""
    q = cfg.synth.qa
    return stable_id(STAGE, qa_id, j, q.num_options, q.mcq_per_question, cfg.synth.seed)


async def build_video_mcqs(accepted: list[QARecord], caption: CaptionRecord, cfg: Config,
                           models: Models, balancer: LetterBalancer,
                           tally: Counter[str] | None = None, written: set[str] | None = None
                           ) -> tuple[list[MCQRecord], list[dict[str, Any]]]:
    """The MCQ items of one video's accepted questions (in order) and the rejections; items
    in `written` (already in mcq.jsonl) are left out and take no letter."""
    import asyncio

    q = cfg.synth.qa
    found = await asyncio.gather(*(reformulate_mcq(r, caption, cfg, models, tally)
                                   for r in accepted))
    items: list[MCQRecord] = []
    rejections: list[dict[str, Any]] = []
    for rec, (sets, ev) in zip(accepted, found, strict=True):
        if not sets:
            rejections.append(reject(STAGE, stable_id(STAGE, rec.id, "rejected"), rec.video_id,
                                     "distractors", ev.pop("reason"), qa_id=rec.id,
                                     question=rec.question, answer=rec.answer, checks=ev))
            continue
        for j, distractors in enumerate(sets):
            iid = mcq_id(rec.id, j, cfg)
            if written and iid in written:
                continue
            letter = balancer.choose(iid)
            options = place_options(rec.answer, distractors, letter, iid, cfg.synth.seed)
            problem = validate_mcq(options, letter, q.num_options)
            if problem:  # cannot happen after clean_distractors; guarded all the same
                balancer.counts[letter] -= 1
                rejections.append(reject(STAGE, iid, rec.video_id, "format", problem,
                                         qa_id=rec.id, options=options, answer=letter))
                continue
            items.append(MCQRecord(id=iid, qa_id=rec.id, video_id=rec.video_id,
                                   question=rec.question, options=options, answer=letter,
                                   qtype=rec.qtype, checks={k: v for k, v in ev.items()
                                                            if k != "pool"}))
    return items, rejections
