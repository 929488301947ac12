"""`rewatch eval` sub-commands: list, run, score, report."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from rewatch.clikit import ConfigOpt, SetOpt, console, get_config, progress

app = typer.Typer(
    help="Evaluate a model on the paper's five benchmarks (official formats and scoring).\n\n"
    "Example: rewatch eval run --bench minerva --data minerva.json --videos videos/ "
    "--model http://127.0.0.1:8000/v1 --mode think --out runs/eval/minerva",
    no_args_is_help=True,
)

BenchOpt = Annotated[str, typer.Option("--bench", "-b", help="Benchmark name (rewatch eval list).")]
DataOpt = Annotated[Path, typer.Option("--data", "-d", help="The benchmark's official file.")]


def _items(bench_name: str, data: Path, videos: Path | None, protocol: str):  # type: ignore[no-untyped-def]
    from rewatch.eval.benchmarks import BenchmarkFormatError, get_benchmark

    try:
        bench = get_benchmark(bench_name, protocol=protocol)
        items = bench.load(data, videos or data.parent)
    except (KeyError, ValueError, BenchmarkFormatError) as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        console.print(f"[red]{data}: item ids are not unique[/red]")
        raise typer.Exit(2)
    return bench, items


@app.command("list")
def list_cmd() -> None:
    """List the benchmarks, their official file names and breakdowns.

    Example: rewatch eval list
    """
    from rewatch.eval.benchmarks import REGISTRY, get_benchmark, names

    for n in names():
        b = get_benchmark(n)
        aliases = sorted(k for k, c in REGISTRY.items() if c is type(b) and k != n)
        typer.echo(f"{n:18} file: {b.default_file:26} breakdowns: {', '.join(b.breakdown_keys)}"
                   f"   aliases: {', '.join(aliases)}")


def _model_entry(cfg, model: str, served: str | None) -> str:  # type: ignore[no-untyped-def]
    """Put --model into the config's model table; returns its name there."""
    from rewatch.config import ModelSpec

    if model == "embedded":
        cfg.models["eval_model"] = ModelSpec.model_validate(
            {"backend": "embedded", "max_tokens": cfg.eval.max_tokens})
        return "eval_model"
    if model.startswith(("http://", "https://")):
        name = served or _served_model(model)
        cfg.models["eval_model"] = ModelSpec.model_validate(
            {"backend": "openai", "base_url": model, "model": name,
             "concurrency": cfg.eval.concurrency, "max_tokens": cfg.eval.max_tokens})
        return "eval_model"
    if model not in cfg.models:
        console.print(f"[red]--model {model!r}: not 'embedded', a URL, or a name in models "
                      f"({sorted(cfg.models)})[/red]")
        raise typer.Exit(2)
    return model


def _served_model(base_url: str) -> str:
    """The first model a server lists at /models (vLLM serves one)."""
    import httpx

    try:
        r = httpx.get(base_url.rstrip("/") + "/models", timeout=10)
        r.raise_for_status()
        return str(r.json()["data"][0]["id"])
    except Exception as e:
        console.print(f"[red]could not list models at {base_url} ({e}); pass --served-model[/red]")
        raise typer.Exit(2) from None


