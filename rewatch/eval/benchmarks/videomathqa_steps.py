"""VideoMathQA's CoT step score: a 0-10 grade of each reasoning reply against the annotated
solution steps (`steps`), given by an LLM judge with the official prompt.

Written from lmms-eval `lmms_eval/tasks/videomathqa/cot_step_evaluation.py` at commit
d8fcb9c3 (the last commit touching it; line numbers are that file's):

- Prompt (`get_user_prompt`, lines 56-76, with `system_prompt` lines 11-51 and
  `response_format` line 53): one user message, `prompts/official_videomathqa_step.txt` byte
  for byte. The question and the answer letter as the annotation file has them; the options
  as an f-string prints the parquet cell, which pandas gives as a numpy array (`['(A) 1'
  '(B) 2' ...]`, no commas, wrapped at 75 characters); the steps through
  `json.dumps(steps, indent=2)` (a string column: a quoted JSON string, non-ASCII escaped);
  the model's raw reply. Qwen3-4B in thinking mode there, temperature 0.6, top_p 0.95,
  top_k 20, 32768 new tokens (line 173).
- Parsing (lines 129-144, `safe_parse_response` lines 79-88): the stripped judge output is
  cut at the *last* "SCORE_CARD: " (exact case, one space; the whole output when absent);
  the rest must be one JSON value, else one Python literal (then round-tripped through
  JSON); it must be a dict whose `critique`, if present, is a string, and the score is
  Python's `int()` of its `score` (0 when absent). Anything else leaves the default score 0
  (the sample stays in the mean). No clamping to 0-10.
- Mean (lines 110-159): over the annotation rows in file order that have a result (others
  are skipped), in batches of 8 (line 193); only full batches are ever scored, so the last
  `n % 8` questions never enter the mean, and with fewer than 8 there is no mean (a division
  by zero there).
- Multi-binary (the same script given the `multi_binary` parquet and results): a row is one
  binary pair, and `matched` (line 115) is every result whose doc has the row's
  `question_id`, i.e. all the pairs of its question, in the results file's (doc) order;
  `prepare_input(sample, matched[0])` (lines 119, 91-99) takes the question, steps, options
  and answer from the pair row itself and the prediction from `matched[0]`. So every pair row
  is graded, each with its own two options and answer letter but all with the reply to the
  question's first answered pair, and the mean runs over pair rows (batches of 8 pairs).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Mapping
from typing import Any

from rewatch.eval.benchmarks.base import EvalItem, JudgeRequest, fill_placeholders

STEP = "videomathqa_step"
BATCH = 8  # compute_score(..., bs=8) in main(), line 193
TEMPERATURE = 0.6  # SamplingParams, line 173
MAX_TOKENS = 32768
_MARKER = "SCORE_CARD: "


def official_options_text(options: Iterable[Any]) -> str:
    """The options as upstream's f-string prints the parquet cell: a numpy object array."""
    import numpy as np  # a declared dependency; only this rule needs it

    with np.printoptions(linewidth=75, threshold=1000, edgeitems=3):
        return str(np.array(list(options), dtype=object))


def official_step_prompt(item: EvalItem, reply: str) -> str:
    """The official grading prompt for one reply (get_user_prompt, lines 56-76)."""
    from rewatch.eval.inputs import load_prompt

    return fill_placeholders(
        load_prompt("official_videomathqa_step", strip=False),
        question=str(item.question),
        options=official_options_text(item.extra.get("options_raw") or []),
        gt_steps=json.dumps(item.extra.get("steps"), indent=2),
        gt_answer=str(item.extra.get("answer_raw", item.answer)), prediction=reply)


def step_request(item: EvalItem, reply: str, reply_id: str | None = None) -> JudgeRequest:
    """The judge call that grades one reply's steps for one row, with upstream's sampling
    settings; `reply_id` names the item the reply belongs to when it is not `item`."""
    return JudgeRequest(STEP, item.id, official_step_prompt(item, reply), reply,
                        temperature=TEMPERATURE, max_tokens=MAX_TOKENS, reply_id=reply_id)


def step_rows(items: list[EvalItem], replies: Mapping[str, str]) -> list[tuple[EvalItem, str]]:
    """The rows upstream grades, in file order, each with the id of the reply it is graded
    with: the first reply among the rows of its `question_id` (`matched[0]`, lines 115-119).
    An mcq row is its own question; a multi-binary pair row gets its question's first
    answered pair. A question without any reply is skipped (lines 116-118)."""
    first: dict[str, str] = {}
    for it in items:
        if it.id in replies:
            first.setdefault(it.group or it.id, it.id)
    return [(it, first[it.group or it.id]) for it in items if (it.group or it.id) in first]


def step_key(item: EvalItem, reply_id: str) -> str:
    """The judgments key of one row's grade (as JudgeRequest.key names it)."""
    return JudgeRequest(STEP, item.id, "", "", reply_id=reply_id).key


def step_requests(items: list[EvalItem], replies: Mapping[str, str],
                  judgments: Mapping[str, str]) -> list[JudgeRequest]:
    """The grading calls of every row not yet graded with the reply upstream gives it."""
    return [step_request(it, replies[rid], rid) for it, rid in step_rows(items, replies)
            if step_key(it, rid) not in judgments]


def _parse_reply(text: str) -> Any:
    """safe_parse_response (lines 79-88): JSON, else a Python literal taken through JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return json.loads(json.dumps(ast.literal_eval(text)))
    except Exception:  # upstream prints the error and returns None
        return None


def official_step_score(output: str) -> tuple[int, bool]:
    """(score, parsed) from one judge output by lines 129-144; (0, False) where upstream keeps
    its default score card."""
    try:
        result = _parse_reply(output.strip().split(_MARKER)[-1])
        if result is None:
            return 0, False
        # the dict literal of line 136, evaluated in its order: any error keeps the default
        result.get("matched_steps", "")
        result.get("final_answer_correct", 0)
        result.get("critique", "").strip()
        return int(result.get("score", 0)), True
    except Exception:  # e.g. a list or number instead of a dict, critique null, score "7.5"
        return 0, False


def official_step_metrics(items: list[EvalItem], replies: Mapping[str, str],
                          judgments: Mapping[str, str]) -> dict[str, float]:
    """`cot_step_score`: upstream's mean over the full batches of 8 rows (absent when there
    is none); `cot_step_score_all`: the mean over every graded row; and the counts (rows:
    questions for mcq, binary pairs for multi-binary)."""
    replied = step_rows(items, replies)
    scores: dict[str, int] = {}
    unparsed = 0
    for it, rid in replied:
        out = judgments.get(step_key(it, rid))
        if out is not None:
            score, parsed = official_step_score(out)
            scores[it.id] = score
            unparsed += not parsed
    batched = [it.id for it, _ in replied[: len(replied) - len(replied) % BATCH]]
    in_mean = [scores[i] for i in batched if i in scores]
    metrics = {"cot_step_judged": float(len(scores)), "cot_step_unparsed": float(unparsed),
               "cot_step_unjudged": float(len(replied) - len(scores)),
               "cot_step_in_mean": float(len(in_mean))}
    if in_mean:
        metrics["cot_step_score"] = sum(in_mean) / len(in_mean)
    if scores:
        metrics["cot_step_score_all"] = sum(scores.values()) / len(scores)
    return metrics
