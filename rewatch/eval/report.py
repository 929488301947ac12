"""`rewatch eval report`: the paper's table (benchmarks as columns, Avg) with the official and
the strict score of every benchmark side by side, the guessed / unparsed / missing counts of
each mode, per-category tables, a bar chart, and optionally the paper's published rows,
labelled as published figures (they are official-harness numbers: the official columns).

Every string that came from a model or a file is escaped before it goes into HTML.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The paper's columns, in order: (benchmark name in our registry, column title).
COLUMNS = (("vcr-bench", "VCR-Bench"), ("minerva", "MINERVA"), ("video-holmes", "Video Holmes"),
           ("videomathqa", "VideoMathQA"), ("cg-av-counting", "CG-AV-Counting"))

# Table of the ReWatch-R1 paper (ICLR 2026): Qwen2.5-VL-7B backbone, 192 frames, thinking mode
# except the base row. Published figures, not measured here.
PUBLISHED: dict[str, tuple[float, float, float, float, float]] = {
    "Qwen2.5-VL-7B (Base, Direct)": (36.75, 33.19, 38.87, 24.76, 19.96),
    "Video-R1": (32.69, 32.36, 41.97, 25.95, 22.01),
    "GLM4.1V-9B": (34.53, 33.75, 38.98, 27.38, 21.32),
    "LongVideoReason-RL†": (35.30, 35.01, 43.49, 23.57, 20.55),
    "ReWatch-R1-SFT": (35.78, 35.43, 39.52, 30.00, 25.51),
    "ReWatch-R1": (40.14, 35.70, 43.00, 30.71, 24.73),
    "ReWatch-R1 + O&R": (40.43, 36.05, 43.88, 31.67, 25.51),
}
PUBLISHED_NOTE = ("published figures copied from the ReWatch-R1 paper (Qwen2.5-VL-7B, 192 frames, "
                  "thinking mode); not measured by this tool")


MODES = ("official", "strict")


@dataclass
class RunScores:
    """One run directory's scores.json, read back."""

    path: Path
    label: str
    bench: str
    score: dict[str, Any]  # the headline mode's
    meta: dict[str, Any]
    examples: list[dict[str, Any]] = field(default_factory=list)  # replies with no answer
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # every mode present


def row_label(meta: dict[str, Any]) -> str:
    """A run's row name: its label, else model (mode, inputs)."""
    if meta.get("label"):
        return str(meta["label"])
    return f"{meta.get('model', '?')} ({meta.get('mode', '?')}, {meta.get('inputs', '?')})"


def load_run(run_dir: str | Path, examples: int = 3) -> RunScores:
    """A run directory's scores.json and its first replies without an answer."""
    p = Path(run_dir)
    f = p / "scores.json"
    if not f.exists():
        raise FileNotFoundError(f"{f} not found: run `rewatch eval run` or `rewatch eval score` "
                                "on this directory first")
    data = json.loads(f.read_text())
    meta = data.get("meta", {})
    ex: list[dict[str, Any]] = []
    preds = p / "predictions.jsonl"
    if preds.exists() and examples:
        with open(preds, encoding="utf-8") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if rec.get("extracted") is None and rec.get("how") != "open":
                    ex.append({"id": rec.get("id"), "how": rec.get("how"),
                               "reply": str(rec.get("reply", ""))[:400]})
                    if len(ex) >= examples:
                        break
    score = data["score"]
    # runs scored before both modes existed hold one (strict) score
    scores = data.get("scores") or {score.get("mode", "strict"): score}
    return RunScores(p, row_label(meta), score["bench"], score, meta, ex, scores)


Row = tuple[str, list[float | None], bool]


def _value(r: RunScores, mode: str) -> float | None:
    s = r.scores.get(mode)
    return float(s["score"]) if s is not None else None


def table_rows(runs: list[RunScores], published: bool, mode: str = "official") -> list[Row]:
    """(label, five column values or None, is_published) rows of one mode; runs grouped by
    label. Published rows are official-harness figures: they fill the official mode only."""
    by_label: dict[str, dict[str, float | None]] = {}
    for r in runs:
        by_label.setdefault(r.label, {})[r.bench] = _value(r, mode)
    rows: list[tuple[str, list[float | None], bool]] = []
    if published:
        rows += [(f"{k} [published]", list(v) if mode == "official" else [None] * len(v), True)
                 for k, v in PUBLISHED.items()]
    for label, scores in by_label.items():
        rows.append((label, [scores.get(b) for b, _ in COLUMNS], False))
    return rows


