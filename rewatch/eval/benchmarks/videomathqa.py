"""VideoMathQA (420 questions): `mcq` (5-way, accuracy) and `multi_binary` (a question scores
only if every binary pair of the correct option against a distractor is answered right).

Rows: `videoID`, `question_id`, `category`, `question`, `options` (list of five, often written
"(A) ..."), `answer` (letter), `steps`, `length` (short, medium, long). A multi-binary file whose
rows have two options is used as is, grouped by `question_id`; five-option rows are expanded
into the four pairs here (the correct option alternates between A and B so that a model that
always says "A" cannot pass).

Official extraction (lmms-eval `lmms_eval/tasks/videomathqa/utils.py` at commit c7eaef37,
`extract_characters_regex` lines 200-219): remove a few case-sensitive prefixes (two of them
fused by missing commas in the list: "The best option isThe correct option is", "Best
answer:Best option:"), then give no answer if more than ten words remain without a capital A-E,
else the *first* capital A-E anywhere ("Answer: E" reads as A). Multi-binary: a question counts
only if every pair is right (`videomathqa_multi_binary_aggregate_results`, lines 299-347).
In think mode the official CoT tasks add `cot_postprocess.py` (commit d8fcb9c3, lines 17-86):
an LLM (Qwen3-4B there, `eval.judge` here; temperature 0.7, 16 tokens) is given the options and
the reply with the official prompt, and when its output is not exactly one valid letter a random
*wrong* letter is substituted; the letter then goes through the rule above.
With `eval.cot_score` both tasks also get the official 0-10 step score (`cot_step_evaluation.py`,
see `videomathqa_steps`): of each reply for mcq, of each pair row, graded with its question's
first reply, for multi-binary.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

from rewatch.eval.benchmarks.base import (
    LETTERS,
    Benchmark,
    BenchmarkFormatError,
    BenchScore,
    EvalItem,
    JudgeRequest,
    Outcome,
    ScoreOptions,
    Status,
    choice_outcome,
    find_video,
    item_rng,
    letter_outcome,
    load_rows,
    missing_outcome,
    need,
    register,
    summarize,
)
from rewatch.eval.benchmarks.videomathqa_steps import official_step_metrics, step_requests

# utils.py lines 202-209, verbatim including the two fused entries (missing commas upstream)
_OFFICIAL_PREFIXES = ("The best answer is", "The correct answer is", "The answer is",
                      "The answer", "The best option isThe correct option is",
                      "Best answer:Best option:")


def official_letter(reply: str) -> tuple[str, str]:
    """(letter, rule) by lmms-eval's `extract_characters_regex`; ("", "none") for its ""."""
    s = reply.strip()
    for prefix in _OFFICIAL_PREFIXES:
        s = s.replace(prefix, "")
    first = re.search(r"[ABCDE]", s)
    if len(s.split()) > 10 and first is None:
        return "", "none"
    return (first.group(0), "official_first_capital") if first else ("", "none")


def official_cot_choice(judge_output: str, letters: str) -> str | None:
    """cot_postprocess.py lines 41-48: the judge's output, stripped and upper-cased, if it is
    exactly one of `letters` (A-E for mcq, A-B for multi-binary); else None."""
    reply = judge_output.strip().upper()
    return reply if len(reply) == 1 and reply in letters else None


def official_wrong_letter(seed: int, item_id: str, answer: str, letters: str) -> str:
    """cot_postprocess.py lines 67-75: a random letter other than the answer (there: remove
    the answer, shuffle, take the first), from a generator seeded by run seed and item id."""
    rest = [c for c in letters if c != answer]
    item_rng(seed, item_id).shuffle(rest)
    return rest[0]


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
    download_files = ("mcq/test-*.parquet", "mcq/*.parquet", "mcq/*.json", "mcq/*.jsonl",
                      "videomathqa_mcq.json")
    download_videos = ("videos",)
    download_hint = ("huggingface-cli download MBZUAI/VideoMathQA --repo-type dataset "
                     "--local-dir VideoMathQA")
    # prompt_style=official: lmms-eval videomathqa_doc_to_text (utils.py lines 113-124) with
    # the post_prompts of videomathqa_mcq(.cot).yaml
    official_prompts: ClassVar[dict[str, str]] = {
        "direct": "official_videomathqa_direct", "think": "official_videomathqa_think"}

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
                extra={"steps": row.get("steps"), "answer_raw": row.get("answer"),
                       "options_raw": [
                    str(o) for o in (row["options"] if isinstance(row["options"], list)
                                     else [f"({k}) {v}" for k, v in options.items()])]},
            )))
        return out

    def official_outcome(self, item: EvalItem, reply: str | None, opts: ScoreOptions
                         ) -> Outcome:
        """lmms-eval's rule; in think mode on the letter the CoT judge step chose (a random
        wrong letter when it chose none); without a judge on the raw reply, flagged."""
        if reply is None:
            return missing_outcome(item)
        if not opts.think:
            letter, how = official_letter(reply)
            return letter_outcome(item, letter, how)
        letters = "AB" if len(item.options) == 2 else "ABCDE"
        out = opts.judged("videomathqa_cot", item.id)
        if out is None:  # the lmms-eval CoT task's own score, before cot_postprocess
            letter, how = official_letter(reply)
            return letter_outcome(item, letter, f"{how}_no_judge", needs_judge=True)
        choice = official_cot_choice(out, letters)
        if choice is None:
            wrong = official_wrong_letter(opts.seed, item.id, item.answer, letters)
            letter, _ = official_letter(wrong)
            return letter_outcome(item, letter, "official_cot_random_wrong", guessed=True)
        letter, _ = official_letter(choice)
        return letter_outcome(item, letter, "official_cot_judge")

    def judge_requests(self, items: list[EvalItem], replies: dict[str, str],
                       opts: ScoreOptions) -> list[JudgeRequest]:
        """Official: in think mode cot_postprocess.py's extraction step for every reply; with
        `cot_score` the step grading of cot_step_evaluation.py."""
        from rewatch.eval.inputs import load_prompt

        if opts.mode != "official":
            return []
        out = step_requests(items, replies, opts.judgments) if opts.cot_score else []
        if not opts.think:
            return out
        for it in items:
            reply = replies.get(it.id)
            if reply is None or opts.judged("videomathqa_cot", it.id) is not None:
                continue
            name = "official_videomathqa_cot_" + ("mbin" if len(it.options) == 2 else "mcq")
            # the options as Python prints the dataset's list (cot_postprocess.py line 62)
            options = repr(list(it.extra.get("options_raw") or []))
            prompt = load_prompt(name, strip=False).replace("{options}", options, 1)
            prompt = prompt.replace("{response}", reply, 1)
            out.append(JudgeRequest("videomathqa_cot", it.id, prompt, reply, temperature=0.7,
                                    max_tokens=16))
        return out


