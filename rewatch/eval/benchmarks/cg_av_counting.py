"""CG-AV-Counting (1027 questions on 497 videos): integer counts; Acc (exact), OBOA (off by at
most one), MAE and RMSE, overall and per `type` (V, A, AV, A2V, V2A) and `category`.

File `cg-av-counting.json`: `index`, `video`, `question`, `answer` (integer), `type`,
`category`, `clue`, `query_interval`. Protocols (`eval.counting_protocol`): `long` (whole
video), `ref` (only the clip of `query_interval`: the release's own clip file from
`ref_videos/` when it is downloaded, else the whole video cut here), `clue` (the annotated clue
is given in the prompt). Strict: an unparseable reply is wrong for Acc and OBOA and is counted
as "no answer"; MAE and RMSE are over the parsed replies, with their number reported beside
them.

Official (lmms-eval `lmms_eval/tasks/cgav_counting/utils.py` at commit cb9d7f76, `_extract_number`
lines 214-227 and `_count_result` lines 230-248; the same metric rules as VLMEvalKit
`vlmeval/dataset/CGAVCounting/utils.py` at commit 401916c0, `post_process` lines 246-266): the
text after the last `</think>`, lower-cased, commas removed; the *first* number in it (sign and
decimals kept), else the *sum* of the number words in it ("one or two" is 3), else 0. Acc is
|err| <= 1e-5, OBOA |err| <= 1; for MAE and RMSE an error larger than max(2*gt, 100) is replaced
by 2*gt, and every question counts (a reply without a number is a prediction of 0).
VLMEvalKit differs in extraction only: `word2number.w2n.word_to_num` on the whole reply (so
"7." or "There are 7" is 0); and its `cg_av_counting.py` at 401916c0 (line 14) imports
CG-Bench's `post_process` instead (a lint commit; 9cc14cd0 still had `from .utils import *`),
which takes no `category` and cannot score. lmms-eval is the rule followed here.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, ClassVar

from rewatch.eval.benchmarks.base import (
    Benchmark,
    BenchmarkFormatError,
    BenchScore,
    EvalItem,
    Outcome,
    ScoreOptions,
    Status,
    find_video,
    load_rows,
    need,
    pct,
    register,
    safe_video_path,
    summarize,
)
from rewatch.eval.extract import extract_number
from rewatch.text import clock_seconds


def parse_interval(raw: Any) -> tuple[float, float] | None:
    """`[12, 30]`, `"00:12-00:30"` or `{"start": .., "end": ..}` as (start, end) seconds."""
    if raw is None or raw == "" or raw == []:
        return None
    if isinstance(raw, dict):
        raw = [raw.get("start"), raw.get("end")]
    if isinstance(raw, str):
        parts = [p for p in raw.replace("–", "-").replace(",", "-").split("-") if p.strip()]
        raw = [clock_seconds(p.strip().strip("[]() ")) for p in parts]
    if isinstance(raw, list | tuple) and len(raw) == 2 and all(v is not None for v in raw):
        a, b = float(raw[0]), float(raw[1])
        return (min(a, b), max(a, b))
    raise ValueError(f"cannot read an interval from {raw!r}")


# lmms-eval utils.py lines 22-51: the only number words it knows
_OFFICIAL_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen".split())}
_OFFICIAL_WORDS.update({w: 20 + 10 * i for i, w in enumerate(
    "twenty thirty forty fifty sixty seventy eighty ninety".split())})


def official_number(reply: str | None) -> tuple[float, str]:
    """(prediction, rule) by lmms-eval's `_extract_number`: 0.0 when it finds nothing."""
    if reply is None:
        return 0.0, "missing_is_0"
    text = str(reply).strip().lower().replace(",", "")
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[-1].strip()
    m = re.search(r"[-+]?\d+(?:\.\d+)?", text)
    if m:
        return float(m.group(0)), "official_first_number"
    words = [_OFFICIAL_WORDS[t] for t in re.findall(r"[a-z]+", text.replace("-", " "))
             if t in _OFFICIAL_WORDS]
    if not words:
        return 0.0, "official_no_number_is_0"
    return float(sum(words)), "official_number_words_sum"


def official_error(pred: float, gt: float) -> float:
    """The error that enters MAE/RMSE: |gt - pred|, replaced by |2*gt| when it is larger than
    max(2*gt, 100) (utils.py line 235)."""
    err = abs(gt - pred)
    return err if err <= max(2 * gt, 100) else abs(2 * gt)


def counting_metrics(outcomes: list[Outcome]) -> dict[str, float]:
    """Acc and OBOA (percent over all), MAE and RMSE over the outcomes that carry an error
    (strict: the parsed replies; official: all, clipped), and how many did."""
    n = len(outcomes)
    errors = [o.error for o in outcomes if o.error is not None]
    return {
        "acc": pct(sum(o.correct for o in outcomes), n),
        "oboa": pct(sum(o.within_one for o in outcomes), n),
        "mae": sum(errors) / len(errors) if errors else float("nan"),
        "rmse": math.sqrt(sum(e * e for e in errors) / len(errors)) if errors else float("nan"),
        "parsed": float(len(errors)),
        "n": float(n),
    }