@app.command("run")
def run_cmd(
    bench: BenchOpt,
    data: DataOpt,
    videos: Annotated[Path, typer.Option("--videos", "-v", help="Folder holding the videos.")],
    model: Annotated[str, typer.Option(help="'embedded', a server URL (…/v1), or a name in "
                                            "the config's models table.")] = "embedded",
    served_model: Annotated[str | None, typer.Option(help="Model name on the server (default: "
                                                          "the first it lists).")] = None,
    mode: Annotated[str | None, typer.Option(help="direct | think (eval.mode).")] = None,
    inputs: Annotated[str | None, typer.Option(help="frames | video_url | text_proxy "
                                                    "(eval.inputs).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/eval/"
                                                  "<bench>-<mode>-<inputs>).")] = None,
    captions: Annotated[Path | None, typer.Option(help="text_proxy: Stage 1 captions.jsonl of "
                                                       "the videos (else they are captioned "
                                                       "into the run directory).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N questions.")] = None,
    label: Annotated[str | None, typer.Option(help="Row name in reports.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Ask a model every question of a benchmark; resumable; then score.

    Example: rewatch eval run --bench video-holmes --data test_Video-Holmes.json
    --videos Benchmark/videos --model http://127.0.0.1:8000/v1 --mode think --inputs video_url
    """
    from rewatch.eval.run import EvalRunner, RunMismatch
    from rewatch.models.cache import ResponseCache
    from rewatch.models.registry import Models

    overrides = list(set_ or [])
    overrides += [f"eval.mode={mode}"] if mode else []
    overrides += [f"eval.inputs={inputs}"] if inputs else []
    cfg = get_config(config, overrides)
    cfg.video.root = str(videos.expanduser().resolve())
    cfg.eval.model = _model_entry(cfg, model, served_model)
    b, items = _items(bench, data, videos, cfg.eval.counting_protocol)
    items = items[:limit] if limit else items
    out = out or Path("runs/eval") / f"{b.name}-{cfg.eval.mode}-{cfg.eval.inputs}"
    out.mkdir(parents=True, exist_ok=True)
    models = Models(cfg, ResponseCache(out / "cache.sqlite") if cfg.cache else None)

    async def go():  # type: ignore[no-untyped-def]
        caps = None
        if cfg.eval.inputs == "text_proxy":
            caps = await _captions(captions, items, cfg, out, models)
        judge = models[cfg.eval.judge] if cfg.eval.judge else None
        with progress() as bar:
            task = bar.add_task(f"{b.name} {cfg.eval.mode}", total=len(items))
            runner = EvalRunner(b, cfg, out, models[cfg.eval.model], videos_dir=videos,
                                judge=judge, captions=caps,
                                on_done=lambda: bar.advance(task))
            bar.advance(task, len(runner.preds.ids() & {it.id for it in items}))
            try:
                return await runner.run(items, {"label": label, "data": str(data),
                                                "videos": str(videos)})
            finally:
                await models.aclose()

    try:
        result = asyncio.run(go())
    except RunMismatch as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    s = result.score
    assert s is not None
    console.print(f"{b.name}: {s.metric} [bold]{s.score:.2f}[/bold] over {s.n} "
                  f"({s.correct} correct, {s.no_answer} no answer, {s.missing} missing"
                  f"{f', {s.unjudged} unjudged' if s.unjudged else ''}); this run: "
                  f"{result.answered} answered, {result.failed} failed (errors.jsonl), "
                  f"{result.calls} model calls, {result.cache_hits} cache hits, "
                  f"{result.wall_s:.1f} s -> {out}/scores.json")


async def _captions(path: Path | None, items, cfg, out: Path, models):  # type: ignore[no-untyped-def]
    from rewatch.eval.inputs import load_captions

    if path is not None:
        return load_captions(path)
    from rewatch.store import RunDir
    from rewatch.synth.caption import caption_videos

    videos = sorted({it.video for it in items})
    console.print(f"text_proxy: captioning {len(videos)} videos with Stage 1 "
                  f"({cfg.synth.caption.captioner}) into {out}/captions.jsonl")
    await caption_videos(videos, cfg, RunDir(out), models)
    return load_captions(out / "captions.jsonl")


@app.command("score")
def score_cmd(
    bench: BenchOpt,
    data: DataOpt,
    predictions: Annotated[Path, typer.Option(help="predictions.jsonl, or a run directory.")],
    videos: Annotated[Path | None, typer.Option(help="Videos folder (only to resolve paths; "
                                                     "default: the data file's folder).")] = None,
    protocol: Annotated[str, typer.Option(help="CG-AV-Counting protocol.")] = "long",
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as JSON.")] = False,
) -> None:
    """Rescore predictions by the official rules, without a model.

    Example: rewatch eval score --bench minerva --data minerva.json
    --predictions runs/eval/minerva-think-frames
    """
    from rewatch.eval.run import score_run, write_scores

    b, items = _items(bench, data, videos, protocol)
    run_dir = predictions if predictions.is_dir() else predictions.parent
    if not (run_dir / "predictions.jsonl").exists():
        console.print(f"[red]{run_dir}/predictions.jsonl not found[/red]")
        raise typer.Exit(2)
    s = score_run(b, items, run_dir)
    write_scores(run_dir, s, {"rescored": True})
    if as_json:
        typer.echo(json.dumps(s.to_dict(), indent=2, default=str))
    else:
        typer.echo(f"{b.name}: {s.metric} {s.score:.2f} over {s.n} ({s.correct} correct, "
                   f"{s.no_answer} no answer, {s.missing} missing)")
        for k, v in s.metrics.items():
            typer.echo(f"  {k}: {v:.3f}")


@app.command("report")
def report_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Run directories (each with scores.json).")],
    out: Annotated[Path, typer.Option(help="Folder for report.md/.html and scores.png.")] = Path(
        "runs/eval/report"),
    published: Annotated[bool, typer.Option(help="Include the paper's published rows, "
                                                  "labelled as such.")] = True,
) -> None:
    """Build the paper-layout table, per-category tables and a bar chart.

    Example: rewatch eval report runs/eval/* --out runs/eval/report
    """
    from rewatch.eval.report import write_report

    try:
        paths = write_report(runs, out, published)
    except FileNotFoundError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    for k, p in paths.items():
        typer.echo(f"{k}: {p}")