def paired_rows(runs: list[RunScores], published: bool
                ) -> list[tuple[str, list[float | None], list[float | None], bool]]:
    """(label, official values, strict values, is_published) for the side-by-side table."""
    off = table_rows(runs, published, "official")
    strict = table_rows(runs, published, "strict")
    return [(a[0], a[1], b[1], a[2]) for a, b in zip(off, strict, strict=True)]


def average(values: list[float | None]) -> tuple[float | None, int]:
    """Mean of the values present, and how many there were."""
    got = [v for v in values if v is not None]
    return (sum(got) / len(got) if got else None), len(got)


def _fmt(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def _cell(g: dict[str, float], c: str) -> str:
    return str(int(g[c])) if c in ("n", "no_answer", "parsed") and c in g else _fmt(g.get(c))


def _avg_cell(values: list[float | None]) -> str:
    avg, n = average(values)
    return _fmt(avg) if n == len(COLUMNS) else (f"{_fmt(avg)}*" if avg is not None else "–")


def _head() -> list[str]:
    return [f"{t} {m}" for _, t in COLUMNS for m in ("official", "strict")] + [
        "Avg official", "Avg strict"]


def _cells(off: list[float | None], strict: list[float | None]) -> list[str]:
    return [c for a, b in zip(off, strict, strict=True) for c in (_fmt(a), _fmt(b))] + [
        _avg_cell(off), _avg_cell(strict)]


def markdown(runs: list[RunScores], published: bool = True) -> str:
    """The whole report as markdown: official and strict scores side by side."""
    lines = ["# Evaluation report", "", "| Model | " + " | ".join(_head()) + " |",
             "|" + "---|" * (len(_head()) + 1)]
    for label, off, strict, _pub in paired_rows(runs, published):
        lines.append(f"| {label} | " + " | ".join(_cells(off, strict)) + " |")
    lines += ["", "Scores in percent (CG-AV-Counting: exact-match Acc; VideoMathQA: mcq). "
              "official: each benchmark's own extraction and metric code reproduced, quirks and "
              "random fallbacks included (seeded); strict: never guesses, a reply without an "
              "answer is wrong and counted. Avg* = mean over the benchmarks present."]
    if published:
        lines.append(f"Rows marked [published] are {PUBLISHED_NOTE}; they are official-harness "
                     "figures, so only their official columns are filled.")
    for r in runs:
        lines += ["", f"## {r.label} — {r.bench}", ""]
        lines += [f"- {_counts_line(s)}" for _m, s in _modes(r)]
        if r.score.get("metrics"):
            lines += [_metrics_line(m, s) for m, s in _modes(r) if s.get("metrics")]
        for key, groups in r.score.get("breakdowns", {}).items():
            cols = sorted({c for g in groups.values() for c in g})
            lines += ["", f"| {key} | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
            for value, g in groups.items():
                lines.append(f"| {value} | " + " | ".join(_cell(g, c) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _modes(r: RunScores) -> list[tuple[str, dict[str, Any]]]:
    return [(m, r.scores[m]) for m in MODES if m in r.scores]


def _metrics_line(mode: str, s: dict[str, Any]) -> str:
    """A mode's further metrics (OBOA, MAE, pairs, the official CoT / step scores, ...)."""
    return f"Metrics ({mode}): " + ", ".join(f"{k} {_fmt(v)}" for k, v in s["metrics"].items())


def _counts_line(s: dict[str, Any]) -> str:
    mode = s.get("mode", "strict")
    extra = ""
    if mode == "official":
        extra += f", {s.get('guessed', 0)} guessed"
        if s.get("seed") is not None:
            extra += f" (seed {s['seed']})"
    if s.get("unjudged"):
        extra += f", {s['unjudged']} unjudged"
    if s.get("needs_judge"):
        extra += f", {s['needs_judge']} need the judge (official LLM step not run)"
    return (f"{mode}: {s['metric']} **{s['score']:.2f}** over {s['n']} "
            f"({s['correct']} correct, {s['no_answer']} no answer (unparsed), "
            f"{s['missing']} missing{extra})")


def bar_chart(runs: list[RunScores], path: str | Path, published: bool = True) -> Path:
    """Grouped bars: one group per benchmark, one bar per row of the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table_rows(runs, published)
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=100)
    width = 0.8 / max(1, len(rows))
    for i, (label, vals, pub) in enumerate(rows):
        xs = [j + i * width for j, v in enumerate(vals) if v is not None]  # absent: no bar
        ys = [v for v in vals if v is not None]
        bars = ax.bar(xs, ys, width, label=label, hatch="//" if pub else None,
                      alpha=0.5 if pub else 0.95)
        if not pub:  # measured values are written on their bars (a 0 is otherwise invisible)
            ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(COLUMNS))])
    ax.set_xticklabels([t for _, t in COLUMNS])
    ax.set_ylabel("score (%)")
    ax.set_title("ReWatch-R1 benchmarks, official extraction"
                 + (" (hatched: published in the paper, not measured here)" if published else ""))
    ax.legend(fontsize=7, ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out


def html_report(runs: list[RunScores], chart: str | None, published: bool = True) -> str:
    """A self-contained HTML page; every run-derived string is escaped."""
    e = html.escape
    th = "".join(f"<th colspan=2>{e(t)}</th>" for _, t in COLUMNS)
    sub = "".join("<th>official</th><th>strict</th>" for _ in (*COLUMNS, "avg"))
    body = [f"<table><tr><th rowspan=2>Model</th>{th}<th colspan=2>Avg</th></tr><tr>{sub}</tr>"]
    for label, off, strict, pub in paired_rows(runs, published):
        cls = ' class="published"' if pub else ""
        body.append(f"<tr{cls}><td>{e(label)}</td>"
                    + "".join(f"<td>{e(c)}</td>" for c in _cells(off, strict)) + "</tr>")
    body.append("</table>")
    body.append("<p class=note>official: each benchmark's own extraction and metric code "
                "reproduced (random fallbacks seeded); strict: never guesses.</p>")
    if published:
        body.append(f"<p class=note>Rows marked [published] are {e(PUBLISHED_NOTE)}.</p>")
    if chart:
        body.append(f'<img alt="bar chart" src="{e(chart)}">')
    for r in runs:
        s = r.score
        body.append(f"<h2>{e(r.label)} — {e(r.bench)}</h2>" + "".join(
            f"<p>{e(_counts_line(x).replace('**', ''))}</p>" for _m, x in _modes(r)))
        body += [f"<p>{e(_metrics_line(m, x))}</p>" for m, x in _modes(r) if x.get("metrics")]
        for key, groups in s.get("breakdowns", {}).items():
            cols = sorted({c for g in groups.values() for c in g})
            body.append(f"<table><tr><th>{e(key)}</th>"
                        + "".join(f"<th>{e(c)}</th>" for c in cols) + "</tr>")
            for value, g in groups.items():
                body.append(f"<tr><td>{e(str(value))}</td>"
                            + "".join(f"<td>{e(_cell(g, c))}</td>" for c in cols) + "</tr>")
            body.append("</table>")
        if r.examples:
            body.append("<h3>Replies with no extractable answer (first few)</h3><ul>")
            body += [f"<li><code>{e(str(x['id']))}</code> ({e(str(x['how']))}): "
                     f"<pre>{e(x['reply'])}</pre></li>" for x in r.examples]
            body.append("</ul>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}.published{color:#777;"
             "font-style:italic}pre{white-space:pre-wrap;max-width:60em}")
    return ("<!doctype html><html><head><meta charset=utf-8>"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "img-src 'self'; style-src 'unsafe-inline'\">"
            f"<title>rewatch evaluation report</title><style>{style}</style></head><body>"
            "<h1>Evaluation report</h1>" + "\n".join(body) + "</body></html>\n")


def write_report(run_dirs: Sequence[str | Path], out: str | Path, published: bool = True
                 ) -> dict[str, Path]:
    """report.md, report.html and scores.png under `out`."""
    runs = [load_run(d) for d in run_dirs]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chart = bar_chart(runs, out / "scores.png", published)
    (out / "report.md").write_text(markdown(runs, published) + "\n![scores](scores.png)\n")
    (out / "report.html").write_text(html_report(runs, chart.name, published))
    return {"markdown": out / "report.md", "html": out / "report.html", "chart": chart}
