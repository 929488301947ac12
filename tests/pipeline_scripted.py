"""SCRIPTED stand-in (not a model) for every LLM role of the main job, for fault testing.

`ScriptedPipelineModel` is a responder for the loopback ScriptedTestServer. It answers each
request of `rewatch demo` from fixed rules over the prompt, the same way every time, so a run on
real captions (the object captioner's lines) yields questions, MCQs, kept chains and rewards that
tests can count and compare. It knows nothing a prompt does not say and learns nothing; it is a
deterministic fixture, not a measure of any model.

Stage 2 questions are clozes over a target caption line ("At 00:05, which word fills the blank
in: A ___ square appears at the top right?"), so every judge role can solve one from the caption
lines its prompt shows. The roles reuse the scripted panels of the other stage tests:
`qa_scripted.Panel` (its dispatch and verdicts, with each question derived from the prompt
instead of a table), `cot_scripted.Agents` (Reasoner, phrasing Observer, converter; the quoting
Observer is here) and `reward_scripted.judge_reply` (observation judge, M_infer, answer judge).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cot_scripted import (
    Agents,
    echo_observer,
    evidence_reasoner,
    observations,
    options_of,
    schema_of,
    step,
)
from qa_scripted import Panel, Q
from reward_scripted import judge_reply, words

from rewatch.video.stats import NAMED_COLOURS

# --- roles -------------------------------------------------------------------------------------
# the pipeline stage each role belongs to, in the order the main job runs them
STAGE_OF_ROLE = {
    "summary": "caption",
    "generation": "qa", "F1": "qa", "F2": "qa", "F3": "qa", "equivalence": "qa",
    "distractors": "qa", "key_check": "qa", "mcq_probe": "qa",
    "reasoner": "cot", "observer": "cot", "converter": "cot", "recap": "cot",
    "observation_judge": "reward", "infer": "reward", "answer_judge": "reward",
}
# markers of each prompt file (rewatch/synth/prompts, rewatch/reward/prompts), first match wins
_MARKERS = (
    ("summary", "Summarise the whole video"),
    ("reasoner", "You are the Reasoner"),
    ("observer", "You are the Observer"),
    ("converter", "You are M_convert"),
    ("recap", "You re-watched parts of a video"),
    ("observation_judge", "You check one step of a video-reasoning answer"),
    ("infer", "You answer a question about a video without seeing it"),
    ("answer_judge", "You compare an answer to a question about a video"),
    ("mcq_probe", "Choose one option."),
    ("generation", "Target line:"),
    ("F1", "is the proposed answer the correct answer"),
    ("equivalence", "mean the same thing"),
    ("distractors", "wrong answers that look plausible"),
    ("key_check", "which option answers the question?"),
    ("F3", "Summary of a video:"),
)


def role_of(body: dict[str, Any]) -> str:
    """The pipeline role a chat request plays, from its first message (F2: a bare question)."""
    first = body["messages"][0]["content"]
    first = first if isinstance(first, str) else " ".join(p.get("text", "") for p in first)
    return next((role for role, marker in _MARKERS if marker in first), "F2")


def stage_of(body: dict[str, Any]) -> str:
    """caption, qa, cot or reward: the stage a chat request of the main job comes from."""
    return STAGE_OF_ROLE[role_of(body)]


# --- cloze questions ---------------------------------------------------------------------------
BLANK = "___"
_CLOZE = re.compile(r"^At (\d{2}:\d{2}), which word fills the blank in: (.+)\?$")
_LINE = re.compile(r"^\[(\d{2}:\d{2})-(\d{2}:\d{2})\] (.+)$", re.M)
NUMBERS = "zero one two three four five six seven eight nine ten".split()
KINDS = {  # words of the same kind: plausible wrong answers for one another
    "colour": sorted({w for name in NAMED_COLOURS for w in name.split()} - {"dark", "light"}),
    "shape": ["circle", "square", "triangle", "rectangle"],
    "place": ["left", "right", "top", "bottom", "centre"],
    "number": NUMBERS[1:],
    "motion": ["appears", "disappears", "moves", "stays"],
}


def cloze_question(stamp: str, line: str, word: str) -> str | None:
    """The question of a target line: its text with the first `word` blanked, at its time."""
    text = line.strip().rstrip(".")
    m = re.search(rf"\b{re.escape(word)}\b", text)
    if m is None:
        return None
    return f"At {stamp}, which word fills the blank in: {text[:m.start()]}{BLANK}{text[m.end():]}?"


def caption_lines(prompt: str) -> list[tuple[str, str]]:
    """The `[MM:SS-MM:SS] text` caption lines a prompt shows, as (start stamp, text)."""
    return [(a, t.strip()) for a, _b, t in _LINE.findall(prompt)]


def cloze_answer(question: str, lines: list[tuple[str, str]]) -> str | None:
    """The word that turns the cloze into a caption line starting at its time (None: none)."""
    m = _CLOZE.match(question)
    if m is None:
        return None
    stamp, blanked = m.groups()
    # an observation writes a line's colons as commas (cloze_observer): both read the same
    pattern = re.compile(re.escape(blanked.replace(":", ",")).replace(re.escape(BLANK),
                                                                      r"([A-Za-z]+)") + r"\.?$")
    for start, text in lines:
        hit = pattern.match(text.replace(":", ","))
        if start == stamp and hit:
            return hit.group(1)
    return None


def kind_of(word: str) -> str | None:
    return next((k for k, words in KINDS.items() if word.lower() in words), None)


def same_kind(answer: str, lines: list[tuple[str, str]], n: int) -> list[str]:
    """Up to n wrong answers of the answer's kind (written in its case), or else other words
    of the caption lines."""
    kind = kind_of(answer)
    if kind is not None:
        pool = [w for w in KINDS[kind] if w != answer.lower()]
    else:
        words = re.findall(r"[A-Za-z]{4,}", " ".join(t for _s, t in lines).lower())
        pool = [w for w in dict.fromkeys(words) if w != answer.lower()]
    pool = [w.capitalize() if answer[:1].isupper() else w for w in pool]
    return pool[:n]


def prior_guess(question: str) -> str:
    """What a probe guesses with no video: "Two" for a count of objects (so a question whose
    answer is two is text-biased and F2 rejects it), else nothing."""
    return "Two" if re.search(rf"{BLANK} objects? (is|are) on screen", question) else "no idea"


# --- the roles ---------------------------------------------------------------------------------
def summary_reply(prompt: str) -> dict[str, Any]:
    """M_sum: the kinds of shapes the caption names, in general terms."""
    shapes = [s for s in KINDS["shape"] if s in prompt.lower()]
    things = " and ".join(f"{s}s" for s in shapes) or "shapes"
    return {"summary": f"Coloured {things} appear and move over plain backgrounds."}


def anchored_reply(prompt: str) -> dict[str, Any]:
    """M_qa on one target line: the suggested answer word (else its first colour, else its
    longest word) blanked out of the line."""
    stamp, line = re.search(r"^Target line: \[(\d{2}:\d{2})-\d{2}:\d{2}\] (.+)$", prompt,
                            re.M).groups()
    words = re.findall(r"[A-Za-z]+", line)
    hint = re.search(r'^Answer: "(.+)"$', prompt, re.M)
    colours = [w for w in words if kind_of(w) == "colour"]
    word = hint.group(1) if hint else (colours or [max(words, key=len)])[0]
    return {"answer": word, "question": cloze_question(stamp, line, word) or f"What is {line}?"}


def cloze_observer(content: str) -> dict[str, Any]:
    """A_O phrasing (`observer_mode: llm`): cot_scripted's echo of the caption lines, with
    colons as commas (an observation holds no colon)."""
    out = echo_observer(content)
    return out | {"observation": out["observation"].replace(":", ",")}


def quote_observer(body: dict[str, Any]) -> dict[str, Any]:
    """A_O quoting (`observer_mode: quote`): the listed quotes that share a word with the
    action, as many as the schema allows (else the first)."""
    content = body["messages"][0]["content"]
    action = re.search(r"^Action: (.+)$", content, re.M).group(1)
    quotes = content.split("\nQuotes:\n", 1)[1].splitlines()
    wanted = words(re.sub(r"\d{2}:\d{2}", " ", action))
    picked = [q for q in quotes if words(q.split("] ", 1)[-1]) & wanted] or quotes
    return {"quotes": picked[:schema_of(body)["properties"]["quotes"]["maxItems"]]}


def cloze_reasoner(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """cot_scripted's evidence Reasoner; its final answer is the one option that completes the
    cloze into a sentence it observed, when exactly one does."""
    out = evidence_reasoner(messages)
    m = _CLOZE.match(re.search(r"Question: (.+)", messages[1]["content"]).group(1))
    if out["action"] != "final_answer" or m is None:
        return out
    seen = observations(messages).replace(":", ",")
    blanked = m.group(2).replace(":", ",")
    fits = [v for v in options_of(messages).values()
            if re.search(rf"(?<![A-Za-z]){re.escape(blanked.replace(BLANK, v))}", seen)]
    return step("The observed line completes the question.", "final_answer", fits[0]) \
        if len(fits) == 1 else out


class ClozePanel(Panel):
    """qa_scripted's Panel with each question derived from the prompt, not from a table: the
    F1 judge supports an answer that completes the cloze, the probes answer by `prior_guess`
    without the video and "no idea" with the summary, M_qa's distractors are words of the
    answer's kind, and the key check picks the option that completes the cloze (Panel's own
    rules)."""

    def __init__(self) -> None:
        super().__init__({})

    def _find(self, prompt: str) -> Q:
        question = re.search(r"^Question: (.+)$", prompt, re.M).group(1)
        lines = caption_lines(prompt)
        answer = cloze_answer(question, lines) or ""
        proposed = re.search(r"^Proposed answer: (.+)$", prompt, re.M)
        want = re.search(r"Write (\d+) wrong answers", prompt)
        return Q(question, answer, supported=bool(answer) and proposed is not None
                 and proposed.group(1).strip().lower() == answer.lower(),
                 text=prior_guess(question),
                 distractors=tuple(same_kind(answer, lines, int(want.group(1)) if want else 8)))

    def __call__(self, body: dict[str, Any]) -> str:
        prompt = body["messages"][0]["content"]
        if "Target line:" in prompt:
            self._count("generation")
            return json.dumps(anchored_reply(prompt))
        return super().__call__(body)


class ScriptedPipelineModel:
    """A SCRIPTED stand-in for every LLM role of `rewatch demo` (not a model): a responder for
    ScriptedTestServer that dispatches on the prompt (`role_of`) and answers by rule."""

    def __init__(self) -> None:
        self.panel = ClozePanel()
        self.agents = Agents(reasoner=cloze_reasoner, observer=cloze_observer)
        self.calls: dict[str, int] = {}

    def __call__(self, body: dict[str, Any]) -> str:
        role = role_of(body)
        self.calls[role] = self.calls.get(role, 0) + 1
        stage = STAGE_OF_ROLE[role]
        if role == "summary":
            return json.dumps(summary_reply(body["messages"][0]["content"]))
        if role == "observer" and "\nQuotes:\n" in body["messages"][0]["content"]:
            return json.dumps(quote_observer(body))
        if stage == "qa":
            return self.panel(body)
        if stage == "cot":
            return self.agents(body)
        return judge_reply(body)


def run_records(out: Path, names: tuple[str, ...]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per file of `names` in a run directory: id -> record without wall-time fields; a
    finished run has no errors.jsonl and no duplicated ids."""
    assert not (out / "errors.jsonl").exists(), (out / "errors.jsonl").read_text()[:2000]
    result = {}
    for name in names:
        path = out / name
        rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        by_id = {r["id"]: {k: v for k, v in r.items() if "seconds" not in k} for r in rows}
        assert len(by_id) == len(rows), f"{name}: {len(rows) - len(by_id)} duplicated ids"
        result[name] = by_id
    return result
