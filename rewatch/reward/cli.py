"""`rewatch reward score IN.jsonl --out OUT.jsonl`: the O&R reward over a file, resumable."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from rewatch.clikit import ConfigOpt, SetOpt, console, get_config, progress, setup_logging
from rewatch.reward.judges import RewardJudge, build_judge
from rewatch.reward.orr import ABLATIONS, RewardBreakdown, RewardWeights, score
from rewatch.schema import ErrorRecord
from rewatch.store import JsonlFile, stable_id

app = typer.Typer(help="The O&R reward (Observation & Reasoning) of ReWatch-R1.",
                  no_args_is_help=True)
REQUIRED = ("response", "answer")


def item_id(rec: dict[str, Any]) -> str:
    """A line's id: its own `id`, else a hash of what the reward reads."""
    if rec.get("id") is not None:
        return str(rec["id"])
    return stable_id(rec.get("response"), rec.get("answer"), rec.get("question"),
                     rec.get("caption"), rec.get("options"))


def _load(inp: Path, errors: JsonlFile) -> list[tuple[str, dict[str, Any]]]:
    items = []
    with open(inp, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError("a line must be a JSON object")
                missing = [k for k in REQUIRED if k not in rec]
                if missing:
                    raise ValueError(f"missing {missing}; each line needs response, answer, "
                                     "question and caption")
            except ValueError as e:  # json.JSONDecodeError is a ValueError
                if f"{inp.name}:{n}" in errors:
                    continue  # reported by an earlier run
                errors.append(ErrorRecord(stage="reward", id=f"{inp.name}:{n}",
                                          error=type(e).__name__, message=str(e)[:500],
                                          time=time.time()))
                continue
            items.append((item_id(rec), rec))
    return items


async def _run(todo: list[tuple[str, dict[str, Any]]], out: JsonlFile,
               judge: RewardJudge | None, weights: RewardWeights, concurrency: int,
               max_steps: int, max_chars: int) -> list[RewardBreakdown]:
    sem = asyncio.Semaphore(concurrency)
    done: list[RewardBreakdown] = []

    async def one(item_id_: str, rec: dict[str, Any]) -> tuple[str, RewardBreakdown]:
        async with sem:
            b = await score(rec.get("response"), answer=str(rec.get("answer")),  # type: ignore[arg-type]
                            caption=str(rec.get("caption") or ""),
                            question=str(rec.get("question") or ""), judge=judge,
                            options=rec.get("options"), weights=weights, max_steps=max_steps,
                            max_chars=max_chars)
            return item_id_, b

    with progress() as bar:
        task = bar.add_task("O&R reward", total=len(todo))
        for fut in asyncio.as_completed([one(i, r) for i, r in todo]):
            rid, b = await fut
            out.append({"id": rid, **b.to_dict()})  # each result is on disk before the next
            done.append(b)
            bar.advance(task)
    return done


def _mean(xs: list[float | None]) -> str:
    vals = [x for x in xs if x is not None]
    return f"{sum(vals) / len(vals):.3f} (n={len(vals)})" if vals else "n/a"


@app.command("score")
def score_cmd(
    inp: Annotated[Path, typer.Argument(help="JSONL: response, answer, question, caption "
                                              "[, options, id] per line", exists=True,
                                        dir_okay=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="JSONL of reward breakdowns; "
                                                           "ids already there are skipped")],
    judge: Annotated[str, typer.Option(help="none (acc and fmt only), embedded, config "
                                            "(models table), or an OpenAI-compatible URL")]
    = "none",
    weights: Annotated[str | None, typer.Option(help=f"a named row: {', '.join(ABLATIONS)}; "
                                                     "default: reward.w_* of the config")]
    = None,
    cache: Annotated[Path | None, typer.Option(help="judge reply cache (default: "
                                                    "reward_cache.sqlite beside --out)")] = None,
    concurrency: Annotated[int | None, typer.Option(help="samples scored at once")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Score every line of IN.jsonl with the O&R reward; rerun to resume."""
    setup_logging()
    cfg = get_config(config, set_)
    r = cfg.reward
    if weights is not None and weights not in ABLATIONS:
        console.print(f"[red]--weights must be one of {', '.join(ABLATIONS)}[/red]")
        raise typer.Exit(2)
    w = ABLATIONS[weights] if weights else RewardWeights.from_config(r)
    out_file = JsonlFile(out)
    errors = JsonlFile(out.parent / "errors.jsonl")
    items = _load(inp, errors)
    seen = out_file.ids()
    todo, dup = [], set()
    for i, rec in items:
        if i not in seen and i not in dup:
            todo.append((i, rec))
            dup.add(i)
    console.print(f"{len(items)} lines, {len(items) - len(todo)} already scored, "
                  f"{len(todo)} to score; judge: {judge}")
    rc = None
    if judge != "none" and cfg.cache:
        from rewatch.models.cache import ResponseCache

        rc = ResponseCache(cache or out.parent / "reward_cache.sqlite")
    try:
        rj = build_judge(cfg, judge, rc)
    except ValueError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    t0 = time.perf_counter()
    done = asyncio.run(_run(todo, out_file, rj, w, concurrency or r.concurrency, r.max_steps,
                            r.max_chars))
    dt = time.perf_counter() - t0
    failed = sum(b.failed for b in done)
    console.print(
        f"scored {len(done)} in {dt:.1f} s: overall {_mean([b.overall for b in done])}, "
        f"acc {_mean([b.acc for b in done])}, obs {_mean([b.obs for b in done])}, "
        f"rea {_mean([b.rea for b in done])}, fmt {_mean([b.fmt for b in done])}; "
        f"judge skipped {sum(b.judge_skipped for b in done)} "
        f"(calls saved {sum(b.judge_calls_saved for b in done)}), failed {failed}")
    if rj is not None:
        console.print(f"judge stats: {dict(rj.stats)}")
    if failed:
        console.print(f"[yellow]{failed} samples failed (judge errors): see 'error' in {out}"
                      "[/yellow]")


@app.command("parse")
def parse_cmd(text: Annotated[str, typer.Argument(help="a response (or @file)")]) -> None:
    """Show how a response parses: steps, answer, problems, r_fmt."""
    from rewatch.reward.parse import parse_response

    if text.startswith("@"):
        text = Path(text[1:]).read_text(encoding="utf-8")
    p = parse_response(text)
    console.print_json(json.dumps({
        "fmt": p.fmt, "answer": p.answer, "n_steps": p.n_steps, "problems": p.problems,
        "steps": [{"action": s.action, "observation": s.observation, "problem": s.problem}
                  for s in p.steps]}, ensure_ascii=False))
