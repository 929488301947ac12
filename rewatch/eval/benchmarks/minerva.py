"""MINERVA (1515 questions): 5-way multiple choice over long videos; accuracy.

File `minerva.json`: `key`, `video_id`, `question`, `answer`, `answer_choice_0..4`, `answer_id`,
`reasoning`, `question type`, `split`, `category`. Videos are `<video_id>.mp4` under --videos.
"""

from __future__ import annotations

from pathlib import Path

from rewatch.eval.benchmarks.base import (
    LETTERS,
    Benchmark,
    BenchmarkFormatError,
    EvalItem,
    find_video,
    load_rows,
    need,
    register,
)


@register
class Minerva(Benchmark):
    name = "minerva"
    title = "MINERVA"
    aliases = ("MINERVA",)
    breakdown_keys = ("question_type", "category")
    default_file = "minerva.json"

    def load(self, data: str | Path, videos: str | Path) -> list[EvalItem]:
        items = []
        for i, row in enumerate(load_rows(data)):
            where = f"{data} row {i}"
            choices = [row.get(f"answer_choice_{k}") for k in range(10)]
            choices = [c for c in choices if c is not None]
            if len(choices) < 2:
                raise BenchmarkFormatError(f"{where}: needs answer_choice_0..4")
            answer_id = int(need(row, "answer_id", where))
            if not 0 <= answer_id < len(choices):
                raise BenchmarkFormatError(f"{where}: answer_id {answer_id} out of range")
            items.append(EvalItem(
                id=str(row.get("key", i)), bench=self.name,
                video=str(find_video(videos, str(need(row, "video_id", where)), row=where)),
                question=str(need(row, "question", where)),
                options={LETTERS[k]: str(c) for k, c in enumerate(choices)},
                answer=LETTERS[answer_id],
                categories={"question_type": str(row.get("question type", "")),
                            "category": str(row.get("category", ""))},
                extra={"reasoning": row.get("reasoning"), "split": row.get("split")},
            ))
        return items
