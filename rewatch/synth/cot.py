"""Stage 3: dual-agent ReAct re-watching chains of thought (paper section 3.3).

The Reasoner A_R takes the question, options and history H_{t-1} and gives (T_t, Act_t); the
Observer A_O executes Act_t on C_detail (or, with `observer_uses_frames`, on real frames through
the captioner) and gives Obs_t. M_convert turns the trajectory into a chain with `<action>`,
`<observation>` and `<answer>` tags; `validate_chain` decides whether it is kept.
Every way a trajectory can fail ends it with a reason recorded in rejected.jsonl.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, create_model

from rewatch.config import Config
from rewatch.models import ChatModel, ModelError, Models, SchemaError
from rewatch.models.base import ContextLengthError
from rewatch.schema import CaptionLine, CaptionRecord, CoTRecord, CoTStep, MCQRecord, mmss
from rewatch.store import RunDir, stable_id
from rewatch.synth.cot_validate import (
    META_WORDS,
    answer_letter,
    unsupported_words,
    validate_chain,
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

log = logging.getLogger(__name__)
PROMPTS = Path(__file__).parent / "prompts"
STAGE = "cot"


@cache
def prompt(name: str) -> str:
    """A prompt file under synth/prompts/."""
    return (PROMPTS / name).read_text(encoding="utf-8")


class ReasonerStep(BaseModel):
    """One reply of A_R: a thought and an action (final_answer carries the option letter)."""

    thought: str = Field(max_length=240)
    action: Literal["segment_retrieval", "segment_query", "final_answer"]
    argument: str = Field(max_length=80)


ToolName = Literal["segment_retrieval", "segment_query"]


@cache
def reasoner_schema(may_answer: bool) -> type[ReasonerStep]:
    """The Reasoner's reply schema; before its first action it may not answer (a chain must
    re-watch the video: the grammar enforces it rather than rejecting afterwards)."""
    if may_answer:
        return ReasonerStep
    return create_model("ReasonerAction", __base__=ReasonerStep,
                        action=(ToolName, ...))  # type: ignore[arg-type]


class Observation(BaseModel):
    """One reply of A_O on the caption path: what is seen and the timestamps it came from."""

    observation: str = Field(max_length=300)
    timestamps: list[str] = Field(default_factory=list, max_length=4)


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

    @property
    def n_actions(self) -> int:
        return sum(1 for s in self.steps if s.action)


def options_text(options: dict[str, str]) -> str:
    return "\n".join(f"{k}. {v}" for k, v in options.items())


def _duration(caption: CaptionRecord) -> float:
    return max([caption.duration, *(c.end for c in caption.detail)])


async def reasoner(model: ChatModel, mcq: MCQRecord, duration: float,
                   steps: list[CoTStep], min_actions: int = 1) -> ReasonerStep:
    """A_R(H_{t-1}): the next thought and action, given the question and the history so far."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": prompt("cot_reasoner.md")},
        {"role": "user", "content": prompt("cot_question.md").format(
            end=mmss(duration), question=mcq.question, options=options_text(mcq.options))},
    ]
    for s in steps:
        tool, arg = parse_action(s.action or "")
        messages.append({"role": "assistant", "content": json.dumps(
            {"thought": s.thought, "action": tool, "argument": arg}, ensure_ascii=False)})
        messages.append({"role": "user", "content": f"Observation: {s.observation}"})
    may_answer = sum(1 for s in steps if s.action) >= min_actions
    reply = await model.chat(messages, schema=reasoner_schema(may_answer), max_tokens=160)
    return reply.parsed


def _covered(start: float, end: float, lines: list[CaptionLine], tol: float = 0.5) -> bool:
    """Whether [start, end] lies within the given lines (MM:SS rounding tolerated)."""
    if start == end:
        return any(c.start - tol <= start <= c.end + tol for c in lines)
    over = [c for c in lines if c.start < end and c.end > start]
    return bool(over) and start >= min(c.start for c in over) - tol \
        and end <= max(c.end for c in over) + tol


