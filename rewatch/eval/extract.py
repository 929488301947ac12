"""Strict answer extraction shared by every benchmark: never a random fallback.

Order for multiple choice: the last `<answer>` block if there is one (and only it, read first by
the option-letter reading the reward and Stage 3 share, `rewatch.text.option_letter`), else an
explicit statement ("the answer is (B)", "Answer: B", "option: B"), else a leading letter
("B) because ..."), else a reply that is exactly one option's text, else a single distinct
standalone option letter. Anything else is "no answer", which scorers count as wrong and report
on its own line. Counting replies give integers (digits or number words).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rewatch.text import (
    ONES,
    SCALES,
    TENS,
    clock_seconds,
    letters_named,
    numbers_in,
    option_letter,
    options_matching,
    word_number,
)

# --- shared helpers ----------------------------------------------------------------------------

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S | re.I)
_OPEN_ANSWER = re.compile(r"<answer>(?!.*<answer>)(.*)\Z", re.S | re.I)  # unclosed, at the end
_THINK_END = re.compile(r"</think>", re.I)


@dataclass(frozen=True)
class Extraction:
    """An extracted answer (None when there is none) and which rule found it."""

    value: str | None
    how: str  # answer_tag, explicit, leading, option_text, single_letter, number, none, ...

    @property
    def ok(self) -> bool:
        """Whether an answer was found."""
        return self.value is not None


def answer_block(reply: str) -> str | None:
    """The content of the last `<answer>...</answer>` block (or of a trailing unclosed one)."""
    blocks = _ANSWER_TAG.findall(reply)
    if blocks:
        return blocks[-1].strip()
    m = _OPEN_ANSWER.search(reply)
    return m.group(1).strip() if m else None


def final_text(reply: str) -> str:
    """What follows the last `</think>` (the whole reply when that is empty or absent)."""
    parts = _THINK_END.split(reply)
    tail = parts[-1].strip()
    return tail if tail else reply


def _norm(text: str) -> str:
    text = re.sub(r"[*_`\"“”'‘’]", "", text).strip().casefold()
    return re.sub(r"\s+", " ", text).rstrip(".!。 ")


# --- multiple choice ---------------------------------------------------------------------------

# an option letter in the answer family, with optional wrapping: "(B)", "**B**", "[B]", "B."
_WRAP_OPEN = r"[\s*\"'\[(]*"
_AFTER = r"(?=$|[\s.,;:!?)\]*\"'])"
_EXPLICIT = [
    re.compile(r"\banswer\b\s*(?:is|would be|should be|will be|=|:)?\s*:?\s*(?:option|choice)?"
               + _WRAP_OPEN + r"([A-Za-z])" + _AFTER, re.I),
    re.compile(r"\b(?:correct|best|right|final)\s+(?:option|choice)\s*(?:is|would be|should be|:)"
               r"?\s*:?" + _WRAP_OPEN + r"([A-Za-z])" + _AFTER, re.I),
    re.compile(r"\boption\s*[:\-]\s*" + _WRAP_OPEN + r"([A-Za-z])" + _AFTER, re.I),
    re.compile(r"\b(?:I\s+(?:would\s+)?(?:choose|pick|select)|I'll\s+(?:choose|pick|go\s+with))"
               r"\s*(?:option|choice)?" + _WRAP_OPEN + r"([A-Za-z])" + _AFTER, re.I),
    re.compile(r"\boption\s*\(?([A-Z])\)?\s+is\s+(?:the\s+)?(?:correct|right|best|answer)", re.I),
]
_LEADING = re.compile(r"^[\s*\"'\[(]*([A-Za-z])[\s*\"'\])]*(?:[.):,]|[-–](?=\s)|$)")


def _letter_ok(text: str, m: re.Match[str], letters: str) -> str | None:
    """The matched letter if it is an option; a lowercase one only when nothing follows it
    but punctuation (so "the answer is a bit unclear" is not "A")."""
    ch = m.group(1)
    if ch.islower():
        rest = text[m.end(1):]
        if rest and not re.match(r"^\s*(?:$|[.,;:!?)\]*\"'])", rest):
            return None
    up = ch.upper()
    return up if up in letters else None


def _explicit(text: str, letters: str) -> str | None:
    best: tuple[int, str] | None = None
    for pat in _EXPLICIT:
        for m in pat.finditer(text):
            letter = _letter_ok(text, m, letters)
            if letter is not None and (best is None or m.start(1) > best[0]):
                best = (m.start(1), letter)
    return best[1] if best else None


def _leading(text: str, letters: str) -> str | None:
    m = _LEADING.match(text)
    if not m:
        return None
    ch = m.group(1)
    if ch.islower() and len(text.strip(" *()[].\"'")) > 1:
        return None  # "a." alone is an answer; "a man ..." is not
    return ch.upper() if ch.upper() in letters else None


def _option_text(text: str, options: dict[str, str]) -> str | None:
    hits = options_matching(_norm(text), options) if options else []
    return hits[0] if len(hits) == 1 else None


def _single_letter(text: str, letters: str) -> tuple[str | None, str]:
    found = letters_named(text, letters)  # "A man ...": the article, not option A
    if len(found) == 1:
        return found.pop(), "single_letter"
    return None, "ambiguous" if found else "none"


# the shared reading's verdicts that settle an answer block: it names another option too
_NAMES_OTHERS = ("other_option_text", "multiple_options")


def _answer(block: str, options: dict[str, str], letters: str) -> tuple[str | None, str]:
    """An `<answer>` block: first the reading the reward and Stage 3 use
    (`rewatch.text.option_letter`, with text after the letter allowed, as free replies have
    it), so "C. twice" is C and "C. four times" (D's text) or "C or D" is no answer; a block
    that does not start with a letter ("The answer is B", "**A**", "b") then goes through the
    statement rules below."""
    opts = options or {k: "" for k in letters}
    got, why = option_letter(block, {k: v for k, v in opts.items() if k in letters} or None,
                             extra_text=True)
    if got is not None:
        return got, "letter"
    if why.startswith(_NAMES_OTHERS):
        return None, "ambiguous"
    return _choose(block, options, letters)


def _choose(text: str, options: dict[str, str], letters: str) -> tuple[str | None, str]:
    for rule, fn in (("explicit", lambda: _explicit(text, letters)),
                     ("leading", lambda: _leading(text, letters)),
                     ("option_text", lambda: _option_text(text, options))):
        got = fn()
        if got is not None:
            return got, rule
    return _single_letter(text, letters)


def extract_choice(reply: str, options: dict[str, str] | None = None,
                   letters: str | None = None) -> Extraction:
    """The option letter a reply commits to, or Extraction(None, reason)."""
    options = options or {}
    letters = letters or ("".join(options) if options else "ABCDE")
    block = answer_block(reply)
    if block is not None:
        value, how = _answer(block, options, letters)
        return Extraction(value, "answer_tag" if value else f"answer_tag_{how}")
    value, how = _choose(final_text(reply), options, letters)
    return Extraction(value, how)


# --- numbers (counting) ------------------------------------------------------------------------

# a run of number words ("one hundred and five", "twenty-one"); read by rewatch.text
_NUM_WORD = "|".join(sorted([*ONES, *TENS, *SCALES], key=len, reverse=True))
_WORD_RE = (r"(?:(?:a\s+(?=hundred|thousand))?(?:" + _NUM_WORD + r")"
            r"(?:[\s-]+(?:and[\s-]+)?(?:" + _NUM_WORD + r"))*)")
_COUNT_EXPLICIT = re.compile(
    r"\b(?:answer|count|total|number)\b[^.\n<]{0,40}?(?:is|:|=|would be|of)\s*:?\s*"
    r"(?:approximately\s+|about\s+|exactly\s+)?[\s*\"'\[(]*"
    r"(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?|" + _WORD_RE + r")\b", re.I)


def _to_int(token: str) -> int | None:
    token = token.strip()
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?", token):
        value = float(token.replace(",", ""))
        return int(value) if value.is_integer() else None
    number = word_number(token)
    if number is None:  # "six and eight": the first number, as the count is written first
        found = numbers_in(token)
        return found[0] if found else None
    return number


def extract_number(reply: str) -> Extraction:
    """The integer a counting reply commits to (digits or words), or Extraction(None, why)."""
    block = answer_block(reply)
    if block is not None:
        distinct = set(numbers_in(block))
        if len(distinct) == 1:
            return Extraction(str(distinct.pop()), "answer_tag")
        return Extraction(None, "answer_tag_ambiguous" if distinct else "answer_tag_none")
    text = final_text(reply)
    hits = list(_COUNT_EXPLICIT.finditer(text))
    for m in reversed(hits):
        v = _to_int(m.group(1))
        if v is not None:
            return Extraction(str(v), "explicit")
    distinct = set(numbers_in(text))
    if len(distinct) == 1:
        return Extraction(str(distinct.pop()), "number")
    return Extraction(None, "ambiguous" if distinct else "none")


# --- time spans and boxes (VCR-Bench open answers) ---------------------------------------------

_T = r"(\d+:\d{2}(?::\d{2})?(?:\.\d+)?|\d+(?:\.\d+)?)"
_SPAN = re.compile(_T + r"\s*(?:s|sec|secs|seconds)?\s*(?:-|–|—|to|,|~|until)\s*" + _T, re.I)
_BOX = re.compile(r"[\[(]\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)"
                  r"\s*,\s*(-?\d+(?:\.\d+)?)\s*[\])]")


def extract_span(text: str) -> tuple[float, float] | None:
    """The last time span written in `text` ("00:12-00:20", "[12.5, 20]", "3 to 7 seconds")."""
    block = answer_block(text)
    body = block if block is not None else final_text(text)
    for m in reversed(list(_SPAN.finditer(body))):
        if _BOX.search(body[max(0, m.start() - 2): m.end() + 20]) and body.count(",") >= 3:
            continue  # part of a box, not a span
        try:
            a, b = clock_seconds(m.group(1)), clock_seconds(m.group(2))
        except ValueError:  # "1:75" is no time
            continue
        return (min(a, b), max(a, b))
    return None


_TV = r"(\d+:\d{2}(?::\d{2})?(?:\.\d+)?|\d+(?:\.\d+)?)"
_BRACKET_SPAN = re.compile(r"\[\s*" + _TV + r"\s*(?:s|sec|seconds)?\s*,\s*" + _TV
                           + r"\s*(?:s|sec|seconds)?\s*\]", re.I)


def bracket_span(text: str) -> tuple[float, float] | None:
    """The last time span written as a bracketed pair, `[12.5, 20]` or `[00:12, 00:20]`, in
    the answer block (else the final text): the form the prompts ask for. Looser forms ("3-5",
    "3 to 5") are not spans here: a score "2-1" must not read as one."""
    block = answer_block(text)
    body = block if block is not None else final_text(text)
    hits = _BRACKET_SPAN.findall(body)
    if not hits:
        return None
    try:
        a, b = clock_seconds(hits[-1][0]), clock_seconds(hits[-1][1])
    except ValueError:
        return None
    return (min(a, b), max(a, b))


def extract_box(text: str) -> tuple[float, float, float, float] | None:
    """The last [x1, y1, x2, y2] box written in `text`."""
    block = answer_block(text)
    body = block if block is not None else final_text(text)
    boxes = _BOX.findall(body)
    if not boxes:
        return None
    x1, y1, x2, y2 = (float(v) for v in boxes[-1])
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def iou_1d(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Temporal intersection over union of two [start, end] spans."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else float(a == b)


def iou_box(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
