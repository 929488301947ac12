"""M_convert (paper section 3.3): a trajectory as a natural chain of thought with `<action>`,
`<observation>` and `<answer>` tags, in prose mode (schema-held sentences around the trajectory's
own actions and observations) or free mode."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from pydantic import BaseModel, Field, create_model

from rewatch.models import ChatModel
from rewatch.schema import CoTStep, MCQRecord
from rewatch.synth.cot_agents import Trajectory, options_text
from rewatch.text import load_prompt

# M_convert's prose sentences (prose mode) are sentences: a first word of letters, a space, then
# 8-220 more characters. A list marker ("1. The first step") cannot start one (it is layout,
# and its number would be rejected as a fact no observation holds), nor can a bare letter ("A").
PROSE_PATTERN = r'^[A-Za-z][A-Za-z\x27-]* [^"\\\x00-\x1f\x7f]{8,220}$'
# Under an hour a time is MM:SS: a colon only as ":SS" followed by no digit or colon, so the
# 1.5B converter cannot write "00:03:00" for 00:03 (3 of 9 chains of one demo run rejected so as
# timestamp_not_in_video). llama.cpp's converter takes capturing groups, not `(?:`.
PROSE_PATTERN_MMSS = (r'^[A-Za-z][A-Za-z\x27-]* ([^"\\:\x00-\x1f\x7f]|'
                      r':[0-5][0-9][^"\\:0-9\x00-\x1f\x7f]){8,220}(:[0-5][0-9])?$')


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


@lru_cache(maxsize=64)
def prose_schema(n: int, hours: bool = True) -> type[BaseModel]:
    """M_convert's reply in prose mode: exactly `n` step sentences and a conclusion, each a
    sentence by `PROSE_PATTERN`, or `PROSE_PATTERN_MMSS` when the video is shorter than an
    hour (`hours` false). The pattern alone bounds a sentence's length: it is what the grammar
    enforces, and in `PROSE_PATTERN_MMSS` a repetition may be four characters (":05 "), so a
    `max_length` of 240 refused replies the grammar had allowed, and the re-ask at temperature
    0 wrote the same 300-character sentence again (3 calls of 45 s for one chain of a demo
    run)."""
    pattern = PROSE_PATTERN if hours else PROSE_PATTERN_MMSS
    sentence = Annotated[str, Field(pattern=pattern)]
    return create_model("ConvertedProse", steps=(list[sentence], Field(
        min_length=n, max_length=n)), conclusion=(sentence, ...))


async def convert_trajectory(model: ChatModel, mcq: MCQRecord, traj: Trajectory,
                             mode: str = "prose", avoid: list[str] | None = None,
                             duration: float | None = None) -> str:
    """M_convert: the trajectory as a natural chain of thought in the ReWatch format. `avoid`:
    words a previous conversion added that no observation holds (`validate_chain`'s
    `prose_adds_facts`); the prompt names them so the retry leaves them out."""
    steps = evidence_steps(traj)
    text = load_prompt("cot_convert.md").format(
        question=mcq.question, options=options_text(mcq.options),
        trajectory=trajectory_text(steps), answer=traj.answer)
    if avoid:
        text += "\n\n" + load_prompt("cot_convert_retry.md").format(words=", ".join(avoid))
    if mode == "free":
        reply = await model.chat([{"role": "user", "content": text}], max_tokens=700)
        return reply.text.strip()
    text += "\n\n" + load_prompt("cot_convert_json.md").format(n=len(steps))
    schema = prose_schema(len(steps), duration is None or duration >= 3600)
    reply = await model.chat([{"role": "user", "content": text}], schema=schema,
                             max_tokens=120 + 80 * len(steps))
    return render_chain(steps, reply.parsed.steps, reply.parsed.conclusion, traj.answer or "")
