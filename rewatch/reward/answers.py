"""Rule-based r_acc: option letters and counting integers, strictly; free-form goes to a judge.

An answer that names more than one option ("A or B", "A, C", the options echoed verbatim,
"all of the above" when that is not an option) scores 0, as does a lower-case, full-width or
look-alike letter: the policy was asked for one upper-case ASCII option letter.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Literal

from rewatch.text import number_spans

AnswerKind = Literal["choice", "count", "free"]

# One upper-case letter, alone or as "(B)", "B.", "B)", "B: text", "B. text"
_CHOICE = re.compile(r"\(?([A-Z])(?![A-Za-z0-9])\)?(?:\s*[.:)\-]\s*|\s+|$)(.*)", re.S)
_LOWER = re.compile(r"\(?([a-z])\)?[.:)]?")
_TRUTH_LETTER = re.compile(r"\s*\(?([A-Z])(?![A-Za-z0-9])")
_LONE_LETTER = re.compile(r"(?<![A-Za-z0-9])[A-Z](?![A-Za-z0-9])")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[a-z]+")



def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def answer_kind(ground_truth: str, options: dict[str, str] | None = None) -> AnswerKind:
    """How a ground truth is checked: an option letter, a counting integer, or by a judge."""
    truth = str(ground_truth).strip()
    if options or re.fullmatch(r"\(?[A-Z]\)?\.?", truth):
        return "choice"
    if parse_count(truth)[0] is not None:
        return "count"
    return "free"


def option_text(letter: str, text: str) -> str:
    """An option's own text, normalised for comparison, without a copy of its own letter in
    front (Video-R1-style options are written "C. twice")."""
    m = _CHOICE.fullmatch(text.strip())
    if m and m.group(1) == letter and m.group(2).strip():
        text = m.group(2)
    return _norm(text)


@lru_cache(maxsize=4096)
def _option_table(items: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    # a GRPO batch scores many responses against the same options: normalise them once
    return tuple((k, option_text(k, v)) for k, v in items)


def _option_hits(text: str, options: dict[str, str]) -> list[str]:
    """The letters whose option text `text` is (normalised)."""
    t = _norm(text)
    if not t:
        return []
    return [k for k, v in _option_table(tuple(options.items())) if v == t]


def _truth_letter(truth: str, options: dict[str, str] | None = None) -> str | None:
    """The ground truth's letter: "C", "(C)", "C. twice", or an option's text ("twice"; checked
    first, so that "A dog" is option B when B is "A dog")."""
    hits = _option_hits(truth, options) if options else []
    if len(hits) == 1:
        return hits[0]
    m = _TRUTH_LETTER.match(truth)
    return m.group(1) if m else None


def choice_letter(answer: str, options: dict[str, str] | None = None) -> tuple[str | None, str]:
    """The single option letter an answer names, or None and the reason it names none.

    A letter followed by its own option's text ("C. twice" when C is "twice") names C; a
    letter followed by another option's text, by a second letter or by anything else names
    none. Without `options` the text after a letter cannot be checked and names none."""
    text = answer.strip()
    hits = _option_hits(text, options) if options else []
    if len(hits) == 1:  # an option's text alone (checked first: "A dog" may be option B)
        return hits[0], ""
    m = _CHOICE.fullmatch(text)
    if m:
        letter, rest = m.group(1), m.group(2).strip().rstrip(".")
        if options is not None and letter not in options:
            return None, f"not_an_option: {letter!r} is not one of {sorted(options)}"
        if not rest:
            return letter, ""
        if options is not None:
            if _norm(rest) == dict(_option_table(tuple(options.items())))[letter]:
                return letter, ""
            others = [k for k in _option_hits(rest, options) if k != letter]
            if others:
                return None, (f"other_option_text: {letter} is followed by the text of "
                              f"option {others[0]}")
        if len(set(_LONE_LETTER.findall(text))) > 1:
            return None, "multiple_options: the answer names more than one option"
        if options is None:
            return None, ("extra_text: the answer has text beyond the option letter (no "
                          "options given to check it against)")
        return None, "extra_text: the answer has text beyond the option letter"
    if len(set(_LONE_LETTER.findall(text))) > 1 or re.fullmatch(r"[A-Z]{2,10}", text):
        return None, "multiple_options: the answer names more than one option"
    if _LOWER.fullmatch(text):
        return None, "lowercase_letter: option letters are upper case"
    folded = unicodedata.normalize("NFKC", text)
    if folded != text and _CHOICE.fullmatch(folded):
        return None, "fullwidth_letter: option letters are ASCII"
    if len(text) <= 4 and any(ord(c) > 127 and c.isalpha() for c in text):
        return None, "lookalike_letter: a non-ASCII character in place of an option letter"
    return None, "not_an_option: the answer names no option letter"


def parse_count(text: str) -> tuple[int | None, str]:
    """The one integer a counting answer states (digits or words), or None and why not."""
    values: set[float] = set()
    for tok in _NUMBER.findall(text):
        try:
            values.add(float(tok.replace(",", "")))
        except ValueError:
            return None, f"bad_number: {tok!r}"
    words = _WORD.findall(text.lower().replace("-", " "))
    values.update(float(v) for *_, v in number_spans(words))
    if not values:
        return None, "no_number: the answer states no number"
    if len(values) > 1:
        return None, "multiple_numbers: the answer states more than one number"
    v = values.pop()
    if v != int(v):
        return None, f"not_integer: {v} is not a whole count"
    return int(v), ""


def rule_accuracy(answer: str, ground_truth: str, options: dict[str, str] | None = None,
                  kind: AnswerKind | None = None) -> tuple[float | None, str]:
    """r_acc by rule: (1.0 or 0.0, problem) for letters and counts; (None, "") for free-form."""
    kind = kind or answer_kind(ground_truth, options)
    if kind == "choice":
        letter, why = choice_letter(answer, options)
        if letter is None:
            return 0.0, why
        return (1.0 if letter == _truth_letter(str(ground_truth), options) else 0.0), ""
    if kind == "count":
        got, why = parse_count(answer)
        if got is None:
            return 0.0, why
        return (1.0 if got == parse_count(str(ground_truth))[0] else 0.0), ""
    return None, ""
