"""Checks on re-watching chains: Observer grounding and `validate_chain` for converted CoT text.

A chain is kept only when its final answer is the ground truth, its tags are balanced and in
order, every `<observation>` in the converted text is supported by the trajectory's observations
(conversion adds no facts), every action is one the trajectory took, and every timestamp exists
in the video. Support is lexical: each content word (stemmed, stopwords aside) of the checked
text must occur in the evidence. That is strict on purpose: a colour, count or object that the
evidence does not contain is a new fact.

The prose M_convert writes around the tags (step sentences and conclusion) is held to the same
rule: each of its content words must be in an observation, an action, the question or an option,
or be an option letter, or one of `META_WORDS` (talk about watching) or `REASONING_WORDS`
(talk about deciding).
Anything else, a chef, a bottle, a giraffe, is a fact the trajectory never observed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from rewatch.schema import CoTStep, mmss
from rewatch.synth.tools import (
    ArgumentError,
    content_words,
    parse_action,
    parse_timestamp,
    stem,
)
from rewatch.text import option_letter

# Words an observation may use to talk about watching, not about the video's content.
META_WORDS = frozenset(content_words(
    "shows show shown seen see sees visible observe observed look looks looking watch watched "
    "happens happen occurs occur moment time timestamp timestamps frame frames caption line "
    "lines describe described description says say tags tag i we can around near part scene "
    # connectives that order what the lines say without adding a fact
    "then next followed later also first finally"
))
# Words the prose may use to reason about the question, without stating a fact of the video. The
# list is short on purpose: a word a converted chain needs that is not here is rejected, and the
# rejection (`prose_adds_facts`, with the word) says which word to consider adding.
REASONING_WORDS = frozenset(content_words(
    "need needs check checks checked checking confirm confirms confirmed verify verifies verified "
    "because so therefore thus hence since must should may might think thought find found "
    "search searched searching look again re rewatch rewatching question questions ask asks asked "
    "answer answers answered option options choice correct right wrong match matches matching "
    "observation observations evidence settle settles settled specific specified given "
    "whether step steps have has had having clear clearly sure "
    "retrieve retrieved determine determined based conclude concluded if but not only like "
    "segment segments start starts end ends specifically suggest suggests suggesting relevant "
    "point isolate "
    # pointing at what was said (the 1.5B converter's "as mentioned", "note that", "this
    # corresponds to"; demo run of the batched engine, 4 of 12 rejections)
    "mention mentions mentioned note notes noted notice notices noticed directly provide "
    "provides provided providing correspond corresponds corresponding case "
    # naming the attribute asked about; a colour, count or shape itself must be observed
    "colour color number count counting size shape position location direction"
))
TAGS = ("action", "observation", "answer")
_TAG = re.compile(r"<(/?)(action|observation|answer|think)>")
_CLOCK = re.compile(r"(?<![\d:])(\d{1,2}:\d{2}(?::\d{2})?)(?![\d:])")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyz")  # option letters the prose may name


@dataclass
class ChainCheck:
    """The verdict on one chain: ok, or the reason (a short code) and what exactly failed."""

    ok: bool
    reason: str = ""
    detail: str = ""
    words: tuple[str, ...] = ()  # prose_adds_facts: the words no evidence holds


# Suffixes that make a noun or adverb of a word without adding a fact: "movement" of "moves",
# "appearance" of "appears", "quickly" of "quick" (the 1.5B converter writes these; 2 of the
# 8 words of one demo run's prose_adds_facts rejections were such nouns of observed verbs).
DERIVATIONAL = ("ment", "ance", "ence", "ness", "ion", "ly")


def _derived_from(word: str, known: set[str]) -> bool:
    """Whether a word (or its singular) is a word with a known stem plus one `DERIVATIONAL`
    suffix."""
    singular = word[:-1] if word.endswith("s") and not word.endswith("ss") else word
    for suffix in DERIVATIONAL:
        base = singular[: -len(suffix)]
        if singular.endswith(suffix) and len(base) >= 3 and stem(base) in known:
            return True
    return False


def unsupported_words(text: str, evidence: Iterable[str], allowed: Iterable[str] = ()) -> list[str]:
    """Content words of `text` (as written) whose stems occur in none of `evidence` (nor in
    `allowed`, a set of stems), directly or as a `DERIVATIONAL` form of one."""
    known = set(allowed)
    for e in evidence:
        known.update(content_words(e))
    out: list[str] = []
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        stems = content_words(word)  # [] for a stopword
        if stems and stems[0] not in known and not _derived_from(word, known) \
                and word not in out:
            out.append(word)
    return out


def timestamps_in(text: str) -> list[str]:
    """Every MM:SS or HH:MM:SS timestamp written in `text`."""
    return _CLOCK.findall(text)


def answer_letter(text: str, options: dict[str, str] | None = None, *,
                  extra_text: bool = False) -> tuple[str | None, str]:
    """The option letter an answer names, or (None, reason): the reading the reward scores
    with (`rewatch.text.option_letter`), so a kept chain's answer is one the reward counts:
    "C. red" is C only when C is "red"; "C. blue" (another option's text) and "C or D" name
    none. `extra_text` also takes "C because ..." (the Reasoner's final_answer argument)."""
    return option_letter(text or "", options, extra_text=extra_text)


def check_tags(text: str) -> str | None:
    """None when the tags are balanced, not nested and each action has its observation."""
    stack: list[str] = []
    last_closed = ""
    pending_action = False
    answers = 0
    for m in _TAG.finditer(text):
        closing, name = m.group(1) == "/", m.group(2)
        if not closing:
            if stack:
                return f"<{name}> opened inside <{stack[-1]}>"
            if name == "action" and pending_action:
                return "an <action> has no <observation> after it"
            if name == "observation" and not pending_action:
                return "an <observation> does not follow an <action>"
            stack.append(name)
            continue
        if not stack or stack[-1] != name:
            return f"</{name}> closes nothing" if not stack else \
                f"</{name}> closes <{stack[-1]}>"
        stack.pop()
        last_closed = name
        if name == "action":
            pending_action = True
        elif name == "observation":
            pending_action = False
        elif name == "answer":
            answers += 1
    if stack:
        return f"<{stack[-1]}> is never closed"
    if pending_action:
        return "the last <action> has no <observation>"
    if answers != 1:
        return f"expected exactly one <answer>...</answer>, found {answers}"
    if last_closed != "answer" or text.rstrip()[-len("</answer>"):] != "</answer>":
        return "the chain must end with <answer>...</answer>"
    return None


def spans_of(text: str, tag: str) -> list[str]:
    """The contents of every <tag>...</tag> in `text`."""
    return [s.strip() for s in re.findall(rf"<{tag}>(.*?)</{tag}>", text, re.S)]


def time_exists(stamp: str, duration: float) -> bool:
    """Whether a timestamp or span lies inside a video of `duration` seconds (1 s rounding)."""
    try:
        start, end = parse_timestamp(stamp)
    except ArgumentError:
        return False
    return 0 <= start and end <= duration + 1.0


def prose_of(cot: str) -> str:
    """The converted text outside the tags (the reasoning M_convert wrote)."""
    return re.sub(r"<(action|observation|answer)>.*?</\1>", " ", cot, flags=re.S)


def validate_chain(cot: str, trajectory: list[CoTStep], answer: str, duration: float, *,
                   context: Iterable[str] = (),
                   options: dict[str, str] | None = None) -> ChainCheck:
    """Check a converted chain against its trajectory and the ground truth (see module doc).

    Checked in order: balanced tags; the answer letter is `answer`; at least one action, each one
    the trajectory took; every timestamp inside `duration`; every `<observation>` word in the
    trajectory's observations; every content word of the prose outside the tags in the
    observations, the actions, `context` (question and options), an option letter, `META_WORDS`
    or `REASONING_WORDS`.
    """
    problem = check_tags(cot)
    if problem:
        return ChainCheck(False, "unbalanced_tags", problem)
    given = spans_of(cot, "answer")[0]
    letter, why = answer_letter(given, options)
    if letter != answer:
        return ChainCheck(False, "wrong_answer", f"<answer>{given}</answer>, truth {answer}"
                          + (f" ({why})" if why else ""))
    actions = spans_of(cot, "action")
    if not actions:
        return ChainCheck(False, "no_actions", "the chain never re-watches the video")
    taken = set()
    for step in trajectory:
        if step.action:
            try:
                taken.add(parse_action(step.action))
            except ArgumentError:
                continue
    for a in actions:
        try:
            call = parse_action(a)
        except ArgumentError as e:
            return ChainCheck(False, "malformed_action", str(e))
        if call not in taken:
            return ChainCheck(False, "action_not_in_trajectory", a)
        if call[0] == "segment_query" and not time_exists(call[1], duration):
            return ChainCheck(False, "timestamp_not_in_video", a)
    for stamp in timestamps_in(cot):
        if not time_exists(stamp, duration):
            return ChainCheck(False, "timestamp_not_in_video",
                              f"{stamp} (video runs 00:00-{mmss(duration)})")
    evidence = [s.observation for s in trajectory if s.observation]
    for obs in spans_of(cot, "observation"):
        extra = unsupported_words(obs, evidence)
        if extra:
            return ChainCheck(False, "observation_not_in_trajectory",
                              f"{obs[:160]!r} adds {', '.join(extra[:8])}")
    seen = [*evidence, *(s.action or "" for s in trajectory), *context]
    extra = unsupported_words(prose_of(cot), seen, META_WORDS | REASONING_WORDS | _LETTERS)
    if extra:
        return ChainCheck(False, "prose_adds_facts",
                          f"the reasoning states {', '.join(extra[:8])}, never observed",
                          tuple(extra))
    return ChainCheck(True)
