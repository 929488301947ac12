"""Strict, total parsing of a policy response into think, (action, observation) steps and answer.

The layout the reward expects (the ReWatch CoT layout):

    [<think>…</think>] reasoning <action>…</action><observation>…</observation> … <answer>…</answer>

`parse_response` never raises: any input (empty, 1 MB, nested or unbalanced tags, tags with
attributes or odd case) gives a `ParsedResponse` whose `problems` list says what is wrong.
`fmt` (the format reward r_fmt) is 1 only when that list is empty. Only exact lower-case tags
without attributes are structure; near-miss tags (`<ANSWER>`, `<answer id=1>`, `< answer >`) are
problems, and an answer-like tag of any form counts towards "exactly one <answer>".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TAG_NAMES = ("think", "action", "observation", "answer")
LEAVES = frozenset({"action", "observation", "answer"})
# Every tag-like token whose name is one of ours, in any case, with or without attributes.
_ANY_TAG = re.compile(r"<\s*(/?)\s*(think|action|observation|answer)\b([^<>]*)>", re.I)
_EXACT_TAGS = frozenset(f"<{c}{n}>" for n in TAG_NAMES for c in ("", "/"))
MAX_CHARS = 32_000  # longer responses are a format problem (padding attacks)
MAX_STEPS = 32  # more (action, observation) pairs than this is a format problem
MAX_PROBLEMS = 20  # problems listed one by one; the rest are counted


@dataclass
class Step:
    """One parsed (action, observation) pair; `problem` is set when it cannot be judged."""

    action: str
    observation: str
    in_think: bool = False
    problem: str | None = None


@dataclass
class _Element:
    name: str
    content: str
    start: int  # offset just past the opening tag (where the content begins)
    end: int  # offset just past the closing tag
    in_think: bool
    nested: bool = False  # another of our tags appeared inside it


@dataclass
class ParsedResponse:
    """The result of `parse_response`: always present, whatever the input."""

    text: str
    think: str | None = None
    steps: list[Step] = field(default_factory=list)
    answer: str | None = None  # the single valid final answer's content, stripped
    answer_tags: int = 0  # answer-like opening tags anywhere (any case or form)
    problems: list[str] = field(default_factory=list)

    @property
    def fmt(self) -> float:
        """r_fmt: 1.0 when the response follows the layout exactly, else 0.0."""
        return 0.0 if self.problems else 1.0

    @property
    def n_steps(self) -> int:
        return len(self.steps)


def _scan(text: str, out: ParsedResponse) -> list[_Element]:
    """Walk the tags once; leaves (action, observation, answer) run to their own closing tag."""
    elements: list[_Element] = []
    leaf: _Element | None = None
    think_open: int | None = None
    think_seen = False
    for m in _ANY_TAG.finditer(text):
        tag = m.group(0)
        exact = tag in _EXACT_TAGS
        if exact:  # the common case: no lower(), no rebuilt tag
            closing, name = tag[1] == "/", tag.strip("</>")
        else:
            closing, name = m.group(1) == "/", m.group(2).lower()
        if name == "answer" and not closing:
            out.answer_tags += 1
        if not exact:
            out.problems.append(f"malformed_tag: {m.group(0)[:40]!r} (tags are lower case, "
                                "without attributes or spaces)")
            if leaf is not None:
                leaf.nested = True
            continue
        if leaf is not None:
            if closing and name == leaf.name:
                leaf.content = text[leaf.start:m.start()]
                leaf.end = m.end()
                elements.append(leaf)
                leaf = None
            else:
                leaf.nested = True
                out.problems.append(f"tag_inside: {m.group(0)} inside <{leaf.name}>")
            continue
        if name == "think":
            if not closing:
                if think_open is not None:
                    out.problems.append("nested_think: <think> inside <think>")
                elif think_seen:
                    out.problems.append("multiple_think: more than one <think> block")
                else:
                    if text[: m.start()].strip() or elements:
                        out.problems.append("think_not_first: text or tags before <think>")
                    think_open, think_seen = m.end(), True
            elif think_open is None:
                out.problems.append("stray_closing: </think> closes nothing")
            else:
                out.think = text[think_open:m.start()]
                think_open = None
            continue
        if closing:
            out.problems.append(f"stray_closing: </{name}> closes nothing")
            continue
        # `content` is filled in when the leaf closes; `start` is where it begins
        leaf = _Element(name, "", m.end(), -1, think_open is not None)
    if leaf is not None:
        out.problems.append(f"unclosed: <{leaf.name}> is never closed")
    if think_open is not None:
        out.problems.append("unclosed: <think> is never closed")
    return elements


def _pair_steps(text: str, elements: list[_Element], out: ParsedResponse) -> None:
    """Pair each <action> with the <observation> right after it (whitespace between only)."""
    i = 0
    while i < len(elements):
        el = elements[i]
        if el.name == "observation":
            out.problems.append("observation_without_action: an <observation> has no <action> "
                                "right before it")
        elif el.name == "action":
            nxt = elements[i + 1] if i + 1 < len(elements) else None
            gap = text[el.end: nxt.start - len("<observation>")] if nxt is not None else ""
            if nxt is None or nxt.name != "observation" or gap.strip():
                out.problems.append("action_without_observation: an <action> is not followed "
                                    "directly by an <observation>")
            else:
                action, obs = el.content.strip(), nxt.content.strip()
                problem = None
                if el.nested or nxt.nested:
                    problem = "tags inside the action or observation"
                elif not action:
                    problem = "empty action"
                elif not obs:
                    problem = "empty observation"
                if problem and not (el.nested or nxt.nested):
                    out.problems.append(f"empty_step: step {len(out.steps) + 1} has an {problem}")
                out.steps.append(Step(action, obs, el.in_think, problem))
                i += 2
                continue
        i += 1


def _final_answer(text: str, elements: list[_Element], out: ParsedResponse) -> None:
    answers = [e for e in elements if e.name == "answer"]
    if out.answer_tags == 0:
        out.problems.append("no_answer: no <answer>…</answer>")
        return
    if out.answer_tags > 1:
        out.problems.append(f"multiple_answers: {out.answer_tags} answer tags (exactly one "
                            "is allowed)")
        return
    if not answers:
        return  # the one answer-like tag is malformed, unclosed or inside another tag
    ans = answers[0]
    if ans.in_think:
        out.problems.append("answer_in_think: the only <answer> is inside <think>")
        return
    if ans.nested:
        return
    if ans is not elements[-1]:
        out.problems.append("answer_not_last: tags follow </answer>")
    elif text[ans.end:].strip():
        out.problems.append("text_after_answer: text follows </answer>")
    content = ans.content.strip()
    if not content:
        out.problems.append("empty_answer: <answer></answer> is empty")
        return
    out.answer = content


def parse_response(text: object, *, max_chars: int = MAX_CHARS,
                   max_steps: int = MAX_STEPS) -> ParsedResponse:
    """Parse any input into think, steps and the final answer, listing every problem found."""
    if not isinstance(text, str):
        out = ParsedResponse("")
        out.problems.append(f"not_text: the response is {type(text).__name__}, not a string")
        return out
    out = ParsedResponse(text)
    if len(text) > max_chars:
        out.problems.append(f"too_long: {len(text)} characters (limit {max_chars})")
    elements = _scan(text, out)
    _pair_steps(text, elements, out)
    if len(out.steps) > max_steps:
        out.problems.append(f"too_many_steps: {len(out.steps)} action/observation pairs "
                            f"(limit {max_steps})")
    _final_answer(text, elements, out)
    if len(out.problems) > MAX_PROBLEMS:  # tag soup: keep the report readable
        extra = len(out.problems) - MAX_PROBLEMS
        out.problems = [*out.problems[:MAX_PROBLEMS], f"more: {extra} further problems"]
    return out


def format_reward(text: object) -> float:
    """r_fmt of a response: 1.0 when it follows the layout exactly, else 0.0."""
    return parse_response(text).fmt
