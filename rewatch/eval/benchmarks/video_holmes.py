"""Video-Holmes (1837 questions on 270 short films): multiple choice A-F; accuracy overall and
per question type (SR, IMC, TCI, TA, MHR, PAR, CTI).

File `test_Video-Holmes.json`: `video ID`, `Question ID`, `Question Type`, `Question`, `Options`
({"A": ..., "F": ...}), `Answer`, `Explanation`. Videos are `<video ID>.mp4` under --videos.
Thinking mode uses the official prompt (`prompts/holmes_think.txt`, temperature 0.1).

Official extraction (`TencentARC/Video-Holmes` `evaluate.py` at commit a360ad63, lines 455-490):
the last `<answer>...</answer>` block, else the whole reply; then, letter by letter from A to F,
the first letter written as "X ", "X:" or "[X" anywhere in it; failing that the first of A..F
that occurs anywhere at all (so "Answer: C" reads as A); else no answer ("WRONG").
"""

from __future__ import annotations

import re
from pathlib import Path

from rewatch.eval.benchmarks.base import (
    Benchmark,
    BenchmarkFormatError,
    EvalItem,
    Outcome,
    ScoreOptions,
    find_video,
    letter_outcome,
    load_rows,
    missing_outcome,
    need,
    register,
)

QUESTION_TYPES = ("SR", "IMC", "TCI", "TA", "MHR", "PAR", "CTI")
OFFICIAL_LETTERS = "ABCDEF"  # evaluate.py lines 465-488 test these six, in this order
_ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)  # evaluate.py line 455


def official_letter(reply: str) -> tuple[str, str]:
    """(letter, rule) by Video-Holmes' evaluate.py; ("", "none") for its "WRONG"."""
    blocks = _ANSWER.findall(reply)
    text = blocks[-1].strip() if blocks else reply
    for letter in OFFICIAL_LETTERS:  # "A ", "A:", "[A" first, A before B ...
        if f"{letter} " in text or f"{letter}:" in text or f"[{letter}" in text:
            return letter, "official_prefixed"
    for letter in OFFICIAL_LETTERS:  # then any occurrence at all
        if letter in text:
            return letter, "official_any_capital"
    return "", "none"


@register
class VideoHolmes(Benchmark):
    name = "video-holmes"
    title = "Video Holmes"
    aliases = ("video_holmes", "holmes", "Video-Holmes")
    breakdown_keys = ("question_type",)
    default_file = "test_Video-Holmes.json"
    download_files = ("test_Video-Holmes.json", "*/test_Video-Holmes.json")
    download_videos = ("videos",)  # `unzip Benchmark/videos.zip -d Benchmark/`
    download_hint = ("huggingface-cli download TencentARC/Video-Holmes --repo-type dataset "
                     "--local-dir Benchmark")
    official_think_prompt = "holmes_think"
    official_temperature = 0.1

    def load(self, data: str | Path, videos: str | Path) -> list[EvalItem]:
        """test_Video-Holmes.json rows as six-option items."""
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

    def official_outcome(self, item: EvalItem, reply: str | None, opts: ScoreOptions
                         ) -> Outcome:
        """evaluate.py's rule (no random fallback: a reply without a letter is wrong)."""
        if reply is None:
            return missing_outcome(item)
        letter, how = official_letter(reply)
        return letter_outcome(item, letter, how)
