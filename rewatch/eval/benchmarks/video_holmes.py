"""Video-Holmes (1837 questions on 270 short films): multiple choice A-F; accuracy overall and
per question type (SR, IMC, TCI, TA, MHR, PAR, CTI).

File `test_Video-Holmes.json`: `video ID`, `Question ID`, `Question Type`, `Question`, `Options`
({"A": ..., "F": ...}), `Answer`, `Explanation`. Videos are `<video ID>.mp4` under --videos.
Thinking mode uses the official prompt (`prompts/holmes_think.txt`, temperature 0.1).
"""

from __future__ import annotations

from pathlib import Path

from rewatch.eval.benchmarks.base import (
    Benchmark,
    BenchmarkFormatError,
    EvalItem,
    find_video,
    load_rows,
    need,
    register,
)

QUESTION_TYPES = ("SR", "IMC", "TCI", "TA", "MHR", "PAR", "CTI")


@register
class VideoHolmes(Benchmark):
    name = "video-holmes"
    title = "Video Holmes"
    aliases = ("video_holmes", "holmes", "Video-Holmes")
    breakdown_keys = ("question_type",)
    default_file = "test_Video-Holmes.json"
    official_think_prompt = "holmes_think"
    official_temperature = 0.1

    def load(self, data: str | Path, videos: str | Path) -> list[EvalItem]:
        items = []
        for i, row in enumerate(load_rows(data)):
            where = f"{data} row {i}"
            options = need(row, "Options", where)
            if not isinstance(options, dict) or not options:
                raise BenchmarkFormatError(f"{where}: Options must be an object {{'A': ...}}")
            answer = str(need(row, "Answer", where)).strip()
            if answer not in options:
                raise BenchmarkFormatError(f"{where}: Answer {answer!r} is not an option")
            vid = str(need(row, "video ID", where))
            qid = str(need(row, "Question ID", where))
            items.append(EvalItem(
                id=qid if qid.startswith(vid) else f"{vid}_{qid}", bench=self.name,
                video=str(find_video(videos, vid, row=where)),
                question=str(need(row, "Question", where)),
                options={str(k): str(v) for k, v in options.items()},
                answer=answer,
                categories={"question_type": str(row.get("Question Type", ""))},
                extra={"explanation": row.get("Explanation")},
            ))
        return items
