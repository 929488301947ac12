"""Training samples from a run directory: the paper's three SFT tasks and the RL questions.

L_SFT = L_Cap + L_QA + L_CoT: the same video with three instructions (paper, "Loss & Training").
The direct and thinking instructions are the evaluation's own prompt files
(`rewatch/eval/prompts/direct.txt`, `think.txt`, and the `count_` pair for numeric answers), filled
by the evaluation's own `build_prompt`, so a model is trained on the exact text it is tested with.
A `Sample` holds the instruction text and the video; `video_messages` and `text_messages` render
it for a VLM (a video part) or for a text model (text-proxy mode: C_detail stands in for the video,
through the evaluation's `text_proxy` prompt).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from rewatch.config import Config, SFTMix
from rewatch.eval.benchmarks.base import EvalItem
from rewatch.eval.inputs import build_prompt, load_prompt, prompt_name, text_proxy_messages
from rewatch.schema import CaptionRecord, CoTRecord, MCQRecord
from rewatch.store import JsonlFile
from rewatch.text import load_prompt as load_prompt_file

Task = Literal["caption", "direct", "think"]
TASKS: tuple[Task, ...] = ("caption", "direct", "think")
Message = dict[str, Any]


class DataError(ValueError):
    """A run directory or data file cannot make training data; the message says what to fix."""


@dataclass
class Sample:
    """One training sample: the instruction text, the video it is about and (SFT) the target."""

    id: str
    task: str  # caption | direct | think (SFT) or rl
    source: str  # data_source: "rewatch" or an external file's name
    video_id: str
    video: str  # the video file
    duration: float
    prompt: str  # the instruction (+ question and options); the video is not in it
    target: str | None = None  # the assistant's text (SFT)
    answer: str | None = None  # the ground truth (letter, integer or text)
    question: str = ""
    options: dict[str, str] = field(default_factory=dict)
    qtype: str = ""
    kind: str = "mcq"  # mcq | count | open (the evaluation's answer kinds)
    caption: CaptionRecord | None = None  # C_detail; None for external items without one
    qa_id: str | None = None  # samples of one question share it (MCQ reformulations)

    @property
    def has_caption(self) -> bool:
        return self.caption is not None and bool(self.caption.detail)


@dataclass
class RunRecords:
    """The records of a run directory that training uses."""

    root: Path
    captions: list[CaptionRecord]
    mcqs: list[MCQRecord]
    chains: list[CoTRecord]


def _read(path: Path, model: type[BaseModel]) -> list[Any]:
    out = []
    for n, row in enumerate(JsonlFile(path).read(), 1):
        try:
            out.append(model.model_validate(row))
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(str(x) for x in err['loc']) or '(record)'}: "
                                 f"{err['msg']}" for err in e.errors()[:5])
            raise DataError(f"{path} record {n} (id {row.get('id', '?')!r}) is not a "
                            f"{model.__name__}: {problems}. Fix or remove that line, or rerun the "
                            "stage that wrote it.") from None
    return out


def load_run(run_dir: str | Path) -> RunRecords:
    """captions, MCQs and chains of a run; clear errors for a missing, empty or bad run."""
    root = Path(run_dir)
    if not root.is_dir():
        raise DataError(f"no such run directory: {root}")
    captions = _read(root / "captions.jsonl", CaptionRecord)
    if not captions:
        raise DataError(f"{root} has no captions (captions.jsonl is missing or empty): run the "
                        f"stages first, e.g. `rewatch synth run VIDEOS --out {root}`")
    return RunRecords(root, captions, _read(root / "mcq.jsonl", MCQRecord),
                      _read(root / "cot.jsonl", CoTRecord))


# --- prompts ---------------------------------------------------------------------------------

def caption_instruction() -> str:
    """The caption task's instruction (L_Cap), `rewatch/data/prompts/sft_caption.txt`."""
    return load_prompt_file("sft_caption.txt", "rewatch.data", strip=True)


def answer_kind(answer: str, options: dict[str, str]) -> str:
    """mcq with options, count for an integer answer, else open (the evaluation's kinds)."""
    if options:
        return "mcq"
    return "count" if answer.strip().lstrip("-").isdigit() else "open"


def eval_item(sample: Sample) -> EvalItem:
    """The sample as the evaluation harness sees a question (for its prompt builders)."""
    return EvalItem(id=sample.id, bench=sample.source, video=sample.video,
                    question=sample.question, options=sample.options,
                    answer=sample.answer or "", kind=sample.kind,  # type: ignore[arg-type]
                    duration=sample.duration)


