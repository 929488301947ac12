"""The one reader of each small text form the stages share: timestamps, numbers in words,
option letters and prompt files.

The reward, the evaluation, the Observer's tools, the QA filters and the viewer all call these,
so "one hundred and five" is 105 and "1:02:03" is 3723 s wherever it is read.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from importlib import resources


def load_prompt(name: str, package: str = "rewatch.synth", *, strip: bool = False) -> str:
    """The prompt file `name` under `package`'s prompts/ folder, read at each call (so an edited
    prompt takes effect at the next request); `strip` drops trailing whitespace."""
    text = resources.files(package).joinpath(f"prompts/{name}").read_text(encoding="utf-8")
    return text.rstrip() if strip else text


# --- timestamps --------------------------------------------------------------------------------
TIMESTAMP_HELP = "MM:SS, HH:MM:SS, seconds (65 or 65.5) or a span MM:SS-MM:SS"
# where a clause ends: `;` or a sentence end (caption lines join clauses so)
CLAUSE_END = re.compile(r"[;.!?](?:\s|$)")
_CLOCK = re.compile(r"^(?:(\d{1,2}):)?(\d{1,3}):(\d{1,2}(?:\.\d+)?)$")
_SECONDS = re.compile(r"^(\d+(?:\.\d+)?)\s*(?:s|sec|secs|seconds?)?$")


def clock_seconds(text: str) -> float:
    """One timestamp as seconds: "1:02:03" -> 3723, "62:03" -> 3723, "01:05.5" -> 65.5, "65.5"
    or "65.5 s" -> 65.5. ValueError (its message says what to write) when it is none of these,
    or when a seconds field (or the minutes of HH:MM:SS) is 60 or more."""
    t = text.strip().strip("[]()<>'\" ").strip()
    if not t:
        raise ValueError(f"empty timestamp; use {TIMESTAMP_HELP}")
    m = _CLOCK.match(t)
    if m:
        h, mnt, sec = int(m.group(1) or 0), int(m.group(2)), float(m.group(3))
        if sec >= 60 or (m.group(1) is not None and mnt >= 60):
            raise ValueError(f"timestamp {t!r} has a field of 60 or more; use {TIMESTAMP_HELP}")
        return h * 3600 + mnt * 60 + sec
    m = _SECONDS.match(t)
    if m:
        return float(m.group(1))
    raise ValueError(f"cannot read timestamp {t!r}; use {TIMESTAMP_HELP}")


# --- numbers in words --------------------------------------------------------------------------
ONES = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen".split())}
TENS = {w: 10 * i for i, w in enumerate(
    "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()) if w != "_"}
SCALES = {"hundred": 100, "thousand": 1000}
_WORDS = re.compile(r"[a-z]+")
_TOKENS = re.compile(r"(?<![\w.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?!\w)|[a-z]+")


def number_spans(words: list[str]) -> list[tuple[int, int, int]]:
    """The numbers written in words in `words` ("seven", "twenty one", "one hundred and five",
    "a hundred") as (first index, end index, value); two numbers side by side ("six and eight",
    "seven eight") stay two numbers."""
    found: list[tuple[int, int, int]] = []
    total = current = 0
    start = end = 0
    last = ""  # "", "ones", "tens" or "scale": the kind of the previous number word
    for i, w in enumerate([*words, "."]):
        if w == "a" and i + 1 < len(words) and words[i + 1] in SCALES:
            if last:
                found.append((start, end, total + current))
            total, current, start, last = 0, 0, i, "a"
            continue
        if w in SCALES and last:
            current = max(current, 1) * SCALES[w]
            if SCALES[w] >= 1000:
                total, current = total + current, 0
            last, end = "scale", i + 1
            continue
        if w == "and" and last == "scale":
            continue
        v = ONES.get(w, TENS.get(w))
        kind = "ones" if w in ONES else "tens"
        if v is not None:
            joins = last == "scale" or (last == "tens" and kind == "ones" and 0 < v < 10)
            if last and not joins:
                found.append((start, end, total + current))
                total = current = 0
            if not last or not joins:
                start = i
            current += v
            last, end = kind, i + 1
            continue
        if last and last != "a":
            found.append((start, end, total + current))
        total, current, last = 0, 0, ""
    return found


def word_number(text: str) -> int | None:
    """The number `text` is when it is exactly one number in words ("twenty-one" -> 21,
    "one hundred and five" -> 105), else None."""
    words = _WORDS.findall(text.lower().replace("-", " "))
    spans = number_spans(words)
    if len(spans) == 1 and spans[0][:2] == (0, len(words)):
        return spans[0][2]
    return None


def numbers_in(text: str) -> list[int]:
    """Every whole number written in `text`, digits ("1,200", "7") or words, in order;
    non-integral decimals are skipped."""
    tokens = _TOKENS.findall(text.lower().replace("-", " "))
    out: list[tuple[int, int]] = []
    for i, tok in enumerate(tokens):
        if tok[0].isdigit():
            value = float(tok.replace(",", ""))
            if value.is_integer():
                out.append((i, int(value)))
    out += [(s, v) for s, _, v in number_spans(tokens)]
    return [v for _, v in sorted(out)]


def digits_for_words(words: list[str]) -> list[str]:
    """`words` with each number written in words replaced by its digits
    (["one", "hundred", "and", "five", "cats"] -> ["105", "cats"])."""
    out: list[str] = []
    i = 0
    for start, end, value in number_spans(words):
        out += [*words[i:start], str(value)]
        i = end
    return out + words[i:]


# --- option letters ----------------------------------------------------------------------------
# The one reading of a multiple-choice *answer* (an `<answer>` block's content, a Reasoner's
# final_answer argument), shared by the reward's r_acc (rewatch/reward/answers.py), the Stage 3
# chain check (rewatch/synth/cot_validate.py, cot_agents.py) and eval's strict mode
# (rewatch/eval/extract.py), so that they agree on what an answer names: a letter followed by its
# own option's text is that option; a letter followed by another option's text, or a second
# letter, names none. Eval's *official* mode keeps each benchmark's own extraction code
# (rewatch/eval/benchmarks/): those rules must reproduce upstream quirks ("Answer: E" read as A in
# VideoMathQA, a random letter in MINERVA) and so must not follow this one.

# one upper-case letter, alone or as "(B)", "B.", "B)", "B: text", "B. text"
_CHOICE = re.compile(r"\(?([A-Z])(?![A-Za-z0-9])\)?(?:\s*[.:)\-]\s*|\s+|$)(.*)", re.S)
_LOWER_LETTER = re.compile(r"\(?([a-z])\)?[.:)]?")
# a letter standing alone: not inside a word, a contraction or a hyphenated word ("E-mail")
_LONE_LETTER = re.compile(r"(?<![A-Za-z0-9'’_\-])[A-Z](?![A-Za-z0-9'’_\-])")
_ARTICLE = re.compile(r"\s+(?!(?:or|and|nor)\b)[a-z]")  # "A man": the article, not option A


def option_norm(text: str) -> str:
    """An option or answer text normalised for comparison: lower case, punctuation and markdown
    as spaces, whitespace collapsed ("**Twice.**" -> "twice")."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def option_text(letter: str, text: str) -> str:
    """An option's own text, normalised, without a copy of its own letter in front
    (Video-R1-style options are written "C. twice")."""
    m = _CHOICE.fullmatch(text.strip())
    if m and m.group(1) == letter and m.group(2).strip():
        text = m.group(2)
    return option_norm(text)