@register
class VideoMathQA(_VideoMathQABase):
    name = "videomathqa"
    aliases = ("videomathqa-mcq", "videomathqa_mcq", "VideoMathQA")

    def load(self, data: str | Path, videos: str | Path) -> list[EvalItem]:
        """The mcq config's rows as five-option items."""
        return [item for _row, item in self._rows(data, videos)]

    def score(self, items: list[EvalItem], replies: dict[str, str],
              opts: ScoreOptions | None = None) -> BenchScore:
        """Accuracy; with `cot_score` in official mode also the official step score (0-10)."""
        opts = opts or ScoreOptions()
        score = super().score(items, replies, opts)
        if opts.mode == "official" and opts.cot_score:
            score.metrics.update(official_step_metrics(items, replies, opts.judgments))
        return score


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
            "extra": {**item.extra, "answer_raw": "A" if correct_first else "B",
                      "options_raw": [f"(A) {item.options[a]}", f"(B) {item.options[b]}"]},
        }))
    return pairs


@register
class VideoMathQAMultiBinary(_VideoMathQABase):
    name = "videomathqa-mbin"
    title = "VideoMathQA (MBin)"
    aliases = ("videomathqa_mbin", "videomathqa-multi-binary", "videomathqa_multi_binary",
               "multi_binary")
    default_file = "videomathqa_mbin.json"
    download_files = ("multi_binary/test-*.parquet", "multi_binary/*.parquet",
                      "multi_binary/*.json", "multi_binary/*.jsonl", "videomathqa_mbin.json")
    official_prompts: ClassVar[dict[str, str]] = {
        "direct": "official_videomathqa_mbin_direct", "think": "official_videomathqa_mbin_think"}

    def load(self, data: str | Path, videos: str | Path) -> list[EvalItem]:
        """Binary pairs grouped by question: the multi_binary config as is, or mcq rows
        expanded."""
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
              opts: ScoreOptions | None = None) -> BenchScore:
        """A question counts only if all of its pairs are right; any pair without a reply makes
        the question missing, any pair without an answer makes it "no answer"."""
        opts = opts or ScoreOptions()
        groups: dict[str, list[Outcome]] = {}
        for it in items:
            reply = replies.get(it.id)
            o = (self.official_outcome(it, reply, opts) if opts.mode == "official"
                 else choice_outcome(it, reply))
            groups.setdefault(it.group or it.id, []).append(o)
        outcomes = []
        for gid, outs in groups.items():
            status: Status = (
                "missing" if any(o.status == "missing" for o in outs) else
                "no_answer" if any(o.status == "no_answer" for o in outs) else "answered")
            outcomes.append(Outcome(gid, all(o.correct for o in outs), status,
                                    "".join(o.predicted or "-" for o in outs), outs[0].categories,
                                    how="all_pairs", guessed=any(o.guessed for o in outs),
                                    needs_judge=any(o.needs_judge for o in outs)))
        score = summarize(self.name, outcomes, self.breakdown_keys, metric="mbin accuracy",
                          opts=opts)
        pairs = [o for outs in groups.values() for o in outs]
        score.outcomes = pairs  # per pair, for scored.jsonl (each names its group)
        score.guessed = sum(o.guessed for o in pairs)
        score.metrics["pairs"] = float(len(items))
        score.metrics["pair_accuracy"] = 100.0 * sum(o.correct for o in pairs) / max(1, len(items))
        if opts.mode == "official" and opts.cot_score:  # per pair row, as upstream grades them
            score.metrics.update(official_step_metrics(items, replies, opts.judgments))
        return score
