"""MINERVA (1515 questions): 5-way multiple choice over long videos; accuracy.

File `minerva.json`: `key`, `video_id`, `question`, `answer`, `answer_choice_0..4`, `answer_id`,
`reasoning`, `question type` (lmms-eval's copy: `question_type`), `split`, `category`. Videos
are `<video_id>.mp4` (or .webm/.mkv/.mov) under --videos.

Official extraction (lmms-eval `lmms_eval/tasks/minerva/utils.py` at commit bec4e649,
`_extract_choice_letter` lines 51-73 and `minerva_process_results` lines 107-111): the last
"answer is X" / "option: X" (any case), else, after removing a few prefixes, the last capital
A-E anywhere in the reply; when there is none, a random letter. Google's own release
(`google-deepmind/neptune`) ships no scoring code, so lmms-eval is the reference.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from rewatch.eval.benchmarks.base import (
    LETTERS,
    Benchmark,
    BenchmarkFormatError,
    EvalItem,
    Outcome,
    ScoreOptions,
    find_video,
    item_rng,
    letter_outcome,
    load_rows,
    missing_outcome,
    need,
    register,
)

OFFICIAL_LETTERS = "ABCDE"  # lmms-eval's OPTIONS (utils.py line 9), whatever the item has
# lmms-eval utils.py line 54: "answer"/"option", then "is" or ":", then the letter (any case)
_EXPLICIT = re.compile(r"(?:answer|option)\s*(?:is|:)\s*([ABCDE])", re.IGNORECASE)
# lines 59-66, removed (case-sensitive, every occurrence) before the last-capital rule
_PREFIXES = ("The best answer is", "The correct answer is", "The answer is", "Answer:",
             "Option:", "Therefore, the final answer is:")


def official_letter(reply: str) -> tuple[str, str]:
    """(letter, rule) by lmms-eval's MINERVA rule; ("", "none") when it finds no letter."""
    text = str(reply).strip()
    explicit = list(_EXPLICIT.finditer(text))
    if explicit:
        return explicit[-1].group(1).upper(), "official_explicit"
    for prefix in _PREFIXES:
        text = text.replace(prefix, "")
    capitals = re.findall(r"[ABCDE]", text)
    return (capitals[-1], "official_last_capital") if capitals else ("", "none")


def official_fallback(seed: int, item_id: str) -> str:
    """The random letter lmms-eval picks when a reply has none (`random.choice(OPTIONS)`),
    drawn from a generator seeded by the run's seed and the item id."""
    return item_rng(seed, item_id).choice(OFFICIAL_LETTERS)


@register
class Minerva(Benchmark):
    name = "minerva"
    title = "MINERVA"
    aliases = ("MINERVA",)
    breakdown_keys = ("question_type", "category")
    default_file = "minerva.json"
    download_files = ("minerva.json", "*/minerva.json")
    download_videos = ("videos",)
    download_hint = ("huggingface-cli download lmms-lab-eval/minerva minerva.json --repo-type "
                     "dataset --local-dir minerva; the videos come from YouTube (video_id)")
    # prompt_style=official: lmms-eval minerva_doc_to_text (utils.py lines 90-100) with the
    # post_prompt of minerva.yaml
    official_prompts: ClassVar[dict[str, str]] = {"direct": "official_minerva_direct"}

    def load(self, data: str | Path, videos: str | Path) -> list[EvalItem]:
        """MINERVA rows as items; the per-type key is `question_type` or `question type`."""
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
            # lmms-eval's file says `question_type`; the original JSON `question type`
            qtype = row.get("question_type", row.get("question type"))
            items.append(EvalItem(
                id=str(row.get("key", i)), bench=self.name,
                video=str(find_video(videos, str(need(row, "video_id", where)), row=where,
                                     exts=(".mp4", ".webm", ".mkv", ".mov", ".MP4"))),
                question=str(need(row, "question", where)),
                options={LETTERS[k]: str(c) for k, c in enumerate(choices)},
                answer=LETTERS[answer_id],
                categories={"question_type": str(qtype if qtype is not None else ""),
                            "category": str(row.get("category", ""))},
                extra={"reasoning": row.get("reasoning"), "split": row.get("split")},
            ))
        return items

    def official_outcome(self, item: EvalItem, reply: str | None, opts: ScoreOptions
                         ) -> Outcome:
        """lmms-eval's rule; a reply without a letter gets the seeded random letter (a
        question never asked stays missing: the official harness always has a reply)."""
        if reply is None:
            return missing_outcome(item)
        letter, how = official_letter(reply)
        if letter:
            return letter_outcome(item, letter, how)
        return letter_outcome(item, official_fallback(opts.seed, item.id), "official_random",
                              guessed=True)
