"""The O&R judges: M_judge for observations and free-form answers, and M_infer.

Each is a `ChatModel` asked with a prompt file under `reward/prompts/` and a schema-constrained
reply, so verdicts are always `{supported: bool}`; replies are cached by the model's
`ResponseCache`. Text from the policy is untrusted: it travels as one JSON object on a `DATA:`
line (quotes and newlines escaped, so it cannot close the data or start a new instruction).
A call that fails (after the model's own transport retries and schema re-asks; the judge adds
none) raises `JudgeError`; the reward marks the sample failed instead of scoring it 0.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from functools import cache, lru_cache
from typing import Any, Literal

from pydantic import BaseModel, create_model

from rewatch.models.base import ChatModel
from rewatch.reward.answers import AnswerKind
from rewatch.reward.parse import Step
from rewatch.schema import CaptionLine, CaptionRecord
from rewatch.synth.tools import ArgumentError, caption_index, parse_action, parse_time
from rewatch.text import CLAUSE_END, load_prompt

_CLOCK = r"\d{1,2}:\d{2}(?::\d{2})?"
_KEYWORD = re.compile(r"^\s*(?:query|q|text|description)\s*=\s*")
_CLOCK_RE = re.compile(rf"(?<![\d:])({_CLOCK})(?![\d:])")
_LINE_RE = re.compile(rf"^\s*\[({_CLOCK})(?:\s*-\s*({_CLOCK}))?\]")


class JudgeError(RuntimeError):
    """A judge call failed after every retry; the sample's reward is marked failed."""


class Verdict(BaseModel):
    """A judge's verdict: whether the claim is supported (observation) or correct (answer).
    No reason: it would follow the verdict, so it could not inform it, and nothing reads it
    (on the embedded model it was 30 of each verdict's 39 tokens)."""

    supported: bool


