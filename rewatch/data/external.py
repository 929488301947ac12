"""External RL questions in Video-R1's format, mixed into ReWatch-QA by ratio.

The paper's RL set is 20k ReWatch-QA + 10k Video-R1-QA + 10k LongVideoReason-QA. A Video-R1 row:
`{"problem", "problem_type", "options": ["A. ...", ...], "data_type": "video", "path",
"solution": "<answer>B</answer>"}`. Multiple-choice and integer (numerical) rows become RL
samples whose ground truth the O&R reward checks by rule; free-form, OCR and regression rows would
need a judge or another metric for r_acc and are counted and left out. Such files carry no
C_detail: unless a captions file is given, their samples get r_acc and r_fmt only (r_obs and r_rea
are skipped, and the reward says so).
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewatch.config import ExternalQA
from rewatch.data.samples import DataError, Sample, eval_item, question_prompt
from rewatch.eval.benchmarks.base import BenchmarkFormatError, load_rows, safe_video_path
from rewatch.schema import CaptionRecord

log = logging.getLogger(__name__)

SUPPORTED = {"multiple choice": "mcq", "numerical": "count"}
_OPTION = re.compile(r"^\s*\(?([A-Z])[.):]\s*(.*)$", re.S)
_ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.S | re.I)


@dataclass
class ExternalLoad:
    """The usable samples of one external file and why the other rows were left out."""

    name: str
    samples: list[Sample]
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def parse_options(options: Any) -> dict[str, str]:
    """Video-R1 options (["A. red", "B. blue"]) as {letter: text}; a list without letters is
    lettered in order."""
    if isinstance(options, dict):
        return {str(k): str(v) for k, v in options.items() if v is not None}
    out: dict[str, str] = {}
    for i, opt in enumerate(options or []):
        m = _OPTION.match(str(opt))
        if m:
            out[m.group(1)] = m.group(2).strip()
        else:
            out[chr(ord("A") + i)] = str(opt).strip()
    return out


def solution_answer(solution: Any) -> str:
    """The text inside `<answer>...</answer>` of a Video-R1 solution (or the whole text)."""
    text = str(solution or "")
    m = _ANSWER.search(text)
    return (m.group(1) if m else text).strip()


def _duration(path: Path, root: Path) -> float:
    from rewatch.video.io import probe

    return probe(path, root, check_tail=False).duration


def load_external(spec: ExternalQA, captions: dict[str, CaptionRecord] | None = None
                  ) -> ExternalLoad:
    """Every usable row of a Video-R1-format file as an RL sample (video paths checked to lie
    under the file's root, durations probed)."""
    path = Path(spec.path)
    name = spec.name or path.stem
    root = Path(spec.root) if spec.root else path.parent
    try:
        rows = load_rows(path)
    except BenchmarkFormatError as e:
        raise DataError(f"external QA file {path}: {e}") from None
    out = ExternalLoad(name, [])
    for i, row in enumerate(rows):
        where = f"{path} row {i}"
        missing = [k for k in ("problem", "problem_type", "path", "solution") if k not in row]
        if missing:
            raise DataError(f"{where}: missing field(s) {missing}; a Video-R1 row has problem, "
                            "problem_type, options, data_type, path, solution")
        if str(row.get("data_type", "video")) != "video":
            out.skip(f"data_type {row.get('data_type')}")
            continue
        kind = SUPPORTED.get(str(row["problem_type"]).strip().lower())
        if kind is None:
            out.skip(f"problem_type {row['problem_type']} (r_acc needs a judge or metric)")
            continue
        answer = solution_answer(row["solution"])
        options = parse_options(row.get("options")) if kind == "mcq" else {}
        if kind == "mcq" and answer not in options:
            out.skip("answer is not one of the options")
            continue
        if kind == "count" and not re.fullmatch(r"-?\d+", answer):
            out.skip("numerical answer is not an integer")
            continue
        try:
            video = safe_video_path(root, str(row["path"]), row=where)
        except BenchmarkFormatError as e:
            raise DataError(str(e)) from None
        if not video.exists():
            out.skip("video file not found")
            continue
        try:
            duration = _duration(video, root)
        except Exception as e:  # an unreadable video is left out, counted, and logged
            log.warning("%s: %s is unreadable (%s)", where, video, e)
            out.skip("video unreadable")
            continue
        cap = None
        if captions:
            cap = captions.get(str(video.resolve())) or captions.get(video.stem)
        s = Sample(id=f"{name}-{row.get('problem_id', i)}", task="rl", source=name,
                   video_id=f"{name}:{row['path']}", video=str(video), duration=duration,
                   prompt="", answer=answer, question=str(row["problem"]), options=options,
                   qtype=str(row["problem_type"]), kind=kind, caption=cap)
        s.prompt = question_prompt(eval_item(s), "think")
        out.samples.append(s)
    return out


def mix_external(rewatch_n: int, loads: list[tuple[ExternalQA, ExternalLoad]], seed: int = 0
                 ) -> tuple[list[Sample], dict[str, dict[str, int]]]:
    """`ratio × rewatch_n` samples of each external file (all of it when the run has no RL
    samples of its own); returns the samples and per-file counts."""
    out: list[Sample] = []
    counts: dict[str, dict[str, int]] = {}
    for spec, load in loads:
        want = round(spec.ratio * rewatch_n) if rewatch_n else len(load.samples)
        take = min(want, len(load.samples))
        if take < want:
            log.warning("%s: ratio %.3g asks for %d samples, the file has %d usable",
                        load.name, spec.ratio, want, len(load.samples))
        chosen = random.Random(f"{seed}-{load.name}").sample(load.samples, take)
        out += chosen
        counts[load.name] = {"usable": len(load.samples), "wanted": want, "mixed": take,
                             "with_caption": sum(s.has_caption for s in chosen),
                             **{f"skipped: {k}": v for k, v in load.skipped.items()}}
    return out, counts