async def observer(model: ChatModel, action: str, result: ToolResult) -> str:
    """A_O on the caption path: phrase the tool's caption lines as an observation; the reply
    must use only their words and quote only their timestamps (else the trajectory ends)."""
    lines = format_lines(result.lines)
    reply = await model.chat([{"role": "user", "content": prompt("cot_observer.md").format(
        action=action, lines=lines)}], schema=Observation, max_tokens=160)
    obs: Observation = reply.parsed
    text = " ".join(obs.observation.split())
    if not any(not w.isdigit() for w in content_words(text)):
        raise TrajectoryEnd("invalid_observer_reply", f"observation {text!r} says nothing", text)
    extra = unsupported_words(text, [lines], META_WORDS)  # the lines' timestamps count too
    if extra:
        raise TrajectoryEnd("observer_unsupported",
                            f"{text[:160]!r} says {', '.join(extra[:8])}, not in the caption",
                            text)
    quoted = []
    for stamp in obs.timestamps:
        try:
            s, e = parse_timestamp(stamp)
        except ArgumentError:
            raise TrajectoryEnd("observer_unsupported", f"quoted timestamp {stamp!r}",
                                text) from None
        if not _covered(s, e, result.lines):
            raise TrajectoryEnd("observer_unsupported", f"quoted {stamp} is not a line it saw",
                                text)
        quoted.append(f"{mmss(s)}-{mmss(e)}" if e > s else mmss(s))
    quoted = quoted or [f"{mmss(s)}-{mmss(e)}" for s, e in result.spans]
    return f"At {', '.join(dict.fromkeys(quoted))}: {text}"


async def run_trajectory(mcq: MCQRecord, caption: CaptionRecord, models: Models,
                         cfg: Config) -> Trajectory:
    """The ReAct loop: Reasoner and Observer in turn until a final answer or a stop reason."""
    c = cfg.synth.cot
    traj = Trajectory()
    if not caption.detail:
        traj.reason, traj.detail = "no_caption", "C_detail has no lines"
        return traj
    index: CaptionIndex = caption_index(caption, cfg.embedder)
    duration = _duration(caption)
    seen: dict[tuple[str, str], int] = {}
    try:
        for t in range(c.max_steps):
            try:
                step = await reasoner(models[c.reasoner], mcq, duration, traj.steps,
                                      c.min_actions)
            except SchemaError as e:
                raise TrajectoryEnd("invalid_reasoner_reply", str(e)[:300]) from None
            thought = " ".join(step.thought.split())
            if step.action == "final_answer":
                letter = answer_letter(step.argument)
                if letter not in mcq.options:
                    traj.steps.append(CoTStep(thought=thought, final_answer=step.argument))
                    raise TrajectoryEnd("invalid_final_answer", f"{step.argument!r} is no option")
                traj.steps.append(CoTStep(thought=thought, final_answer=letter))
                traj.answer = letter
                break
            arg = " ".join(step.argument.split()).strip("'\"")
            key = (step.action, arg.lower())
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
                    from rewatch.synth.cot_frames import observer_frames

                    obs = await observer_frames(models[cfg.synth.caption.captioner], action,
                                                caption, result, cfg)
                except SchemaError as e:
                    raise TrajectoryEnd("invalid_observer_reply", str(e)[:300]) from None
            else:
                try:
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


def evidence_steps(traj: Trajectory) -> list[CoTStep]:
    """The action steps whose observation came from the video (errors and misses left out)."""
    return [traj.steps[i] for i in traj.evidence]


def render_chain(steps: list[CoTStep], reasoning: list[str], conclusion: str, answer: str) -> str:
    """The ReWatch CoT layout (prompts/cot_convert.md): reasoning, <action>, <observation> per
    step, then the conclusion and <answer>."""
    blocks = [f"{' '.join(r.split())}\n<action>{s.action}</action>\n"
              f"<observation>{s.observation}</observation>" for s, r in zip(steps, reasoning,
                                                                           strict=True)]
    return "\n".join([*blocks, f"{' '.join(conclusion.split())}\n<answer>{answer}</answer>"])


def trajectory_text(steps: list[CoTStep]) -> str:
    return "\n".join(f"Step {i}\nThought: {s.thought}\nAction: {s.action}\n"
                     f"Observation: {s.observation}" for i, s in enumerate(steps, 1))


async def convert_trajectory(model: ChatModel, mcq: MCQRecord, traj: Trajectory,
                             mode: str = "prose") -> str:
    """M_convert: the trajectory as a natural chain of thought in the ReWatch format."""
    steps = evidence_steps(traj)
    text = prompt("cot_convert.md").format(
        question=mcq.question, options=options_text(mcq.options),
        trajectory=trajectory_text(steps), answer=traj.answer)
    if mode == "free":
        reply = await model.chat([{"role": "user", "content": text}], max_tokens=700)
        return reply.text.strip()
    sentence = Annotated[str, Field(max_length=240)]
    schema = create_model("ConvertedProse", steps=(list[sentence], Field(
        min_length=len(steps), max_length=len(steps))), conclusion=(sentence, ...))
    text += "\n\n" + prompt("cot_convert_json.md").format(n=len(steps))
    reply = await model.chat([{"role": "user", "content": text}], schema=schema,
                             max_tokens=120 + 80 * len(steps))
    return render_chain(steps, reply.parsed.steps, reply.parsed.conclusion, traj.answer or "")


