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

BENCH_HELP = ("Benchmark: vcr-bench (VCR-Bench), minerva (MINERVA), video-holmes (Video-Holmes), "
              "videomathqa / videomathqa-mbin (VideoMathQA mcq / multi-binary), cg-av-counting "
              "(CG-AV-Counting); aliases: rewatch eval list.")
BenchOpt = Annotated[str, typer.Option("--bench", "-b", help=BENCH_HELP)]
DataOpt = Annotated[Path, typer.Option("--data", "-d", help="The benchmark's official file, or "
                                                           "the folder of its download (a "
                                                           "Hugging Face snapshot).")]
ExtractionOpt = Annotated[str | None, typer.Option(
    "--extraction", help="official | strict (eval.extraction): the headline scores. official "
    "reproduces each benchmark's own extraction and metric rules (random fallbacks seeded by "
    "eval.seed); strict never guesses. Both are always computed and reported.")]


def _items(bench_name: str, data: Path, videos: Path | None, protocol: str):  # type: ignore[no-untyped-def]
    from rewatch.eval.benchmarks import BenchmarkFormatError, get_benchmark
    from rewatch.eval.downloads import resolve_download

    try:
        bench = get_benchmark(bench_name, protocol=protocol)
        data_file, videos_dir = resolve_download(bench, data, videos)
        items = bench.load(data_file, videos_dir)
    except (KeyError, ValueError, BenchmarkFormatError) as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        console.print(f"[red]{data}: item ids are not unique[/red]")
        raise typer.Exit(2)
    return bench, items, data_file, videos_dir


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
    videos: Annotated[Path | None, typer.Option(
        "--videos", "-v", help="Folder holding the videos (default: where the download keeps "
        "them, e.g. <snapshot>/videos).")] = None,
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
    limit: Annotated[int | None, typer.Option(help="Only the first N questions (a multi-binary "
                                                   "question keeps all its pairs).")] = None,
    label: Annotated[str | None, typer.Option(help="Row name in reports.")] = None,
    extraction: ExtractionOpt = None,
    backend: Annotated[str | None, typer.Option(help="local (this process) or ray (Ray Data "
                                                "actors; address from ray.address or "
                                                "RAY_ADDRESS, else a local instance). Default: "
                                                "the config's `backend`.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Ask a model every question of a benchmark; resumable; then score.

    Example: rewatch eval run --bench video-holmes --data test_Video-Holmes.json
    --videos Benchmark/videos --model http://127.0.0.1:8000/v1 --mode think --inputs video_url
    """
    from rewatch.eval.benchmarks import limit_items
    from rewatch.eval.downloads import ensure_videos
    from rewatch.eval.run import EvalRunner, RunMismatch
    from rewatch.models.cache import ResponseCache
    from rewatch.models.registry import Models, build_model

    overrides = list(set_ or [])
    overrides += [f"eval.mode={mode}"] if mode else []
    overrides += [f"eval.inputs={inputs}"] if inputs else []
    overrides += [f"eval.extraction={extraction}"] if extraction else []
    overrides += [f"backend={backend}"] if backend else []
    cfg = get_config(config, overrides)
    cfg.eval.model = _model_entry(cfg, model, served_model)
    b, items, data_file, videos_dir = _items(bench, data, videos, cfg.eval.counting_protocol)
    cfg.video.root = str(videos_dir.expanduser().resolve())
    items = limit_items(items, limit)
    try:
        ensure_videos(items)  # members of a downloaded zip are extracted on first use
    except (OSError, ValueError) as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    out = out or Path("runs/eval") / f"{b.name}-{cfg.eval.mode}-{cfg.eval.inputs}"
    out.mkdir(parents=True, exist_ok=True)
    cache = ResponseCache(out / "cache.sqlite") if cfg.cache else None
    models = Models(cfg, cache)
    # the eval model gets no cache of its own: the runner keys replies cheaply (video file
    # identity + sampling + prompt) instead of hashing every ~1 MB request body
    eval_model = build_model(cfg.models[cfg.eval.model], None)

    async def go():  # type: ignore[no-untyped-def]
        caps = None
        if cfg.eval.inputs == "text_proxy":
            caps = await _captions(captions, items, cfg, out, models)
        judge = models[cfg.eval.judge] if cfg.eval.judge else None
        with progress() as bar:
            task = bar.add_task(f"{b.name} {cfg.eval.mode}", total=len(items))
            runner = EvalRunner(b, cfg, out, eval_model, videos_dir=videos_dir, judge=judge,
                                captions=caps, on_done=lambda: bar.advance(task), cache=cache)
            bar.advance(task, len(runner.preds.ids() & {it.id for it in items}))
            try:
                return await runner.run(items, {"label": label, "data": str(data_file),
                                                "videos": str(videos_dir),
                                                "seed": cfg.eval.seed,
                                                "judge": cfg.eval.judge})
            finally:
                close = getattr(eval_model, "aclose", None)
                if close is not None:
                    await close()
                await models.aclose()

    from rewatch.scale.ray_backend import RayBackendError

    try:
        result = asyncio.run(go())
    except (RunMismatch, RayBackendError) as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    for line in _score_lines(b.name, result.scores, cfg.eval.extraction):
        console.print(line)
    console.print(f"this run: {result.answered} answered, {result.failed} failed (errors.jsonl), "
                  f"{result.calls} model calls, {result.cache_hits} cache hits, "
                  f"{result.judge_calls} judge calls, {result.wall_s:.1f} s -> {out}/scores.json")


def _score_lines(name: str, scores, primary: str) -> list[str]:  # type: ignore[no-untyped-def]
    """One line per extraction mode, the headline first, with the honest counts."""
    lines = []
    for mode in sorted(scores, key=lambda m: m != primary):
        s = scores[mode]
        extra = [f"{s.guessed} guessed"] if mode == "official" else []
        extra += [f"{s.unjudged} unjudged"] if s.unjudged else []
        extra += [f"{s.needs_judge} need the judge"] if s.needs_judge else []
        lines.append(f"{name} [{mode}]: {s.metric} {s.score:.2f} over {s.n} ({s.correct} "
                     f"correct, {s.no_answer} unparsed, {s.missing} missing"
                     + "".join(f", {x}" for x in extra) + ")")
    return lines


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
    extraction: ExtractionOpt = None,
    judge: Annotated[str | None, typer.Option(help="A name in the config's models table: run "
                                                   "the scoring's LLM steps not yet in "
                                                   "judgments.jsonl (eval.judge).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as JSON.")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Rescore predictions in both extraction modes (official and strict), without the model
    that answered; writes scores.json and scored.jsonl.

    Example: rewatch eval score --bench minerva --data minerva.json
    --predictions runs/eval/minerva-think-frames --extraction official
    """
    from rewatch.eval.run import run_meta, score_run_async, write_scores
    from rewatch.models.cache import ResponseCache
    from rewatch.models.registry import Models

    overrides = list(set_ or [])
    overrides += [f"eval.extraction={extraction}"] if extraction else []
    overrides += [f"eval.judge={judge}"] if judge else []
    cfg = get_config(config, overrides)
    b, items, _data, _videos = _items(bench, data, videos, protocol)
    run_dir = predictions if predictions.is_dir() else predictions.parent
    if not (run_dir / "predictions.jsonl").exists():
        console.print(f"[red]{run_dir}/predictions.jsonl not found[/red]")
        raise typer.Exit(2)
    meta = run_meta(run_dir)
    think = meta.get("mode", cfg.eval.mode) == "think"
    seed = int(meta.get("seed", cfg.eval.seed))
    models = Models(cfg, ResponseCache(run_dir / "cache.sqlite") if cfg.cache else None)

    async def go():  # type: ignore[no-untyped-def]
        try:
            jm = models[cfg.eval.judge] if cfg.eval.judge else None
            return await score_run_async(b, items, run_dir, seed=seed, think=think, judge=jm,
                                         concurrency=cfg.eval.concurrency,
                                         cot_score=cfg.eval.cot_score)
        finally:
            await models.aclose()

    scores, calls = asyncio.run(go())
    write_scores(run_dir, scores, cfg.eval.extraction, {"rescored": True, "judge_calls": calls})
    if as_json:
        typer.echo(json.dumps({m: s.to_dict() for m, s in scores.items()}, indent=2,
                              default=str))
        return
    for line in _score_lines(b.name, scores, cfg.eval.extraction):
        typer.echo(line)
    for k, v in scores[cfg.eval.extraction].metrics.items():
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
