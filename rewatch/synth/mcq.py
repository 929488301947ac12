"""Multiple-choice reformulation of accepted questions (the paper's 85k questions -> 170k items).

Each accepted question gets `mcq_per_question` items whose distractors are plausible (written by
M_qa from the caption), distinct (normalised duplicates and answer look-alikes dropped) and
checked to be wrong against C_detail (the judge names options that are also true; they go).
The correct letter is chosen to balance letters across the whole dataset; the distractors fill
the other letters in a seeded shuffle.
"""

from __future__ import annotations

import random
import re
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
    ASKS_DIRECTION,
    answer_hint,
    answer_tokens,
    ask,
    caption_window,
    load_prompt,
    normalize_answer,
    reject,
    resolve_evidence,
)
from rewatch.text import CLAUSE_END
from rewatch.video.stats import NAMED_COLOURS

STAGE = "mcq"


def letters_for(n: int) -> str:
    """The option letters A.. for n options."""
    return string.ascii_uppercase[:n]


@cache
def distractor_schema(n: int) -> type[BaseModel]:
    """The reply of M_qa asked for up to n distractors."""
    return create_model("Distractors", distractors=(
        list[Annotated[str, Field(max_length=60)]], Field(min_length=1, max_length=n)))


@cache
def option_schema(texts: tuple[str, ...]) -> type[BaseModel]:
    """The judge's reply on a multiple-choice item: one of the options' texts. A small judge
    names the option it means more reliably than its letter (the 1.5B model, solving by
    letter, picked the letter of a count it had not meant: docs/stage2-qa.md)."""
    text: Any = Literal[texts]  # type: ignore[valid-type]
    return create_model("KeyCheck", answer=(text, ...))


async def key_check(question: str, options: dict[str, str], detail: str, cfg: Config,
                    models: Models, tally: Counter[str] | None = None) -> str | None:
    """The judge solves the item from C_detail: the letter of the option it names (by its
    text; None if its reply never fits). A keyed letter it does not pick means an option is
    ambiguous or the key is wrong."""
    listing = "\n".join(f"{k}. {v}" for k, v in options.items())
    try:
        got = await ask(models[cfg.synth.qa.judge], load_prompt("qa_key_check.md").format(
            detail=detail, question=question, options=listing),
            option_schema(tuple(dict.fromkeys(options.values()))), 40, tally, "key_check")
    except SchemaError:
        return None
    return next(k for k, v in options.items() if v == got.answer)


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


_NUMBER_WORDS = "zero one two three four five six seven eight nine ten eleven twelve".split()


def as_number(text: str) -> int | None:
    """The count an answer states ("3", "three", "3 objects"), or None."""
    words = normalize_answer(text).split()
    return int(words[0]) if words and words[0].isdigit() else None


def nearby_numbers(answer: str, n: int) -> list[str]:
    """Counting distractors: the counts nearest the answer, written as the answer is (word or
    digits), nearest first."""
    value = as_number(answer)
    if value is None:
        return []
    words = not str(answer).strip()[:1].isdigit()
    out: list[str] = []
    for d in range(1, n + 2):
        for v in (value + d, value - d):
            if v >= 0 and len(out) < n:
                out.append(_NUMBER_WORDS[v] if words and v < len(_NUMBER_WORDS) else str(v))
    return out


def beside_answer(answer: str, text: str, evidence: Iterable[str]) -> bool:
    """The distractor's words stand right beside the answer's in a sentence of an evidence line
    ("right" in "appears at the top right" when the key is "top"; an "and" between them counts
    as beside): the other half of the same fact, so it is true as well."""
    a, d = normalize_answer(answer).split(), normalize_answer(text).split()
    sentences = [s for line in evidence for s in CLAUSE_END.split(line.split("]", 1)[-1])]
    for sentence in sentences if a and d else ():
        w = [x for x in normalize_answer(sentence).split() if x != "and"]
        for i in range(len(w) - len(a) + 1):
            if w[i:i + len(a)] == a and d in (w[i + len(a):i + len(a) + len(d)],
                                              w[max(0, i - len(d)):i]):
                return True
    return False