def _data_message(name: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    text = load_prompt(name, "rewatch.reward")
    return [{"role": "user",
             "content": text.replace("{data}", json.dumps(data, ensure_ascii=False))}]


@lru_cache(maxsize=256)
def _timed_lines(caption: str) -> tuple[tuple[float, float, str, str], ...]:
    # (start, end, text, line as written); parsed once per caption text: a GRPO batch judges
    # many steps against the same few captions
    out = []
    for raw in caption.splitlines():
        m = _LINE_RE.match(raw)
        if m is None:
            continue
        start = parse_time(m.group(1))
        end = parse_time(m.group(2)) if m.group(2) else start
        out.append((start, max(start, end), raw[m.end():].strip(), raw))
    return tuple(out)


def caption_lines(caption: str) -> list[tuple[CaptionLine, str]]:
    """The timestamped lines of a C_detail text (`[MM:SS-MM:SS] text` a line), each with its
    line as written; lines without a leading stamp are left out."""
    return [(CaptionLine(start=a, end=b, text=t), raw) for a, b, t, raw in _timed_lines(caption)]


def _retrieval_query(action: str) -> str | None:
    """The query of a `segment_retrieval(...)` action, else None."""
    try:
        tool, arg = parse_action(action)
    except ArgumentError:
        return None
    if tool != "segment_retrieval":
        return None
    return _KEYWORD.sub("", arg, count=1).strip().strip("'\"") or None


def retrieved_lines(caption: str, query: str, top_k: int = 3) -> list[CaptionLine]:
    """The C_detail lines `segment_retrieval(query)` returns: the Observer's own index
    (`synth.tools.caption_index`, BM25 + MiniLM), built once per caption text."""
    lines = [c for c, _raw in caption_lines(caption)]
    if not lines:
        return []
    record = CaptionRecord(
        id="reward-" + hashlib.sha256(caption.encode()).hexdigest()[:20], video_id="reward",
        video_path="", duration=max(c.end for c in lines), detail=lines, summary="",
        captioner="reward")
    return caption_index(record).segment_retrieval(query, top_k).lines


def caption_window(caption: str, action: str, *, window_s: float = 30.0,
                   max_chars: int = 6000, top_k: int = 3) -> str:
    """The C_detail lines a judge needs to check one step: those the action retrieves (a
    `segment_retrieval(query)` step gets the lines the Observer's index returns for the query)
    and those within `window_s` of the times it names. With neither, the whole caption. Cut at
    `max_chars`, retrieved lines and the lines nearest the named times kept first."""
    parsed = _timed_lines(caption)
    times = [parse_time(t) for t in _CLOCK_RE.findall(action)]
    query = _retrieval_query(action)
    wanted: dict[int, float] = {}  # line number -> priority (lower is kept first)
    if query is not None:
        hits = {(c.start, c.end, c.text) for c in retrieved_lines(caption, query, top_k)}
        wanted.update({i: -1.0 for i, (a, b, t, _raw) in enumerate(parsed) if (a, b, t) in hits})
    if times:
        lo, hi = min(times) - window_s, max(times) + window_s
        for i, (a, b, _t, _raw) in enumerate(parsed):
            if b >= lo and a <= hi:
                wanted.setdefault(i, min(abs(t - min(max(t, a), b)) for t in times))
    if not wanted:
        return caption if len(caption) <= max_chars else caption[:max_chars] + "\n[… caption cut]"
    keep: list[int] = []
    size = 0
    for i in sorted(wanted, key=lambda i: (wanted[i], i)):
        size += len(parsed[i][3]) + 1
        if size > max_chars and keep:
            break
        keep.append(i)
    text = "\n".join(parsed[i][3] for i in sorted(keep))
    if len(keep) < len(wanted):
        text += f"\n[… {len(wanted) - len(keep)} more lines cut]"
    return text if len(text) <= max_chars + 40 else text[:max_chars] + "\n[… caption cut]"


_SPAN = rf"{_CLOCK}(?:\s*-\s*{_CLOCK})?"
# "At MM:SS-MM:SS:" opening the observation or one of its sentences: the time of what follows
_AT_STAMPS = re.compile(rf"(?:^|(?<=[.;!?])\s+)\s*(?:at\s+)?({_SPAN}(?:\s*,\s*{_SPAN})*)\s*:\s*",
                        re.I)


def _clauses(text: str) -> list[str]:
    """A text's clauses (split at `;` and sentence ends), lowercased, words only."""
    out = (" ".join(re.findall(r"[a-z0-9]+", c.lower())) for c in CLAUSE_END.split(text))
    return [c for c in out if c]


def quotes_caption(caption: str, action: str, observation: str, tolerance_s: float = 0.5
                   ) -> bool:
    """Is every clause of the observation a whole clause of a C_detail line at a time the step
    names (the "At MM:SS:" stamps opening the observation or its sentence, else the action's)?
    Such an observation is C_detail's own words at that time, supported by definition, and is
    scored without a judge call. (On the demo's chains, whose Observer quotes, the 1.5B judge
    marked 23 of 25 verbatim quotes unsupported, reading "00:03" as "00:03:00".) A moment
    observed whole quotes each of its lines after its own stamp. Part of a clause does not
    count ("picks up the cup" of "no one picks up the cup"): anything else goes to the judge."""
    def near(text: str) -> list[tuple[float, float]]:
        spans = [[parse_time(t) for t in _CLOCK_RE.findall(x)] for x in re.findall(_SPAN, text)]
        return [(min(t) - tolerance_s, max(t) + tolerance_s) for t in spans]

    lines = _timed_lines(caption)
    acted = near(action)
    parts = _AT_STAMPS.split(observation)  # [before, stamps, text, stamps, text, ...]
    pieces: list[tuple[list[tuple[float, float]], str]] = [([], parts[0])]
    pieces += [(near(parts[i]), parts[i + 1]) for i in range(1, len(parts), 2)]
    quoted = False
    for stated, text in pieces:
        clauses = _clauses(text)
        if not clauses:
            continue
        if stated and acted and not all(any(b >= c and a <= d for c, d in acted)
                                        for a, b in stated):
            return False  # it quotes another moment than the one re-watched
        at = stated or acted
        said = {c for a, b, line, _raw in lines
                if any(b >= lo and a <= hi for lo, hi in at) for c in _clauses(line)}
        if not at or not all(c in said for c in clauses):
            return False
        quoted = True
    return quoted


@cache
def answer_schema(kind: AnswerKind, letters: tuple[str, ...] = ()) -> type[BaseModel]:
    """The reply schema of M_infer: one option letter, one whole number, or short text."""
    answer_type: Any
    if kind == "choice" and letters:
        answer_type = Literal[letters]  # type: ignore[valid-type]
    elif kind == "count":
        answer_type = int
    else:
        answer_type = str
    return create_model(f"InferredAnswer_{kind}", answer=(answer_type, ...))


class RewardJudge:
    """M_judge (observations, free-form answers) and M_infer behind one object.

    `judge` and `infer` may be the same ChatModel. `max_observation_chars`: longer
    observations are unsupported without a call (real ones are a sentence or two).
    """

    def __init__(self, judge: ChatModel, infer: ChatModel | None = None, *,
                 window_s: float = 30.0, max_caption_chars: int = 6000,
                 max_observation_chars: int = 1000, max_tokens: int = 128,
                 retrieval_top_k: int = 3):
        self.judge = judge
        self.infer = infer or judge
        self.window_s = window_s
        self.max_caption_chars = max_caption_chars
        self.max_observation_chars = max_observation_chars
        self.max_tokens = max_tokens
        self.retrieval_top_k = retrieval_top_k  # as the Observer's segment_retrieval
        self.stats: Counter[str] = Counter()

    async def _ask(self, model: ChatModel, messages: list[dict[str, Any]],
                   schema: type[BaseModel], what: str) -> Any:
        """One judge call. It is not retried here: the model already retried transport failures
        and re-asked replies outside the schema (one retry policy per layer, docs/models.md), so
        a call that still fails marks the sample failed."""
        self.stats[f"{what}_calls"] += 1
        try:
            reply = await model.chat(messages, schema=schema, temperature=0.0,
                                     max_tokens=self.max_tokens)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # any backend failure marks the sample, never crashes it
            self.stats["failures"] += 1
            raise JudgeError(f"{what} judge failed: {type(e).__name__}: {str(e)[:300]}") from e
        if reply.cached:
            self.stats["cache_hits"] += 1
        return reply.parsed

    async def observation_verdict(self, caption: str, action: str, observation: str) -> Verdict:
        """M_judge(C_detail, {Act, Obs}): is the observation supported at the action's time?"""
        if len(observation) > self.max_observation_chars:
            self.stats["observation_too_long"] += 1
            return Verdict(supported=False)
        window = functools.partial(caption_window, caption, action, window_s=self.window_s,
                                   max_chars=self.max_caption_chars, top_k=self.retrieval_top_k)
        if _retrieval_query(action) is not None:  # the index embeds lines: off the event loop
            excerpt = await asyncio.to_thread(window)
        else:
            excerpt = window()
        data = {"caption_lines": excerpt, "action": action, "observation": observation}
        verdict: Verdict = await self._ask(
            self.judge, _data_message("observation_judge.md", data), Verdict, "observation")
        return verdict

    async def infer_answer(self, question: str, options: dict[str, str] | None,
                           steps: Sequence[Step], kind: AnswerKind) -> str:
        """M_infer(Q, {Act, Obs}): the answer the gathered evidence alone leads to."""
        data: dict[str, Any] = {"question": question}
        if options:
            data["options"] = options
        data["evidence"] = [{"action": s.action, "observation": s.observation} for s in steps]
        schema = answer_schema(kind, tuple(sorted(options)) if options else ())
        parsed = await self._ask(self.infer, _data_message("infer_answer.md", data), schema,
                                 "infer")
        return str(parsed.answer)

    async def answer_verdict(self, question: str, answer: str, ground_truth: str) -> Verdict:
        """M_judge(A, A_gt) for free-form answers: does the answer state the ground truth?"""
        data = {"question": question, "answer": answer[:2000], "ground_truth": ground_truth}
        verdict: Verdict = await self._ask(
            self.judge, _data_message("answer_judge.md", data), Verdict, "answer")
        return verdict


def build_judge(cfg: Any, choice: str = "config", cache: Any = None) -> RewardJudge | None:
    """The reward judge a config and a `--judge` choice name: `config` (the models table's
    `reward.judge` / `reward.infer`), `none`, `embedded`, or an OpenAI-compatible base URL."""
    from rewatch.config import ModelSpec
    from rewatch.models.registry import Models, build_model

    r = cfg.reward
    kw = dict(window_s=r.window_s, max_observation_chars=r.max_observation_chars,
              retrieval_top_k=cfg.synth.cot.retrieval_top_k)
    if choice == "none":
        return None
    if choice == "config":
        models = Models(cfg, cache)
        return RewardJudge(models[r.judge], models[r.infer], **kw)
    if choice == "embedded":
        return RewardJudge(build_model(ModelSpec.model_validate({"backend": "embedded"}), cache),
                           **kw)
    if choice.startswith(("http://", "https://")):
        base = cfg.models[r.judge]
        spec = ModelSpec.model_validate({**base.model_dump(), "backend": "openai",
                                         "base_url": choice})
        return RewardJudge(build_model(spec, cache), **kw)
    raise ValueError(f"--judge must be none, embedded, config or an http(s) URL, not {choice!r}")