@functools.lru_cache(maxsize=4096)
def _option_table(items: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    # a GRPO batch scores many answers against the same options: normalise them once
    return tuple((k, option_text(k, v)) for k, v in items)


def options_matching(text: str, options: dict[str, str]) -> list[str]:
    """The letters whose option text `text` is (normalised); several when options repeat."""
    t = option_norm(text)
    if not t:
        return []
    return [k for k, v in _option_table(tuple(options.items())) if v == t]


def letters_named(text: str, letters: str | None = None) -> set[str]:
    """The distinct standalone upper-case letters in `text` (among `letters` when given); an
    "A" before a lower-case word ("A man") is the article, not a letter; "(A)" always counts."""
    found: set[str] = set()
    for m in _LONE_LETTER.finditer(text):
        ch = m.group(0)
        if letters is not None and ch not in letters:
            continue
        before = text[m.start() - 1] if m.start() else ""
        if ch == "A" and before != "(" and _ARTICLE.match(text, m.end()):
            continue
        found.add(ch)
    return found


def option_letter(answer: str, options: dict[str, str] | None = None, *,
                  extra_text: bool = False) -> tuple[str | None, str]:
    """The single option letter an answer names, or (None, reason); the reason starts with a
    code: other_option_text, multiple_options, extra_text, not_an_option, lowercase_letter,
    fullwidth_letter, lookalike_letter.

    An option's text alone names that option ("twice", checked first: "A dog" may be option
    B). A letter alone, or followed by its own option's text ("C. twice" when C is "twice"),
    names that letter. A letter followed by another option's text, or with a second option
    letter in the answer, names none. Any other text after the letter names none unless
    `extra_text` (a reader of free replies, such as eval's strict mode, takes "B because ...";
    the reward does not: the policy was asked for the letter). Without `options` the text after
    a letter cannot be checked: only `extra_text` accepts it."""
    text = answer.strip()
    hits = options_matching(text, options) if options else []
    if len(hits) == 1:
        return hits[0], ""
    letters = "".join(options) if options else None
    m = _CHOICE.fullmatch(text)
    if m:
        letter, rest = m.group(1), m.group(2).strip().rstrip(".")
        if options is not None and letter not in options:
            return None, f"not_an_option: {letter!r} is not one of {sorted(options)}"
        if not rest:
            return letter, ""
        if options is not None:
            if option_norm(rest) == dict(_option_table(tuple(options.items())))[letter]:
                return letter, ""
            others = [k for k in options_matching(rest, options) if k != letter]
            if others:
                return None, (f"other_option_text: {letter} is followed by the text of "
                              f"option {others[0]}")
        if len(letters_named(text, letters) | {letter}) > 1:
            return None, "multiple_options: the answer names more than one option"
        if extra_text:
            return letter, ""
        if options is None:
            return None, ("extra_text: the answer has text beyond the option letter (no "
                          "options given to check it against)")
        return None, "extra_text: the answer has text beyond the option letter"
    if len(letters_named(text, letters)) > 1 or re.fullmatch(r"[A-Z]{2,10}", text):
        return None, "multiple_options: the answer names more than one option"
    if _LOWER_LETTER.fullmatch(text):
        return None, "lowercase_letter: option letters are upper case"
    folded = unicodedata.normalize("NFKC", text)
    if folded != text and _CHOICE.fullmatch(folded):
        return None, "fullwidth_letter: option letters are ASCII"
    if len(text) <= 4 and any(ord(c) > 127 and c.isalpha() for c in text):
        return None, "lookalike_letter: a non-ASCII character in place of an option letter"
    return None, "not_an_option: the answer names no option letter"