@register
class CGAVCounting(Benchmark):
    name = "cg-av-counting"
    title = "CG-AV-Counting"
    aliases = ("cg_av_counting", "cgav", "CG-AV-Counting")
    breakdown_keys = ("type", "category")
    default_file = "cg-av-counting.json"
    download_files = ("cg-av-counting.json", "*/cg-av-counting.json")
    download_videos = ("cg_videos_720p", "videos")  # where the official unzip puts them
    download_hint = ("huggingface-cli download CG-Bench/CG-AV-Counting --repo-type dataset "
                     "--local-dir CG-AV-Counting (gated: accept the terms first)")
    protocols: ClassVar[tuple[str, ...]] = ("long", "ref", "clue")
    # prompt_style=official: lmms-eval cgav_doc_to_text_count (utils.py lines 173-177)
    official_prompts: ClassVar[dict[str, str]] = {"direct": "official_cgav_count",
                                                  "think": "official_cgav_count"}

    def __init__(self, protocol: str = "long"):
        if protocol not in self.protocols:
            raise ValueError(f"counting protocol {protocol!r}; choose one of {self.protocols}")
        self.protocol = protocol

    def load(self, data: str | Path, videos: str | Path) -> list[EvalItem]:
        """cg-av-counting.json rows as counting items of the chosen protocol."""
        items = []
        ref_dir = Path(videos).expanduser().resolve().parent / "ref_videos"
        ref_release = ref_dir.is_dir() or any(ref_dir.parent.glob("ref_videos.zip*"))
        for i, row in enumerate(load_rows(data)):
            where = f"{data} row {i}"
            try:
                answer = int(need(row, "answer", where))
            except (TypeError, ValueError):
                raise BenchmarkFormatError(f"{where}: answer must be an integer") from None
            extra: dict[str, Any] = {"protocol": self.protocol}
            try:
                interval = parse_interval(row.get("query_interval"))
            except (ValueError, TypeError) as e:
                raise BenchmarkFormatError(f"{where}: query_interval: {e}") from None
            video = find_video(videos, str(need(row, "video", where)), row=where)
            if self.protocol == "ref":
                if interval is None:
                    raise BenchmarkFormatError(f"{where}: protocol 'ref' needs query_interval")
                if ref_release:
                    # the release's own clip of query_interval (lmms-eval cgav_counting/utils.py
                    # `_reference_filename`, lines 120-122): `ref_videos/<stem>_<s>_<e>.mp4`
                    raw = row["query_interval"]
                    s0, e0 = (raw if isinstance(raw, list | tuple) and len(raw) == 2
                              else interval)
                    video = safe_video_path(ref_dir.parent, f"ref_videos/{video.stem}_"
                                            f"{float(s0):.2f}_{float(e0):.2f}.mp4", row=where)
                    extra["ref_clip_file"] = True
                else:  # no clips downloaded: cut the whole video to the interval here
                    extra["clip"] = interval
            if self.protocol == "clue":
                extra["clue"] = json.dumps(row.get("clue"), ensure_ascii=False)
            items.append(EvalItem(
                id=str(row.get("index", i)), bench=self.name, video=str(video),
                question=str(need(row, "question", where)), answer=str(answer), kind="count",
                categories={"type": str(row.get("type", "")),
                            "category": str(row.get("category", ""))},
                extra=extra,
            ))
        return items

    def official_outcome(self, item: EvalItem, reply: str | None, opts: ScoreOptions
                         ) -> Outcome:
        """lmms-eval's number (0 when none) and its clipped error for MAE/RMSE."""
        pred, how = official_number(reply)
        gt = float(item.answer)
        err = abs(gt - pred)
        status: Status = ("missing" if reply is None else
                  "no_answer" if how == "official_no_number_is_0" else "answered")
        return Outcome(item.id, err <= 1e-5, status, f"{pred:g}", item.categories,
                       error=official_error(pred, gt), how=how, within_one=err <= 1)

    def strict_outcome(self, item: EvalItem, reply: str | None) -> Outcome:
        """The shared strict number extraction; no number is "no answer" (no error)."""
        if reply is None:
            return Outcome(item.id, False, "missing", None, item.categories, how="missing")
        ex = extract_number(reply)
        if ex.value is None:
            return Outcome(item.id, False, "no_answer", None, item.categories, how=ex.how)
        err = abs(int(ex.value) - int(item.answer))
        return Outcome(item.id, err == 0, "answered", ex.value, item.categories,
                       error=float(err), how=ex.how, within_one=err <= 1)

    def score(self, items: list[EvalItem], replies: dict[str, str],
              opts: ScoreOptions | None = None) -> BenchScore:
        """Acc, OBOA, MAE and RMSE overall and per type and category."""
        opts = opts or ScoreOptions()
        outcomes = [self.official_outcome(it, replies.get(it.id), opts)
                    if opts.mode == "official" else self.strict_outcome(it, replies.get(it.id))
                    for it in items]
        score = summarize(self.name, outcomes, self.breakdown_keys, metric="acc", opts=opts)
        score.metrics = counting_metrics(outcomes)
        for key in self.breakdown_keys:
            for value, row in score.breakdowns[key].items():
                sub = [o for o in outcomes if o.categories.get(key, "(none)") == value]
                row.update({k: v for k, v in counting_metrics(sub).items() if k != "n"})
        return score
