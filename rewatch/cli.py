"""The `rewatch` command line: one typer app."""

from __future__ import annotations

from pathlib import Path

import typer

from rewatch.clikit import ConfigOpt, SetOpt, console, get_config, setup_logging
from rewatch.eval.cli import app as eval_app
from rewatch.reward.cli import app as reward_app
from rewatch.synth.cli import app as synth_app
from rewatch.train.cli import app as train_app
from rewatch.video.cli import app as video_app

app = typer.Typer(
    help="rewatch: turn raw videos into evidence-grounded reasoning data (ReWatch-R1), score "
    "reasoning with the O&R reward, train, and evaluate on the paper's five benchmarks.\n\n"
    "Example: rewatch demo --out runs/demo",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
config_app = typer.Typer(help="Show and check configuration.\n\nExample: rewatch config show "
                         "--config vllm --set synth.qa.theta_text=0.3", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(video_app, name="video")
app.add_typer(synth_app, name="synth")
app.add_typer(reward_app, name="reward")
app.add_typer(eval_app, name="eval")
app.add_typer(train_app, name="train")


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    setup_logging(verbose)


@config_app.command("show")
def config_show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the fully resolved config as YAML.

    Example: rewatch config show --config vllm --set models.llm.concurrency=64
    """
    from rewatch.config import dump_config

    typer.echo(dump_config(get_config(config, set_)))


@app.command()
def demo(
    out: str = typer.Option("runs/demo", help="Run directory to write (a rerun resumes)."),
    limit: int | None = typer.Option(None, help="Use only the first N sample videos."),
    videos: str | None = typer.Option(None, help="A folder of videos instead of the samples."),
    config: ConfigOpt = "demo",
    set_: SetOpt = None,
) -> None:
    """Run the main job end to end on the embedded models and the sample videos: Stage 1
    captions, Stage 2 questions, Stage 3 chains, the audit, SFT/RL exports, O&R rewards and
    RUN/report.html. Prints a summary table and where the report is.

    Example: rewatch demo --out runs/demo
    """
    import asyncio

    from rewatch.demo import run_demo
    from rewatch.store import RunDirError, check_writable

    cfg = get_config(config, set_)
    try:
        check_writable(Path(out))
    except RunDirError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    if videos is not None:
        from rewatch.synth.pipeline import find_videos

        asyncio.run(run_demo(cfg, out, videos=find_videos(videos, limit)))
    else:
        asyncio.run(run_demo(cfg, out, limit=limit))


@app.command()
def serve(
    port: int = typer.Option(8000, help="Port on 127.0.0.1."),
    host: str = typer.Option("127.0.0.1", help="Bind address (loopback by default)."),
    n_ctx: int = typer.Option(4096, help="Context window."),
    model_path: str | None = typer.Option(None, help="GGUF file (default: SmolLM2-135M)."),
) -> None:
    """Serve the embedded model as an OpenAI-compatible server (llama.cpp server).

    Example: rewatch serve --port 8000   then   --set models.llm.backend=openai
    --set models.llm.base_url=http://127.0.0.1:8000/v1
    """
    from rewatch.models.serve import serve_embedded

    serve_embedded(host=host, port=port, n_ctx=n_ctx, model_path=model_path)


@app.command()
def export(
    run: str = typer.Argument(..., help="Run directory."),
    out: str | None = typer.Option(None, help="Output folder (default RUN/export)."),
    format_: list[str] = typer.Option(["trl", "llamafactory", "verl"], "--format", "-f",
                                      help="trl | llamafactory | verl (repeatable)."),
    exclude_bench: list[str] = typer.Option([], "--exclude-bench", help="A benchmark file "
                                            "([NAME=]FILE): its questions and videos are kept "
                                            "out of the data (repeatable)."),
    external: list[str] = typer.Option([], "--external", help="A Video-R1-format QA file "
                                       "mixed into RL, FILE[:RATIO] (ratio per ReWatch RL "
                                       "sample, default 0.5; repeatable)."),
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Export training data from a run, deduplicated, leak-checked and split by video: TRL
    (SFT messages, text-proxy prompt/completion, GRPO prompts), LLaMA-Factory (ShareGPT +
    dataset_info.json), verl (parquet), and the held-out MCQs for `rewatch eval`. The SFT mix
    is data.sft_mix; see docs/training.md.

    Example: rewatch export runs/demo --format verl --exclude-bench minerva.json
    """
    from rewatch.config import ExternalQA
    from rewatch.data.export import export_run
    from rewatch.data.samples import DataError

    cfg = get_config(config, set_)
    cfg.data.exclude_bench = [*cfg.data.exclude_bench, *exclude_bench]
    for item in external:
        path, _, ratio = item.rpartition(":")
        if not path or not ratio.replace(".", "", 1).isdigit():
            path, ratio = item, ""
        cfg.data.external = [*cfg.data.external, ExternalQA(
            path=path, **({"ratio": float(ratio)} if ratio else {}))]
    formats = tuple(f.strip() for item in format_ for f in item.split(",") if f.strip())
    try:
        counts = export_run(run, out, cfg, formats=formats)
    except DataError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    console.print(" ".join(f"{k}={v}" for k, v in counts.items()))
    console.print(f"manifest: {Path(out) if out else Path(run) / 'export'}/manifest.json")


@app.command()
def view(
    run: str = typer.Argument(..., help="Run directory."),
    thumbnails: bool = typer.Option(True, help="Embed small frame thumbnails."),
) -> None:
    """Write RUN/report.html: a self-contained dataset viewer (timeline, captions, questions
    with filter evidence, chains with actions/observations, audit, rewards). Open it in any
    browser; no server needed.

    Example: rewatch view runs/demo
    """
    from rewatch.report.viewer import build_report

    out = build_report(run, thumbnails=thumbnails)
    console.print(f"report: {out} ({out.stat().st_size / 1024:.0f} KB)")


@app.command()
def bench(
    name: str = typer.Argument("all", help="a benchmark under rewatch/bench/ (chat, embedded, "
                                "cache, reward, ...) or all"),
    quick: bool = typer.Option(False, help="Fewer requests (a smoke run)."),
) -> None:
    """Run the performance benchmarks shipped in rewatch/bench/ and print ratios measured side
    by side.

    Example: rewatch bench chat
    """
    import runpy
    import sys

    from rewatch.bench import SCRIPTS, names

    for n in names() if name == "all" else [name]:
        script = SCRIPTS / f"bench_{n}.py"
        if not script.exists():
            console.print(f"[red]no benchmark {n!r}; there are {', '.join(names())}[/red]")
            raise typer.Exit(2)
        sys.argv = [str(script)] + (["--quick"] if quick else [])
        try:
            runpy.run_path(str(script), run_name="__main__")
        except SystemExit as e:  # a benchmark that cannot run here says why; `all` goes on
            if name != "all" or e.code in (0, None):
                raise
            console.print(f"[yellow]bench {n}: {e.code}[/yellow]")


if __name__ == "__main__":
    app()
