"""Stage 3's two agents (paper section 3.3): the Reasoner A_R gives (T_t, Act_t) from the
question, options and history H_{t-1}; the Observer A_O executes Act_t on C_detail (or, with
`observer_uses_frames`, on real frames through the captioner) and gives Obs_t. `run_trajectory`
alternates them into one trajectory; every way it can fail ends it with a reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, RootModel, create_model

from rewatch.config import Config
from rewatch.models import ChatModel, Models, SchemaError
from rewatch.schema import CaptionLine, CaptionRecord, CoTStep, MCQRecord, mmss
from rewatch.synth.cot_frames import observer_frames
from rewatch.synth.cot_validate import (
    META_WORDS,
    unsupported_words,
)
from rewatch.synth.tools import (
    ArgumentError,
    CaptionIndex,
    ToolResult,
    caption_index,
    content_words,
    format_action,
    format_lines,
    parse_action,
    parse_timestamp,
)
from rewatch.text import load_prompt, option_letter

log = logging.getLogger(__name__)


class ReasonerStep(BaseModel):
    """One reply of A_R: a thought and an action (final_answer carries one option's text)."""

    thought: str = Field(max_length=160)
    action: Literal["segment_retrieval", "segment_query", "final_answer"]
    argument: str = Field(max_length=400)


# A retrieval query is a description: it starts with a letter (so never a timestamp, which
# belongs to segment_query), holds no quote, backslash or control character, and is 3-80
# characters long. The pattern carries the length because llama.cpp's grammar converter uses the
# pattern and ignores maxLength when both are given.
QUERY_PATTERN = r'^[A-Za-z][^"\\\x00-\x1f\x7f]{2,79}$'
# An observation is text about what is seen: it starts with a letter and holds no colon, so it
# cannot be a bare timestamp (the lines it uses are cited in `timestamps`); 8-300 characters.
OBSERVATION_PATTERN = r'^[A-Za-z][^"\\:\x00-\x1f\x7f]{7,299}$'
Thought = Annotated[str, Field(max_length=160)]
REPLY_TOKENS = 400  # covers the longest Reasoner or Observer reply its schema allows


def _one_of(values: Sequence[str]) -> Any:
    """A run-time Literal over `values` (JSON schema: `enum`, or `const` for one value)."""
    return Literal[tuple(values)]  # type: ignore[valid-type]


@lru_cache(maxsize=512)
def reasoner_schema(targets: tuple[str, ...], answers: tuple[str, ...],
                    may_answer: bool, must_answer: bool = False) -> type[BaseModel]:
    """The Reasoner's reply schema for one step: `anyOf` one object per action kind, each
    `{thought, action, argument}` (plain JSON schema, valid for llama.cpp grammars and vLLM
    guided decoding).

    - `segment_retrieval`: `argument` is a description (`QUERY_PATTERN`).
    - `segment_query`: `argument` is one of `targets`, the caption's real line timestamps not
      yet used in this trajectory (left out when none remain).
    - `final_answer`: `argument` is one of the options' texts (`answers`), copied whole; the
      trajectory maps it to its letter. A small model names the option it means far more
      often than its letter (the 1.5B Reasoner, on the same 9 histories: 5 right by text, 2 by
      letter; docs/stage3-cot.md). Left out until `may_answer` (a chain must re-watch before
      it answers: the grammar enforces it). With `must_answer` (the last step under
      `answer_at_limit`) it is the only alternative.
    """
    answer = create_model(
        "ReasonerReply" if must_answer else "Answer", thought=(Thought, ...),
        action=(_one_of(("final_answer",)), ...), argument=(_one_of(answers), ...))
    if must_answer:  # one plain object, no anyOf
        return answer
    variants: list[Any] = [create_model(
        "Retrieve", thought=(Thought, ...), action=(_one_of(("segment_retrieval",)), ...),
        argument=(Annotated[str, Field(max_length=80, pattern=QUERY_PATTERN)], ...))]
    if targets:
        variants.append(create_model(
            "Query", thought=(Thought, ...), action=(_one_of(("segment_query",)), ...),
            argument=(_one_of(targets), ...)))
    if may_answer:
        variants.append(answer)
    union: Any = Union[tuple(variants)]  # noqa: UP007 (a run-time union of model classes)
    # a named subclass: the schema's title (the json_schema name servers see) is ReasonerReply
    return type("ReasonerReply", (RootModel[union],), {"__module__": __name__})


def open_targets(targets: Mapping[str, frozenset[int]], steps: Sequence[CoTStep]) -> list[str]:
    """The `segment_query` arguments still allowed after `steps`: a stamp already used is left
    out, and so is every stamp that returns the same caption lines as a query already made
    (`00:05` and `00:05-00:06` name the same line: asking again is the same call)."""
    used_args: set[str] = set()
    used_lines: set[frozenset[int]] = set()
    for s in steps:
        if not s.action:
            continue
        try:
            tool, arg = parse_action(s.action)
        except ArgumentError:
            continue
        if tool == "segment_query":
            used_args.add(arg.lower())
            if arg in targets:
                used_lines.add(targets[arg])
    return [t for t, lines in targets.items()
            if t.lower() not in used_args and lines not in used_lines]


def observer_schema(stamps: tuple[str, ...]) -> type[BaseModel]:
    """A_O's reply schema on the caption path: `timestamps` cites 1-4 of the lines it was shown
    (an enum of their `MM:SS-MM:SS` stamps), then `observation` says what they show
    (`OBSERVATION_PATTERN`: words, not a timestamp)."""
    return _observer_schema(tuple(dict.fromkeys(stamps)))


@lru_cache(maxsize=512)
def _observer_schema(stamps: tuple[str, ...]) -> type[BaseModel]:
    cite: Any = list[_one_of(stamps)]  # type: ignore[misc]
    return create_model(
        "Observation",
        timestamps=(cite, Field(min_length=1, max_length=min(4, len(stamps)))),
        observation=(Annotated[str, Field(max_length=300, pattern=OBSERVATION_PATTERN)], ...))


class TrajectoryEnd(Exception):
    """Ends a trajectory; `reason` is the short code written to rejected.jsonl (`observation`:
    what the Observer said, when it was the Observer that failed)."""

    def __init__(self, reason: str, detail: str = "", observation: str | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.observation = reason, detail, observation


@dataclass
class Trajectory:
    """T = {(T_1, Act_1, Obs_1), ..., A_final} plus how it ended."""

    steps: list[CoTStep] = field(default_factory=list)
    answer: str | None = None
    reason: str | None = None  # None: the Reasoner gave a final answer
    detail: str = ""
    evidence: list[int] = field(default_factory=list)  # steps whose observation is the video's
    conversions: int = 0  # M_convert calls made on it (retries after prose_adds_facts)

    @property
    def n_actions(self) -> int:
        return sum(1 for s in self.steps if s.action)


def options_text(options: dict[str, str]) -> str:
    return "\n".join(f"{k}. {v}" for k, v in options.items())


def caption_duration(caption: CaptionRecord) -> float:
    return max([caption.duration, *(c.end for c in caption.detail)])


async def reasoner(model: ChatModel, mcq: MCQRecord, duration: float,
                   steps: list[CoTStep], min_actions: int = 1,
                   targets: Mapping[str, frozenset[int]] | None = None,
                   must_answer: bool = False) -> ReasonerStep:
    """A_R(H_{t-1}): the next thought and action, given the question and the history so far.

    The reply is constrained by `reasoner_schema`: `segment_query` may only name a caption line
    in `targets` (`CaptionIndex.query_targets()`) that this trajectory has not queried yet, and
    `final_answer` only an option's text. With `targets` None, segment_query is not offered;
    with `must_answer` (and `min_actions` met) only `final_answer` is.
    """
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": load_prompt("cot_reasoner.md")},
        {"role": "user", "content": load_prompt("cot_question.md").format(
            end=mmss(duration), question=mcq.question, options=options_text(mcq.options))},
    ]
    for s in steps:
        tool, arg = parse_action(s.action or "")
        messages.append({"role": "assistant", "content": json.dumps(
            {"thought": s.thought, "action": tool, "argument": arg}, ensure_ascii=False)})
        messages.append({"role": "user", "content": f"Observation: {s.observation}"})
    may_answer = sum(1 for s in steps if s.action) >= min_actions
    if may_answer and steps:  # every observation and the question again beside the latest
        # one: a small model otherwise answers from whatever it saw last (docs/stage3-cot.md)
        observed = "\n".join(f"- {s.observation}" for s in steps if s.observation)
        messages[-1]["content"] += "\n\n" + load_prompt("cot_decide.md").format(
            observed=observed, question=mcq.question, options=options_text(mcq.options))
    schema = reasoner_schema(tuple(open_targets(targets or {}, steps)),
                             tuple(dict.fromkeys(mcq.options[k] for k in sorted(mcq.options))),
                             may_answer,
                             must_answer and may_answer)
    # the budget covers the longest reply the schema allows (240 + 80 characters of strings,
    # about a token each at worst): a reply cut off mid-JSON would be refused as invalid
    reply = await model.chat(messages, schema=schema, max_tokens=REPLY_TOKENS)
    parsed = reply.parsed.root if isinstance(reply.parsed, RootModel) else reply.parsed
    return ReasonerStep.model_validate(parsed.model_dump())


@lru_cache(maxsize=512)
def recap_schema(answers: tuple[str, ...]) -> type[BaseModel]:
    """The recap answer's reply: a thought, then `answer`, one of the options' texts."""
    return create_model("RecapAnswer", thought=(Thought, ...),
                        answer=(_one_of(answers), ...))


async def recap_answer(model: ChatModel, mcq: MCQRecord, steps: list[CoTStep]) -> ReasonerStep:
    """A_R's final answer asked again in one message (`answer_recap`): its observations, the
    question and the options (`cot_answer.md`), no multi-turn history. Replayed on the 17
    final steps of a demo run, the 1.5B Reasoner chose the key 10 times so and 6 times in its
    history: it counted "Two objects are on screen now." as three there, not here."""
    observed = "\n".join(f"- {s.observation}" for s in steps if s.observation)
    text = load_prompt("cot_answer.md").format(observed=observed, question=mcq.question,
                                               options=options_text(mcq.options))
    answers = tuple(dict.fromkeys(mcq.options[k] for k in sorted(mcq.options)))
    reply = await model.chat([{"role": "user", "content": text}],
                             schema=recap_schema(answers), max_tokens=REPLY_TOKENS)
    return ReasonerStep(thought=reply.parsed.thought, action="final_answer",
                        argument=reply.parsed.answer)


def _covered(start: float, end: float, lines: list[CaptionLine], tol: float = 0.5) -> bool:
    """Whether [start, end] lies within the given lines (MM:SS rounding tolerated)."""
    if start == end:
        return any(c.start - tol <= start <= c.end + tol for c in lines)
    over = [c for c in lines if c.start < end and c.end > start]
    return bool(over) and start >= min(c.start for c in over) - tol \
        and end <= max(c.end for c in over) + tol


def _stamp(start: float, end: float) -> str:
    return f"{mmss(start)}-{mmss(end)}" if end > start else mmss(start)


def check_observation(text: str, lines: str, stamps: Sequence[str],
                      result: ToolResult) -> str:
    """The Observer's checks, whichever Observer wrote `text`: it must say something besides
    timestamps, use only words of the caption `lines` it was given (or words about watching),
    and quote only timestamps on lines it was given. Returns the stored observation
    `At <timestamps>: <text>`; raises TrajectoryEnd otherwise."""
    text = " ".join(text.split())
    if not any(not w.isdigit() for w in content_words(text)):
        raise TrajectoryEnd("invalid_observer_reply", f"observation {text!r} says nothing", text)
    extra = unsupported_words(text, [lines], META_WORDS)  # the lines' timestamps count too
    if extra:
        raise TrajectoryEnd("observer_unsupported",
                            f"{text[:160]!r} says {', '.join(extra[:8])}, not in the caption",
                            text)
    quoted = []
    for stamp in stamps:
        try:
            s, e = parse_timestamp(stamp)
        except ArgumentError:
            raise TrajectoryEnd("observer_unsupported", f"quoted timestamp {stamp!r}",
                                text) from None
        if not _covered(s, e, result.lines):
            raise TrajectoryEnd("observer_unsupported", f"quoted {stamp} is not a line it saw",
                                text)
        quoted.append(_stamp(s, e))
    quoted = quoted or [_stamp(s, e) for s, e in result.spans]
    return f"At {', '.join(dict.fromkeys(quoted))}: {text}"


async def observer(model: ChatModel, action: str, result: ToolResult) -> str:
    """A_O on the caption path (`observer_mode: llm`): the model is shown only the tool's
    caption lines and replies `{timestamps, observation}` under `observer_schema` (it must cite
    lines it was shown and write words, not a timestamp); `check_observation` then holds the
    reply to those lines' words (else the trajectory ends)."""
    lines = format_lines(result.lines)
    schema = observer_schema(tuple(f"{mmss(c.start)}-{mmss(c.end)}" for c in result.lines))
    reply = await model.chat([{"role": "user", "content": load_prompt("cot_observer.md").format(
        action=action, lines=lines)}], schema=schema, max_tokens=REPLY_TOKENS)
    obs = reply.parsed
    return check_observation(obs.observation, lines, obs.timestamps, result)


def quote_options(result: ToolResult) -> list[str]:
    """What the quoting Observer may pick: every clause (split at `;`) of every line the tool
    returned, as `[MM:SS-MM:SS] clause`, in the tool's order, without duplicates."""
    out = []
    for c in result.lines:
        for clause in c.text.split(";"):
            if clause.strip():
                out.append(f"[{mmss(c.start)}-{mmss(c.end)}] {' '.join(clause.split())}")
    return list(dict.fromkeys(out))


@lru_cache(maxsize=512)
def quote_schema(options: tuple[str, ...]) -> type[BaseModel]:
    """The quoting Observer's reply: `quotes`, 1-2 items of an enum of `quote_options`."""
    pick: Any = list[_one_of(options)]  # type: ignore[misc]
    return create_model("Quotes", quotes=(pick, Field(min_length=1,
                                                      max_length=min(2, len(options)))))


async def quote_observer(model: ChatModel, action: str, result: ToolResult) -> str:
    """A_O as a selector (`observer_mode: quote`): the model picks which clauses of the
    retrieved lines answer the action (the schema lets it pick nothing else); the observation
    is those clauses verbatim, `At <their timestamps>: clause; clause`. The model decides what
    is relevant, not how to say it, so it cannot add a word; `check_observation` still runs."""
    options = quote_options(result)
    if len(options) == 1:  # the schema's one possible reply: no call
        picked = options
    else:
        text = load_prompt("cot_observer_quote.md").format(action=action,
                                                           quotes="\n".join(options))
        reply = await model.chat([{"role": "user", "content": text}],
                                 schema=quote_schema(tuple(options)), max_tokens=REPLY_TOKENS)
        picked = [q for q in options if q in set(reply.parsed.quotes)]  # tool's order, once
    stamps = [q[1:q.index("]")] for q in picked]
    text = "; ".join(q[q.index("]") + 2:] for q in picked)
    return check_observation(text, format_lines(result.lines), list(dict.fromkeys(stamps)),
                             result)


def extractive_observer(result: ToolResult) -> str:
    """A_O without a model (`observer_mode: extractive`): the observation is the tool's caption
    lines verbatim, `At MM:SS-MM:SS: text` for each line, in the order the tool returned them.
    This is not an LLM observer: it paraphrases nothing and selects nothing beyond what the
    tool retrieved. The word checks of `check_observation` run on it all the same."""
    text = " ".join(f"At {_stamp(c.start, c.end)}: {c.text}" for c in result.lines)
    lines = format_lines(result.lines)
    if not any(not w.isdigit() for w in content_words(text)):
        raise TrajectoryEnd("invalid_observer_reply", f"observation {text!r} says nothing", text)
    extra = unsupported_words(text, [lines], META_WORDS)
    if extra:  # cannot happen with verbatim lines; kept so both paths pass the same check
        raise TrajectoryEnd("observer_unsupported", f"says {', '.join(extra[:8])}", text)
    return " ".join(text.split())


async def run_trajectory(mcq: MCQRecord, caption: CaptionRecord, models: Models,
                         cfg: Config) -> Trajectory:
    """The ReAct loop: Reasoner and Observer in turn until a final answer or a stop reason."""
    c = cfg.synth.cot
    traj = Trajectory()
    if not caption.detail:
        traj.reason, traj.detail = "no_caption", "C_detail has no lines"
        return traj
    index: CaptionIndex = caption_index(caption, cfg.embedder)
    duration = caption_duration(caption)
    targets = index.query_targets()
    offered = targets  # segment_query's stamps at the next step
    pos = {id(x): i for i, x in enumerate(index.lines)}
    seen: dict[tuple[str, str], int] = {}

    async def decide(must_answer: bool) -> ReasonerStep:
        model = models[c.reasoner]
        try:
            if c.answer_recap and must_answer and traj.n_actions >= c.min_actions:
                return await recap_answer(model, mcq, traj.steps)  # no choice left to make
            step = await reasoner(model, mcq, duration, traj.steps, c.min_actions, offered,
                                  must_answer)
            if c.answer_recap and step.action == "final_answer":
                return await recap_answer(model, mcq, traj.steps)
            return step
        except SchemaError as e:
            raise TrajectoryEnd("invalid_reasoner_reply", str(e)[:300]) from None

    try:
        for t in range(c.max_steps):
            step = await decide(c.answer_at_limit and t == c.max_steps - 1)
            arg = " ".join(step.argument.split()).strip("'\"")
            key = (step.action, arg.lower())
            if (step.action != "final_answer" and key in seen and c.answer_on_repeat
                    and traj.n_actions >= c.min_actions):
                # nothing new to look at: the step is asked again, as the final answer
                step = await decide(must_answer=True)
            thought = " ".join(step.thought.split())
            if step.action == "final_answer":
                letter, _why = option_letter(step.argument, mcq.options)  # names its text
                if letter is None:
                    traj.steps.append(CoTStep(thought=thought, final_answer=step.argument))
                    raise TrajectoryEnd("invalid_final_answer",
                                        f"{step.argument!r} is no option's text")
                traj.steps.append(CoTStep(thought=thought, final_answer=letter))
                traj.answer = letter
                break
            if key in seen:
                raise TrajectoryEnd("repeated_action",
                                    f"step {t + 1} repeats step {seen[key] + 1}: {step.action}")
            seen[key] = t
            action = format_action(step.action, arg)
            # retrieval encodes the query on the CPU: off the event loop, other chains go on
            result = await asyncio.to_thread(index.run, step.action, arg, c.retrieval_top_k)
            if not result.ok or not result.lines:
                obs = result.text  # errors and misses are reported as they are, no model call
            elif c.observer_uses_frames:
                try:
                    obs = await observer_frames(models[cfg.synth.caption.captioner], action,
                                                caption, result, cfg)
                except SchemaError as e:
                    raise TrajectoryEnd("invalid_observer_reply", str(e)[:300]) from None
            else:
                try:
                    if c.observer_mode == "extractive" or (
                            c.query_verbatim and step.action == "segment_query"):
                        obs = extractive_observer(result)
                    elif c.observer_mode == "quote":
                        obs = await quote_observer(models[c.observer], action, result)
                    else:
                        obs = await observer(models[c.observer], action, result)
                except SchemaError as e:
                    raise TrajectoryEnd("invalid_observer_reply", str(e)[:300]) from None
                except TrajectoryEnd as end:  # keep the step that failed, for the audit
                    traj.steps.append(CoTStep(thought=thought, action=action,
                                              observation=end.observation))
                    raise
            if result.ok and result.lines:
                traj.evidence.append(len(traj.steps))
            traj.steps.append(CoTStep(thought=thought, action=action, observation=obs,
                                      tool_error=result.error))
            offered = targets
            if c.query_found and step.action == "segment_retrieval" and result.lines:
                # the next query looks closer at a moment the retrieval found
                found = {pos[id(x)] for x in result.lines if id(x) in pos}
                near = {k: v for k, v in targets.items() if v & found}
                offered = near if open_targets(near, traj.steps) else targets
        else:
            raise TrajectoryEnd("step_limit", f"no final answer after {c.max_steps} steps")
    except TrajectoryEnd as end:
        traj.reason, traj.detail = end.reason, end.detail
        return traj
    if traj.n_actions == 0:
        traj.reason, traj.detail = "answer_without_evidence", "answered without re-watching"
    elif not traj.evidence:
        traj.reason, traj.detail = "no_caption_evidence", "no action found anything in C_detail"
    elif traj.answer != mcq.answer:
        traj.reason, traj.detail = "wrong_answer", f"answered {traj.answer}, truth {mcq.answer}"
    return traj