def clean_distractors(answer: str, raw: Iterable[str], evidence: Iterable[str] = ()
                      ) -> tuple[list[str], list[dict[str, str]]]:
    """Keep distinct distractors that are not the answer in other words (and, for a count,
    are counts too), nor the words beside it in its evidence lines (`beside_answer`); say why
    others go."""
    lines = tuple(evidence)
    kept: list[str] = []
    dropped: list[dict[str, str]] = []
    a_norm, a_tok = normalize_answer(answer), answer_tokens(answer)
    counting = as_number(answer) is not None
    seen = {a_norm}
    for text in raw:
        t = " ".join(str(text).split())
        n, tok = normalize_answer(t), answer_tokens(t)
        if not n:
            why = "empty"
        elif counting and as_number(t) is None:
            why = "not_a_count"
        elif n == a_norm or (a_tok and tok == a_tok):
            why = "equals_answer"
        elif n in seen:
            why = "duplicate"
        elif a_tok and (a_tok <= tok or (tok and tok <= a_tok)):
            why = "overlaps_answer"
        elif beside_answer(answer, t, lines):
            why = "beside_answer_in_evidence"
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
    pool, dropped = clean_distractors(qa.answer, got.distractors, qa.evidence)
    ev["proposed"], ev["dropped"] = list(got.distractors), dropped
    if q.caption_distractors and len(pool) < want:
        extra = (nearby_numbers(qa.answer, want) if as_number(qa.answer) is not None
                 else caption_distractors(caption, qa, cfg.synth.seed, want - len(pool)))
        pool, _more = clean_distractors(qa.answer, [*pool, *extra], qa.evidence)
        ev["from_caption"] = [t for t in pool if t in extra]
    if len(pool) < need:
        return [], ev | {"reason": f"too_few_distractors: {len(pool)} distinct, need {need}"}
    ev["pool"], ev["detail"] = pool, detail
    return distractor_sets(pool, need, q.mcq_per_question,
                           random.Random(stable_id("distractors", cfg.synth.seed, qa.id))), ev


def distractor_sets(pool: list[str], need: int, k: int, rng: random.Random) -> list[list[str]]:
    """Up to k different sets of `need` distractors from `pool`: windows of a seeded shuffle
    read as a ring, starting evenly apart, so sets are disjoint when the pool allows and never
    the same set twice (a pool of exactly `need` gives one item)."""
    ring = rng.sample(pool, len(pool))
    sets: list[list[str]] = []
    for j in range(min(k, len(pool))):
        start = j * len(pool) // k
        window = [ring[(start + i) % len(ring)] for i in range(need)]
        if all(set(window) != set(s) for s in sets):
            sets.append(window)
    return sets


# An answer's kind, for the caption fill: a colour, a shape, a position or a direction gets
# words of its own kind. Without this the demo's fill offered "centre" and "slowly" as colours,
# and "objects", "large" and "slowly" as places.
_KINDS = {
    "colour": frozenset(NAMED_COLOURS),
    "shape": frozenset(("circle", "square", "rectangle", "triangle", "blob", "figure")),
    "direction": frozenset(("left", "right", "up", "down")),
    "position": frozenset(("left", "right", "top", "bottom", "centre", "top left", "top right",
                           "bottom left", "bottom right")),
}
_MOVE = re.compile(r"\bmov(e|es|ing)\b", re.I)


def detail_kind(question: str, answer: str) -> str | None:
    """"colour", "shape", "direction", "position" (a place word: a direction when the
    question asks about motion) or None."""
    text = normalize_answer(answer).replace("center", "centre")
    kinds = [k for k, words in _KINDS.items() if text in words]
    if "direction" in kinds and "position" in kinds:
        asks_motion = ASKS_DIRECTION.search(question) or _MOVE.search(question)
        return "direction" if asks_motion else "position"
    return kinds[0] if kinds else None


