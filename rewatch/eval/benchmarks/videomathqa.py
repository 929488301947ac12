"""VideoMathQA (420 questions): `mcq` (5-way, accuracy) and `multi_binary` (a question scores
only if every binary pair of the correct option against a distractor is answered right).

Rows: `videoID`, `question_id`, `category`, `question`, `options` (list of five, often written
"(A) ..."), `answer` (letter), `steps`, `length` (short, medium, long). A multi-binary file whose
rows have two options is used as is, grouped by `question_id`; five-option rows are expanded
into the four pairs here (the correct option alternates between A and B so that a model that
always says "A" cannot pass).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from rewatch.eval.benchmarks.base import (
    LETTERS,
    Benchmark,
    BenchmarkFormatError,
    BenchScore,
    EvalItem,
    Outcome,
    Status,
    choice_outcome,
    find_video,
    load_rows,
    need,
    register,
    summarize,
)

_PREFIX = re.compile(r"^\s*\(?([A-J])\s*[).:\]]\s*")


def parse_options(raw: Any, where: str) -> dict[str, str]:
    """A list like ["(A) 12", "(B) 15", ...] or a dict, as {letter: text}."""
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    if not isinstance(raw, list) or len(raw) < 2:
        raise BenchmarkFormatError(f"{where}: options must be a list of at least two strings")
    out: dict[str, str] = {}
    for k, text in enumerate(raw):
        m = _PREFIX.match(str(text))
        letter = m.group(1) if m else LETTERS[k]
        out[letter] = str(text)[m.end():].strip() if m else str(text).strip()
    if list(out) != list(LETTERS[: len(out)]):
        raise BenchmarkFormatError(f"{where}: option letters {list(out)} are not A, B, ...")
    return out


class _VideoMathQABase(Benchmark):
    title = "VideoMathQA"
    breakdown_keys = ("category", "length")
    default_file = "videomathqa_mcq.json"

    def _rows(self, data: str | Path, videos: str | Path) -> list[tuple[dict[str, Any], EvalItem]]:
        out = []
        for i, row in enumerate(load_rows(data)):
            where = f"{data} row {i}"
            options = parse_options(need(row, "options", where), where)
            answer = str(need(row, "answer", where)).strip().strip("()")
            if answer not in options:
                raise BenchmarkFormatError(f"{where}: answer {answer!r} is not an option")
            qid = str(need(row, "question_id", where))
            out.append((row, EvalItem(
                id=qid, bench=self.name,
                video=str(find_video(videos, str(need(row, "videoID", where)), row=where)),
                question=str(need(row, "question", where)), options=options, answer=answer,
                categories={"category": str(row.get("category", "")),
                            "length": str(row.get("length", ""))},
                extra={"steps": row.get("steps")},
            )))
        return out


@register
class VideoMathQA(_VideoMathQABase):
    name = "videomathqa"
    aliases = ("videomathqa-mcq", "videomathqa_mcq", "VideoMathQA")

    def load(self, data: str | Path, videos: str | Path) -> list[EvalItem]:
        return [item for _row, item in self._rows(data, videos)]


def binary_pairs(item: EvalItem) -> list[EvalItem]:
    """The correct option against each distractor, as two-option items of one group."""
    pairs = []
    distractors = [k for k in item.options if k != item.answer]
    for n, d in enumerate(distractors):
        correct_first = n % 2 == 0
        a, b = (item.answer, d) if correct_first else (d, item.answer)
        pairs.append(item.model_copy(update={
            "id": f"{item.id}#{n}", "group": item.id,
            "options": {"A": item.options[a], "B": item.options[b]},
            "answer": "A" if correct_first else "B",
        }))
    return pairs


@register
class VideoMathQAMultiBinary(_VideoMathQABase):
    name = "videomathqa-mbin"
    title = "VideoMathQA (MBin)"
    aliases = ("videomathqa_mbin", "videomathqa-multi-binary", "videomathqa_multi_binary",
               "multi_binary")
    default_file = "videomathqa_mbin.json"

    def load(self, data: str | Path, videos: str | Path) -> list[EvalItem]:
        items: list[EvalItem] = []
        seen: dict[str, int] = {}
        for _row, item in self._rows(data, videos):
            if len(item.options) == 2:  # already a binary pair of the official mbin config
                k = seen.get(item.id, 0)
                seen[item.id] = k + 1
                items.append(item.model_copy(update={"id": f"{item.id}#{k}", "group": item.id}))
            else:
                items.extend(binary_pairs(item))
        return items

    def score(self, items: list[EvalItem], replies: dict[str, str],
              judgments: dict[str, bool] | None = None) -> BenchScore:
        """A question counts only if all of its pairs are right; any pair without a reply makes
        the question missing, any pair without an answer makes it "no answer"."""
        groups: dict[str, list[Outcome]] = {}
        for it in items:
            groups.setdefault(it.group or it.id, []).append(choice_outcome(it, replies.get(it.id)))
        outcomes = []
        for gid, outs in groups.items():
            status: Status = (
                "missing" if any(o.status == "missing" for o in outs) else
                "no_answer" if any(o.status == "no_answer" for o in outs) else "answered")
            outcomes.append(Outcome(gid, all(o.correct for o in outs), status,
                                    "".join(o.predicted or "-" for o in outs), outs[0].categories))
        score = summarize(self.name, outcomes, self.breakdown_keys, metric="mbin accuracy")
        score.metrics["pairs"] = float(len(items))
        score.metrics["pair_accuracy"] = 100.0 * sum(
            o.correct for outs in groups.values() for o in outs) / max(1, len(items))
        return score
