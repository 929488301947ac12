"""Rule-based r_acc: option letters and counting integers, strictly; free-form goes to a judge.

An answer that names more than one option ("A or B", "A, C", the options echoed verbatim,
"all of the above" when that is not an option) scores 0, as does a lower-case, full-width or
look-alike letter: the policy was asked for one upper-case ASCII option letter.
"""

from __future__ import annotations

import re
from typing import Literal

from rewatch.text import number_spans, option_letter, options_matching

AnswerKind = Literal["choice", "count", "free"]

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[a-z]+")
_TRUTH_LETTER = re.compile(r"\s*\(?([A-Z])(?![A-Za-z0-9])")


def answer_kind(ground_truth: str, options: dict[str, str] | None = None) -> AnswerKind:
    """How a ground truth is checked: an option letter, a counting integer, or by a judge."""
    truth = str(ground_truth).strip()
    if options or re.fullmatch(r"\(?[A-Z]\)?\.?", truth):
        return "choice"
    if parse_count(truth)[0] is not None:
        return "count"
    return "free"


def _truth_letter(truth: str, options: dict[str, str] | None = None) -> str | None:
    """The ground truth's letter: "C", "(C)", "C. twice", or an option's text ("twice"; checked
    first, so that "A dog" is option B when B is "A dog")."""
    hits = options_matching(truth, options) if options else []
    if len(hits) == 1:
        return hits[0]
    m = _TRUTH_LETTER.match(truth)
    return m.group(1) if m else None


def choice_letter(answer: str, options: dict[str, str] | None = None) -> tuple[str | None, str]:
    """The single option letter an answer names, or None and the reason it names none: the
    shared reading (`rewatch.text.option_letter`, also used by Stage 3's chain check and eval's
    strict mode), without `extra_text`: text after the letter that is not its own option's is
    wrong here, because the policy was asked for the letter."""
    return option_letter(answer, options)


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