def caption_distractors(caption: CaptionRecord, qa: QARecord, seed: int = 0, need: int = 0
                        ) -> list[str]:
    """Detail words of the video's other caption lines (`answer_hint` of each line), in a seeded
    order, leaving out any word of the question's evidence lines (it may be true here). An
    answer of a known kind (`detail_kind`) gets words of that kind, the caption's first, then
    the rest of the kind's words; the other words only when those are fewer than `need` (four
    directions less the true one are too few for five options)."""
    evidence = answer_tokens(" ".join(qa.evidence))
    kind = detail_kind(qa.question, qa.answer)
    words: list[str] = []
    others: list[str] = []
    for line in caption.detail:
        w = answer_hint(caption, line, seed)
        if w and not answer_tokens(w) & evidence and w not in words and w not in others:
            same = kind is None or detail_kind(qa.question, w) == kind
            (words if same else others).append(w)
    rng = random.Random(stable_id("caption-distractors", seed, qa.id))
    rng.shuffle(words)
    if kind is not None:
        more = [w for w in sorted(_KINDS[kind]) if w not in words
                and not answer_tokens(w) & evidence]
        rng.shuffle(more)
        words += more
        if len(words) < need:
            rng.shuffle(others)
            words += others
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
        finals: dict[int, set[str]] = {}  # each item's distractors, once checked
        for j, distractors in enumerate(sets):
            iid = mcq_id(rec.id, j, cfg)
            if written and iid in written:
                continue
            letter = balancer.choose(iid)
            # two items of a question never share one distractor set, also after a refill
            taken = [finals.get(k, set(s)) for k, s in enumerate(sets) if k != j]
            options, check = await checked_options(rec, distractors, ev["pool"], letter, iid,
                                                   ev["detail"], cfg, models, tally, taken)
            finals[j] = {v for k, v in options.items() if k != letter}
            problem = validate_mcq(options, letter, q.num_options) or check.get("problem")
            if problem:
                balancer.counts[letter] -= 1
                rejections.append(reject(STAGE, iid, rec.video_id, "key_check" if "problem"
                                         in check else "format", problem, qa_id=rec.id,
                                         options=options, answer=letter, checks=check))
                continue
            items.append(MCQRecord(id=iid, qa_id=rec.id, video_id=rec.video_id,
                                   question=rec.question, options=options, answer=letter,
                                   qtype=rec.qtype, checks={**{k: v for k, v in ev.items()
                                                               if k not in ("pool", "detail")},
                                                            **check}))
    return items, rejections


async def checked_options(rec: QARecord, distractors: list[str], pool: list[str], letter: str,
                          key: str, detail: str, cfg: Config, models: Models,
                          tally: Counter[str] | None, taken: Iterable[set[str]] = ()
                          ) -> tuple[dict[str, str], dict[str, Any]]:
    """Place the options and have the judge solve the item from C_detail (`key_check`). A
    distractor the judge picks is struck (it may be true as well) and replaced by an unused one
    from the pool, once, never so that the set is one in `taken` (the question's other items);
    if the judge still misses the key, `problem` says so. With `key_check_counts: false`, an
    item whose options are all counts is not checked."""
    taken = list(taken)
    seed = cfg.synth.seed
    if not cfg.synth.qa.key_check_counts and as_number(rec.answer) is not None and all(
            as_number(d) is not None for d in distractors):
        # a count's options are other counts: if the (F1-verified) count is right, none of
        # them can be right as well, which is what the check looks for
        return place_options(rec.answer, distractors, letter, key, seed), {
            "key_check": "skipped: the options are counts (key_check_counts: false)"}
    struck: list[str] = []
    current = list(distractors)
    for attempt in range(2):
        options = place_options(rec.answer, current, letter, key, seed)
        chose = await key_check(rec.question, options, detail, cfg, models, tally)
        if chose == letter:
            return options, {"key_check": {"judge": chose, "struck": struck}}
        if chose is None:
            return options, {"problem": "key_check_schema_error"}
        struck.append(options[chose])
        spare = [d for d in pool if d not in current and d not in struck and
                 set(current) - {options[chose]} | {d} not in taken]
        if attempt == 1 or not spare:
            break
        current = [spare[0] if d == options[chose] else d for d in current]
    return options, {"problem": f"judge_chose_{chose}: {struck[-1]!r}, key {letter}",
                     "key_check": {"judge": chose, "struck": struck}}