def question_prompt(item: EvalItem, mode: str) -> str:
    """The evaluation's direct / thinking prompt for a question (ReWatch prompt style)."""
    return build_prompt(item, load_prompt(prompt_name(item, mode, "rewatch", None)),
                        item.duration)


# --- the three SFT tasks ------------------------------------------------------------------------

def sft_samples(run: RunRecords) -> dict[str, list[Sample]]:
    """Every caption, direct-answer and thinking sample of a run, by task (before the mix)."""
    caps = {c.video_id: c for c in run.captions}
    out: dict[str, list[Sample]] = {t: [] for t in TASKS}
    for c in run.captions:
        if c.detail:
            out["caption"].append(Sample(
                id=f"caption-{c.id}", task="caption", source="rewatch", video_id=c.video_id,
                video=c.video_path, duration=c.duration, prompt=caption_instruction(),
                target=c.detail_text(), caption=c))
    qa_of = {m.id: m.qa_id for m in run.mcqs}
    for kind, items in (("direct", run.mcqs), ("think", run.chains)):
        for m in items:
            cap = caps.get(m.video_id)
            if cap is None:
                continue
            s = Sample(id=f"{kind}-{m.id}", task=kind, source="rewatch", video_id=m.video_id,
                       video=cap.video_path, duration=cap.duration, prompt="",
                       answer=m.answer, question=m.question, options=dict(m.options),
                       qtype=getattr(m, "qtype", ""), kind="mcq", caption=cap,
                       qa_id=m.qa_id if isinstance(m, MCQRecord) else qa_of.get(m.mcq_id))
            s.prompt = question_prompt(eval_item(s), kind)
            s.target = m.answer if kind == "direct" else m.cot  # type: ignore[union-attr]
            out[kind].append(s)
    return out


def apply_mix(by_task: dict[str, list[Sample]], mix: SFTMix, seed: int = 0) -> list[Sample]:
    """The SFT set under the mix: `ratio` copies of each task's samples (a fraction keeps a
    seeded random subset). Raises DataError when the mix yields no sample."""
    out: list[Sample] = []
    for task in TASKS:
        items = by_task.get(task, [])
        ratio = getattr(mix, task)
        whole, frac = int(ratio), ratio - int(ratio)
        chosen = list(items) * whole
        if frac and items:
            rng = random.Random(f"{seed}-{task}")
            chosen += rng.sample(items, round(frac * len(items)))
        out += chosen
    if not out:
        have = ", ".join(f"{t} {len(by_task.get(t, []))}" for t in TASKS)
        want = ", ".join(f"{t}={getattr(mix, t)}" for t in TASKS)
        raise DataError(f"the SFT mix ({want}) yields no samples from what the run has ({have}); "
                        "raise a ratio under data.sft_mix for a task the run has samples of")
    random.Random(seed).shuffle(out)
    return out


# --- RL ----------------------------------------------------------------------------------------

def rl_samples(run: RunRecords) -> list[Sample]:
    """ReWatch-QA for GRPO: every MCQ with the thinking prompt, its answer and C_detail."""
    caps = {c.video_id: c for c in run.captions}
    out = []
    for m in run.mcqs:
        cap = caps.get(m.video_id)
        if cap is None:
            continue
        s = Sample(id=f"rl-{m.id}", task="rl", source="rewatch", video_id=m.video_id,
                   video=cap.video_path, duration=cap.duration, prompt="", answer=m.answer,
                   question=m.question, options=dict(m.options), qtype=m.qtype, kind="mcq",
                   caption=cap, qa_id=m.qa_id)
        s.prompt = question_prompt(eval_item(s), "think")
        out.append(s)
    return out


# --- rendering ---------------------------------------------------------------------------------

def video_messages(sample: Sample) -> list[Message]:
    """The user turn with the video as a `{"type": "video"}` part (TRL / Qwen2.5-VL form)."""
    return [{"role": "user", "content": [{"type": "video", "video": sample.video},
                                         {"type": "text", "text": sample.prompt}]}]


def text_messages(sample: Sample, cfg: Config) -> list[Message]:
    """The user turn in text-proxy mode: C_detail instead of the video, exactly as
    `rewatch eval run --inputs text_proxy` builds it."""
    if sample.caption is None:
        raise DataError(f"{sample.id}: text-proxy mode needs the video's caption (C_detail)")
    return text_proxy_messages(sample.prompt, eval_item(sample), sample.caption, cfg)


def count_tasks(samples: Iterable[Sample]) -> dict[str, int]:
    """Samples per task."""
    out: dict[str, int] = {}
    for s in samples:
        out[s.task] = out.get(s.task, 0) + 1
    return out
