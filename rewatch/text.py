"""The one reader of each small text form the stages share: timestamps, numbers in words and
prompt files.

The reward, the evaluation, the Observer's tools, the QA filters and the viewer all call these,
so "one hundred and five" is 105 and "1:02:03" is 3723 s wherever it is read.
"""

from __future__ import annotations

import re
from importlib import resources


def load_prompt(name: str, package: str = "rewatch.synth", *, strip: bool = False) -> str:
    """The prompt file `name` under `package`'s prompts/ folder, read at each call (so an edited
    prompt takes effect at the next request); `strip` drops trailing whitespace."""
    text = resources.files(package).joinpath(f"prompts/{name}").read_text(encoding="utf-8")
    return text.rstrip() if strip else text


# --- timestamps --------------------------------------------------------------------------------
TIMESTAMP_HELP = "MM:SS, HH:MM:SS, seconds (65 or 65.5) or a span MM:SS-MM:SS"
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
