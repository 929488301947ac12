"""CG-AV-Counting (1027 questions on 497 videos): integer counts; Acc (exact), OBOA (off by at
most one), MAE and RMSE, overall and per `type` (V, A, AV, A2V, V2A) and `category`.

File `cg-av-counting.json`: `index`, `video`, `question`, `answer` (integer), `type`,
`category`, `clue`, `query_interval`. Protocols (`eval.counting_protocol`): `long` (whole
video), `ref` (only the clip of `query_interval`), `clue` (the annotated clue is given in the
prompt). An unparseable reply is wrong for Acc and OBOA and is counted as "no answer"; MAE and
RMSE are over the parsed replies, with their number reported beside them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar

from rewatch.eval.benchmarks.base import (
    Benchmark,
    BenchmarkFormatError,
    BenchScore,
    EvalItem,
    Outcome,
    find_video,
    load_rows,
    need,
    pct,
    register,
    summarize,
)
from rewatch.eval.extract import extract_number, seconds


def parse_interval(raw: Any) -> tuple[float, float] | None:
    """`[12, 30]`, `"00:12-00:30"` or `{"start": .., "end": ..}` as (start, end) seconds."""
    if raw is None or raw == "" or raw == []:
        return None
    if isinstance(raw, dict):
        raw = [raw.get("start"), raw.get("end")]
    if isinstance(raw, str):
        parts = [p for p in raw.replace("–", "-").replace(",", "-").split("-") if p.strip()]
        raw = [seconds(p.strip().strip("[]() ")) for p in parts]
    if isinstance(raw, list | tuple) and len(raw) == 2 and all(v is not None for v in raw):
        a, b = float(raw[0]), float(raw[1])
        return (min(a, b), max(a, b))
    raise ValueError(f"cannot read an interval from {raw!r}")


def counting_metrics(outcomes: list[Outcome]) -> dict[str, float]:
    """Acc, OBOA (percent over all), MAE and RMSE over parsed replies, and how many parsed."""
    n = len(outcomes)
    errors = [o.error for o in outcomes if o.error is not None]
    return {
        "acc": pct(sum(o.correct for o in outcomes), n),
        "oboa": pct(sum(e <= 1 for e in errors), n),
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
    protocols: ClassVar[tuple[str, ...]] = ("long", "ref", "clue")

    def __init__(self, protocol: str = "long"):
        if protocol not in self.protocols:
            raise ValueError(f"counting protocol {protocol!r}; choose one of {self.protocols}")
        self.protocol = protocol

    def load(self, data: str | Path, videos: str | Path) -> list[EvalItem]:
        items = []
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
            if self.protocol == "ref":
                if interval is None:
                    raise BenchmarkFormatError(f"{where}: protocol 'ref' needs query_interval")
                extra["clip"] = interval
            if self.protocol == "clue":
                extra["clue"] = json.dumps(row.get("clue"), ensure_ascii=False)
            items.append(EvalItem(
                id=str(row.get("index", i)), bench=self.name,
                video=str(find_video(videos, str(need(row, "video", where)), row=where)),
                question=str(need(row, "question", where)), answer=str(answer), kind="count",
                categories={"type": str(row.get("type", "")),
                            "category": str(row.get("category", ""))},
                extra=extra,
            ))
        return items

    def score(self, items: list[EvalItem], replies: dict[str, str],
              judgments: dict[str, bool] | None = None) -> BenchScore:
        outcomes = []
        for it in items:
            reply = replies.get(it.id)
            if reply is None:
                outcomes.append(Outcome(it.id, False, "missing", None, it.categories))
                continue
            ex = extract_number(reply)
            if ex.value is None:
                outcomes.append(Outcome(it.id, False, "no_answer", None, it.categories))
                continue
            err = abs(int(ex.value) - int(it.answer))
            outcomes.append(Outcome(it.id, err == 0, "answered", ex.value, it.categories,
                                    error=float(err)))
        score = summarize(self.name, outcomes, self.breakdown_keys, metric="acc")
        score.metrics = counting_metrics(outcomes)
        for key in self.breakdown_keys:
            for value, row in score.breakdowns[key].items():
                sub = [o for o in outcomes if o.categories.get(key, "(none)") == value]
                row.update({k: v for k, v in counting_metrics(sub).items() if k != "n"})
        return score