def cot_id(mcq: MCQRecord, cfg: Config) -> str:
    """Stable id of one chain: the MCQ and every setting that changes the trajectory."""
    c = cfg.synth.cot
    return stable_id(STAGE, mcq.id, c.model_dump(), cfg.embedder,
                     {n: cfg.models[n].model for n in (c.reasoner, c.observer, c.converter)})


async def synthesize_one(mcq: MCQRecord, caption: CaptionRecord, models: Models, cfg: Config
                         ) -> tuple[CoTRecord | None, dict[str, Any] | None]:
    """One MCQ through A_R/A_O, M_convert and validation: (kept record, None) or (None,
    rejection)."""
    rid = cot_id(mcq, cfg)
    traj = await run_trajectory(mcq, caption, models, cfg)
    cot = None
    if traj.reason is None:
        try:
            cot = await convert_trajectory(models[cfg.synth.cot.converter], mcq, traj,
                                           cfg.synth.cot.convert_mode)
        except SchemaError as e:
            traj.reason, traj.detail = "invalid_converter_reply", str(e)[:300]
    if cot is not None:
        check = validate_chain(cot, traj.steps, mcq.answer, _duration(caption),
                               context=[mcq.question, *mcq.options.values()],
                               caption=caption.detail_text())
        if not check.ok:
            traj.reason, traj.detail = check.reason, check.detail
    if traj.reason is not None:
        return None, {"stage": STAGE, "id": rid, "mcq_id": mcq.id, "video_id": mcq.video_id,
                      "reason": traj.reason, "detail": traj.detail, "cot": cot,
                      "trajectory": [s.model_dump() for s in traj.steps]}
    assert cot is not None
    return CoTRecord(id=rid, mcq_id=mcq.id, video_id=mcq.video_id, question=mcq.question,
                     options=mcq.options, answer=mcq.answer, trajectory=traj.steps, cot=cot,
                     n_actions=traj.n_actions), None


def _advance(progress: Any, total: int) -> Callable[[], None]:
    """A tick function for a rich Progress (a task is added), a callable(n), or nothing."""
    if progress is None:
        return lambda: None
    if hasattr(progress, "add_task"):
        task = progress.add_task("stage 3 cot", total=total)
        return lambda: progress.advance(task)
    return lambda: progress(1)


async def synthesize_cot(run: RunDir, cfg: Config, models: Models,
                         progress: Any = None) -> dict[str, int]:
    """Stage 3 over a run directory: captions.jsonl + mcq.jsonl -> cot.jsonl and rejections.

    Resumable: chains already kept or rejected are skipped, and the response cache replays the
    model calls of a chain that was cut off, so a rerun asks no model anything twice.
    `progress` is a rich Progress (as `rewatch synth` passes) or a callable taking a count.
    """
    captions = {r["video_id"]: CaptionRecord.model_validate(r)
                for r in run.file("captions.jsonl").read()}
    mcqs = [MCQRecord.model_validate(r) for r in run.file("mcq.jsonl").read()]
    kept_file, rejected_file = run.file("cot.jsonl"), run.file("rejected.jsonl")
    counts = {"total": len(mcqs), "kept": 0, "rejected": 0, "skipped": 0, "errors": 0}
    done = kept_file.ids() | rejected_file.ids()
    sem = asyncio.Semaphore(max(1, cfg.synth.concurrency))
    tick = _advance(progress, len(mcqs))

    async def one(mcq: MCQRecord) -> None:
        rid = cot_id(mcq, cfg)
        try:
            if rid in done:
                counts["skipped"] += 1
                return
            caption = captions.get(mcq.video_id)
            if caption is None:
                rejected_file.append({"stage": STAGE, "id": rid, "mcq_id": mcq.id,
                                      "video_id": mcq.video_id, "reason": "no_caption",
                                      "detail": "captions.jsonl has no record for this video"})
                counts["rejected"] += 1
                return
            async with sem:
                try:
                    kept, rejected = await synthesize_one(mcq, caption, models, cfg)
                except ContextLengthError as e:
                    kept, rejected = None, {"stage": STAGE, "id": rid, "mcq_id": mcq.id,
                                            "video_id": mcq.video_id, "reason": "context_length",
                                            "detail": str(e)[:300]}
            if kept is not None:
                kept_file.append(kept)
                counts["kept"] += 1
            else:
                rejected_file.append(rejected or {})
                counts["rejected"] += 1
        except Exception as e:  # transport failures, bad videos: retried next run, logged
            if not isinstance(e, ModelError):
                log.exception("cot: %s failed", rid)
            run.record_error(STAGE, rid, e)
            counts["errors"] += 1
        finally:
            tick()

    await asyncio.gather(*(one(m) for m in mcqs))
    log.info("cot: %s", counts)
    return counts
