"""VCR-Bench (1034 questions on 859 videos): multiple choice and open answers; accuracy per
`dimension` and per duration bucket (0-60 s, 60-300 s, 300+ s, as `eval_code/cau_acc.py`).

File `v1/videos/meta_info_video.json`: `id`, `video_path`, `duration`, `dimension`, `question`
(multiple-choice options are written inside it), `multiple-choice`, `choices`, `answer`,
`reasoning`.

Official scoring (`zhishuifeiqian/VCR-Bench` `eval_code/eval.py` at commit 4e564b77): an LLM
(GPT-4o there, `eval.judge` here) extracts the final answer with the official extraction prompt
(`extract_answer`, lines 159-163); then (`match_answer`, lines 165-198) a time interval scores
when the reference *and* the extracted answer both read as a Python list `[a, b]` of two numbers
and their temporal IoU is > 0.7; a box when both are `[x1, y1, x2, y2]` of integers and IoU > 0.5;
everything else, multiple choice included, is graded 1/0 by the LLM with the official scoring
prompt, and only an output of exactly "1" counts (`cau_acc.py` line 18).

Strict scoring: multiple choice by the shared strict letter extraction; a time span only when the
reference is `[a, b]` and the reply writes a bracketed `[start, end]`; a box likewise; other open
answers by the judge's 1/0 verdict (our judge prompt), "unjudged" and wrong without a judge.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any, ClassVar

from rewatch.eval.benchmarks.base import (
    Benchmark,
    BenchmarkFormatError,
    BenchScore,
    EvalItem,
    JudgeRequest,
    Outcome,
    ScoreOptions,
    choice_outcome,
    fill_placeholders,
    load_rows,
    missing_outcome,
    need,
    register,
    safe_video_path,
    summarize,
)
from rewatch.eval.extract import (
    answer_block,
    bracket_span,
    extract_box,
    final_text,
    iou_1d,
    iou_box,
)

TEMPORAL_IOU = 0.7
SPATIAL_IOU = 0.5
# cau_acc.py lines 27-33: duration <= 60, <= 300, else (a missing duration counts as 0)
BUCKETS = ((60.0, "0-60"), (300.0, "60-300"), (float("inf"), "300+"))


def duration_bucket(seconds: float | None) -> str:
    """The official duration bucket of a video (a missing duration is 0 s, as cau_acc.py)."""
    s = 0.0 if seconds is None else seconds
    return next(name for limit, name in BUCKETS if s <= limit)


def official_time_interval(text: Any) -> tuple[float, float] | None:
    """eval.py `is_valid_time_interval` (lines 60-69): a Python literal list of exactly two
    ints/floats, else None. Parsed with `ast.literal_eval`, which evaluates literals only."""
    if not isinstance(text, str) or len(text) > 10_000:
        return None
    try:
        value = ast.literal_eval(text)
    except Exception:  # ValueError/SyntaxError as upstream; deep nesting etc. is "not valid"
        return None
    if isinstance(value, list) and len(value) == 2 and all(
            isinstance(x, int | float) for x in value):
        return (float(value[0]), float(value[1]))
    return None


def official_box(text: Any) -> tuple[int, int, int, int] | None:
    """eval.py `is_valid_space_interval` + `string_to_list` (lines 71-88): "[" ... "]" holding
    exactly four comma-separated integers (Python's int(), spaces allowed), else None."""
    if not isinstance(text, str) or not (text.startswith("[") and text.endswith("]")):
        return None
    parts = text[1:-1].split(",")
    if len(parts) != 4:
        return None
    try:
        a, b, c, d = (int(p.strip()) for p in parts)
    except ValueError:
        return None
    return (a, b, c, d)


def official_time_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """eval.py `calculate_time_iou` (lines 42-58): no reordering of start/end; 0 for an empty
    union."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union != 0 else 0.0


def official_box_iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """eval.py `calculate_space_iou` (lines 121-143): corners taken as given; no overlap is 0;
    a zero union raised there and scored 0 (match_answer's except), so it is 0 here."""
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    if x2 < x1 or y2 < y1:
        return 0.0
    inter = (x2 - x1) * (y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union != 0 else 0.0


def official_rule_match(answer: Any, extracted: str) -> bool | None:
    """The rule steps of eval.py `match_answer`: True/False when both sides are time intervals
    or both boxes; None when the official code asks the LLM judge instead."""
    gt_t, pred_t = official_time_interval(answer), official_time_interval(extracted)
    if gt_t is not None and pred_t is not None:
        return official_time_iou(gt_t, pred_t) > TEMPORAL_IOU
    gt_b, pred_b = official_box(answer), official_box(extracted)
    if gt_b is not None and pred_b is not None:
        return official_box_iou(gt_b, pred_b) > SPATIAL_IOU
    return None


STEP_TYPES = ("Video Description Steps", "Logical Inference Steps", "Background Review Steps")


def official_step_stats(output: str, judgments: tuple[str, ...]
                        ) -> dict[str, dict[str, int]] | None:
    """eval.py `extract_json_between_backticks` + `calculate_recall`/`calculate_precision`
    (lines 91-118, 146-157): the JSON array in a ```json block, counted per step type and
    judgment; None where upstream raises (it then asks the judge again, without end)."""
    m = re.search(r"```json\n(.*?)```", output, re.DOTALL)
    if not m:
        return None
    try:
        steps = json.loads(m.group(1).strip())
        stats = {t: dict.fromkeys(judgments, 0) for t in STEP_TYPES}
        for step in steps:
            stats[step["step_type"]][step["judgment"]] += 1
    except (ValueError, KeyError, TypeError):
        return None
    return stats


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None  # upstream's "" for an empty denominator


def official_cot_item(recall_out: str | None, precision_out: str | None
                      ) -> dict[str, float | None]:
    """One item's recall and precision (eval.py lines 214-240 and 258-286): per step type and
    "overall" over video-description + logical-inference steps (background steps left out)."""
    out: dict[str, float | None] = {}
    r = official_step_stats(recall_out, ("Matched", "Unmatched")) if recall_out else None
    p = official_step_stats(precision_out, ("Matched", "Wrong", "Redundant")
                            ) if precision_out else None
    v, lg, bg = STEP_TYPES
    if r is not None:
        out["Video_recall"] = _ratio(r[v]["Matched"], r[v]["Matched"] + r[v]["Unmatched"])
        out["logic_recall"] = _ratio(r[lg]["Matched"], r[lg]["Matched"] + r[lg]["Unmatched"])
        out["overall_recall"] = _ratio(r[v]["Matched"] + r[lg]["Matched"], sum(
            r[t]["Matched"] + r[t]["Unmatched"] for t in (v, lg)))
    if p is not None:
        out["Video_precision"] = _ratio(p[v]["Matched"], p[v]["Matched"] + p[v]["Wrong"])
        out["logic_precision"] = _ratio(p[lg]["Matched"], p[lg]["Matched"] + p[lg]["Wrong"])
        matched = p[v]["Matched"] + p[lg]["Matched"]
        out["overall_precision"] = _ratio(matched, matched + p[v]["Wrong"] + p[lg]["Wrong"])
    return out


def official_cot_score(per_item: list[dict[str, float | None]]) -> dict[str, float]:
    """cau_total.py (commit 5821d784 or later, lines 9-40): for Video, logic and overall, the
    mean precision and mean recall over the items that have one, and their F1 (in percent)."""
    out: dict[str, float] = {}
    for metric in ("Video", "logic", "overall"):
        ps = [x for d in per_item if (x := d.get(f"{metric}_precision")) is not None]
        rs = [x for d in per_item if (x := d.get(f"{metric}_recall")) is not None]
        prec = sum(ps) / len(ps) if ps else 0.0
        rec = sum(rs) / len(rs) if rs else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
        out.update({f"cot_{metric}_precision": 100 * prec, f"cot_{metric}_recall": 100 * rec,
                    f"cot_{metric}_f1": 100 * f1})
    return out


def answer_type(answer: str) -> str:
    """'temporal' when the reference is a list `[a, b]` (the official test, so a score such as
    "2-1" is text, not a span), 'spatial' for a box, else 'text' (judged)."""
    if official_time_interval(answer) is not None:
        return "temporal"
    if official_box(answer) is not None or extract_box(answer) is not None:
        return "spatial"
    return "text"


def verdict_correct(text: str) -> bool:
    """Our 1/0 judge's verdict: a JSON object {"correct": true|false}, or a bare true/1."""
    m = re.search(r"\{.*\}", text, re.S)
    if m:
        try:
            return bool(json.loads(m.group(0)).get("correct"))
        except (ValueError, AttributeError):
            pass
    return text.strip().strip(".").lower() in ("1", "true", "yes", "correct")


@register
class VCRBench(Benchmark):
    name = "vcr-bench"
    title = "VCR-Bench"
    aliases = ("vcr_bench", "vcr", "VCR-Bench")
    breakdown_keys = ("dimension", "duration")
    default_file = "meta_info_video.json"
    download_files = ("v1/videos/meta_info_video.json", "meta_info_video.json",
                      "*/meta_info_video.json")
    download_videos = ("v1/videos", ".")  # video_path is relative to the meta file's folder
    download_hint = ("huggingface-cli download VLM-Reasoning/VCR-Bench --repo-type dataset "
                     "--local-dir VCR-Bench")
    thresholds: ClassVar[dict[str, float]] = {"temporal": TEMPORAL_IOU, "spatial": SPATIAL_IOU}
    judge_steps: ClassVar[tuple[str, ...]] = ("vcr_extract", "vcr_score", "open_judge")

    def load(self, data: str | Path, videos: str | Path) -> list[EvalItem]:
        """VCR-Bench rows as items (`video_path` resolved inside the videos folder)."""
        items = []
        for i, row in enumerate(load_rows(data)):
            where = f"{data} row {i}"
            mc = bool(row.get("multiple-choice"))
            dur = row.get("duration")
            duration = float(dur) if isinstance(dur, int | float) else None
            raw = need(row, "answer", where)
            answer = str(raw).strip()
            options: dict[str, str] = {}
            if mc:
                choices = need(row, "choices", where)
                if not isinstance(choices, dict) or answer not in choices:
                    raise BenchmarkFormatError(f"{where}: choices must be an object holding "
                                               f"the answer letter {answer!r}")
                options = {str(k): str(v) for k, v in choices.items() if str(v).strip()}
            items.append(EvalItem(
                id=str(row.get("id", i)), bench=self.name,
                video=str(safe_video_path(videos, str(need(row, "video_path", where)), row=where)),
                question=str(need(row, "question", where)), options=options, answer=answer,
                kind="mcq" if mc else "open", duration=duration,
                categories={"dimension": str(row.get("dimension", "")),
                            "duration": duration_bucket(duration)},
                extra={"options_in_question": mc, "answer_type": "choice" if mc
                       else answer_type(answer), "reasoning": row.get("reasoning"),
                       "answer_raw": raw if isinstance(raw, str) else str(raw)},
            ))
        return items

    # --- strict --------------------------------------------------------------------------
    def _strict(self, it: EvalItem, reply: str, opts: ScoreOptions) -> Outcome:
        if it.kind == "mcq":
            return choice_outcome(it, reply)
        kind = it.extra.get("answer_type", "text")
        if kind == "temporal":
            gt, pred = official_time_interval(it.answer), bracket_span(reply)
            if gt is None or pred is None:
                return Outcome(it.id, False, "no_answer", None, it.categories, how="no_span")
            return Outcome(it.id, iou_1d(pred, (min(gt), max(gt))) > TEMPORAL_IOU, "answered",
                           f"[{pred[0]:g}, {pred[1]:g}]", it.categories, how="span_iou")
        if kind == "spatial":
            gbox, pbox = extract_box(it.answer), extract_box(reply)
            if gbox is None or pbox is None:
                return Outcome(it.id, False, "no_answer", None, it.categories, how="no_box")
            return Outcome(it.id, iou_box(pbox, gbox) > SPATIAL_IOU, "answered",
                           "[" + ", ".join(f"{v:g}" for v in pbox) + "]", it.categories,
                           how="box_iou")
        verdict = opts.judged("open_judge", it.id)
        if verdict is None:
            return Outcome(it.id, False, "unjudged", None, it.categories, how="unjudged")
        return Outcome(it.id, verdict_correct(verdict), "answered", None, it.categories,
                       how="judge")

    # --- official ------------------------------------------------------------------------
    def _extracted(self, it: EvalItem, reply: str, opts: ScoreOptions) -> tuple[str, bool]:
        """The official LLM-extracted answer, or (without a judge) the strict rule's stand-in,
        flagged as not official."""
        out = opts.judged("vcr_extract", it.id)
        if out is not None:
            return out, False
        if it.kind == "mcq":
            return (choice_outcome(it, reply).predicted or "Z"), True
        span = bracket_span(reply)
        if span is not None:
            return f"[{span[0]:g}, {span[1]:g}]", True
        body = answer_block(reply)
        return (body if body is not None else final_text(reply)).strip(), True

    def official_outcome(self, item: EvalItem, reply: str | None, opts: ScoreOptions
                         ) -> Outcome:
        """eval.py's match_answer on the extracted answer; the LLM grade where it asks one."""
        cats = {**item.categories, "duration": duration_bucket(item.duration)}
        if reply is None:
            o = missing_outcome(item)
            o.categories = cats
            return o
        extracted, stand_in = self._extracted(item, reply, opts)
        rule = official_rule_match(item.extra.get("answer_raw", item.answer), extracted)
        if rule is not None:
            return Outcome(item.id, rule, "answered", extracted, cats, how="official_iou",
                           needs_judge=stand_in)
        grade = opts.judged("vcr_score", item.id)
        if grade is None or stand_in:
            return Outcome(item.id, False, "unjudged", extracted, cats, how="official_unjudged",
                           needs_judge=True)
        # cau_acc.py line 18 counts answer_scoring == '1' only (the raw judge output)
        return Outcome(item.id, grade == "1", "answered", extracted, cats, how="official_judge")

    def score(self, items: list[EvalItem], replies: dict[str, str],
              opts: ScoreOptions | None = None) -> BenchScore:
        """Accuracy overall, per dimension, per duration bucket and per answer type."""
        opts = opts or ScoreOptions()
        outcomes = []
        for it in items:
            reply = replies.get(it.id)
            if opts.mode == "official":
                o = self.official_outcome(it, reply, opts)
            else:
                o = missing_outcome(it) if reply is None else self._strict(it, reply, opts)
            o.categories = {**o.categories, "answer_type": it.extra.get("answer_type", "")}
            outcomes.append(o)
        score = summarize(self.name, outcomes, (*self.breakdown_keys, "answer_type"), opts=opts)
        if opts.mode == "official" and opts.cot_score:
            per_item = [official_cot_item(opts.judged("vcr_recall", it.id),
                                          opts.judged("vcr_precision", it.id))
                        for it in items if it.id in replies]
            score.metrics.update(official_cot_score(per_item))
            score.metrics["cot_judged"] = float(sum(
                "overall_recall" in d and "overall_precision" in d for d in per_item))
        return score

    def judge_requests(self, items: list[EvalItem], replies: dict[str, str],
                       opts: ScoreOptions) -> list[JudgeRequest]:
        """Official: the extraction step for every reply, then the 1/0 grade wherever the
        rules do not decide. Strict: our 1/0 judge for free-text answers."""
        from rewatch.eval.inputs import load_prompt

        out = []
        for it in items:
            reply = replies.get(it.id)
            if reply is None:
                continue
            if opts.mode == "strict":
                if (it.kind == "open" and it.extra.get("answer_type") == "text"
                        and opts.judged("open_judge", it.id) is None):
                    candidate = answer_block(reply) or final_text(reply)
                    out.append(JudgeRequest("open_judge", it.id, load_prompt("judge").format(
                        question=it.question, reference=it.answer,
                        candidate=candidate[-2000:]), reply, max_tokens=32))
                continue
            if opts.cot_score:  # the CoT score's two steps (eval.py recall/precision)
                fmt = {"question": it.question, "solution": reply,
                       "gt_annotation": it.extra.get("reasoning")}
                for step, answer in (("vcr_recall", it.extra.get("answer_raw", it.answer)),
                                     ("vcr_precision", None)):
                    if opts.judged(step, it.id) is None:
                        kw = {**fmt, "answer": answer} if answer is not None else fmt
                        # upstream calls .format on these two prompts (so {{ }} unescape)
                        out.append(JudgeRequest(step, it.id, load_prompt(
                            f"official_{step}", strip=False).format(**kw), reply))
            extracted = opts.judged("vcr_extract", it.id)
            if extracted is None:
                out.append(JudgeRequest("vcr_extract", it.id, fill_placeholders(
                    load_prompt("official_vcr_extract", strip=False), question=it.question,
                    response=reply), reply))
                continue
            if (official_rule_match(it.extra.get("answer_raw", it.answer), extracted) is None
                    and opts.judged("vcr_score", it.id) is None):
                out.append(JudgeRequest("vcr_score", it.id, fill_placeholders(
                    load_prompt("official_vcr_score", strip=False), question=it.question,
                    extract_answer=extracted, gt_answer=str(it.extra.get("answer_raw",
                                                                          it.answer))), reply))
        return out
