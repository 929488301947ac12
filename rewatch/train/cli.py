"""`rewatch train` sub-commands: sft and grpo (TRL on one box), verl (a GPU cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rewatch.clikit import ConfigOpt, SetOpt, console, get_config

app = typer.Typer(
    help="Train the student on a run's data: multi-task SFT and GRPO with the O&R reward (TRL, "
    "text-proxy mode, one CPU box), or GRPO of a VLM with verl on a Ray cluster.\n\n"
    "Example: rewatch train sft runs/demo --out runs/demo/sft",
    no_args_is_help=True,
)

RunArg = Annotated[Path, typer.Argument(help="Run directory (Stages 1-3 written).")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder (must be new, or "
                                                          "--resume).")]
ResumeOpt = Annotated[bool, typer.Option(help="Continue from the last checkpoint in --out.")]
StepsOpt = Annotated[int | None, typer.Option(help="Stop after N optimiser steps (overrides "
                                                   "the config).")]
GgufOpt = Annotated[bool, typer.Option(help="Also write OUT/model.gguf for the embedded "
                                            "backend and `rewatch eval run`.")]


def _fail(e: Exception) -> None:
    console.print(f"[red]{e}[/red]")
    raise typer.Exit(2) from None


def _eval_hint(out: Path, name: str) -> None:
    gguf = out / "model.gguf"
    if gguf.exists():
        console.print(f"evaluate: rewatch eval run --bench minerva --data RUN/export/heldout/"
                      f"minerva.json --videos RUN/export/heldout/videos --inputs text_proxy "
                      f"--captions RUN/export/heldout/captions.jsonl --model {name} "
                      f"--set models.{name}.model_path={gguf} --set models.{name}.model={name}")


@app.command("sft")
def sft_cmd(run: RunArg, out: OutOpt, resume: ResumeOpt = False, max_steps: StepsOpt = None,
            gguf: GgufOpt = True, config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Multi-task SFT (caption / direct / thinking, mixed by data.sft_mix) of the student with
    TRL's SFTTrainer in text-proxy mode; logs the loss of each task.

    Example: rewatch train sft runs/demo --out runs/demo/sft --set train.sft.max_steps=20
    """
    from rewatch.data.samples import DataError
    from rewatch.train.sft import train_sft
    from rewatch.train.student import CheckpointError

    cfg = get_config(config, set_)
    try:
        r = train_sft(run, out, cfg, resume=resume, max_steps=max_steps, gguf=gguf)
    except (DataError, CheckpointError, ValueError) as e:
        _fail(e)
        return
    s = r.summary
    console.print(f"SFT: {s['steps']} steps, loss {s['first_loss']:.3f} -> {s['last_loss']:.3f}, "
                  f"{s['tokens_per_second']} tokens/s, peak {s['peak_rss_mb']:.0f} MiB "
                  f"-> {r.model}")
    _eval_hint(out, "sft")


@app.command("grpo")
def grpo_cmd(run: RunArg, out: OutOpt,
             init: Annotated[Path, typer.Option(help="The SFT checkpoint (its --out folder).")],
             judge: Annotated[str | None, typer.Option(help="Reward judge: config, embedded, "
                                                            "none, or an OpenAI-compatible "
                                                            "URL (train.grpo.judge).")] = None,
             resume: ResumeOpt = False, max_steps: StepsOpt = None, gguf: GgufOpt = True,
             config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """GRPO with the O&R reward (TRL's GRPOTrainer) from the SFT checkpoint; every reward
    component is logged under its own name.

    Example: rewatch train grpo runs/demo --init runs/demo/sft --out runs/demo/grpo
    --judge embedded --max-steps 4
    """
    from rewatch.data.samples import DataError
    from rewatch.train.grpo import train_grpo
    from rewatch.train.student import CheckpointError

    cfg = get_config(config, set_)
    try:
        r = train_grpo(run, init, out, cfg, resume=resume, max_steps=max_steps, judge=judge,
                       gguf=gguf)
    except (DataError, CheckpointError, ValueError) as e:
        _fail(e)
        return
    s = r.summary
    last = {k: v[-1] if v else None for k, v in s["rewards_per_step"].items()}
    console.print(f"GRPO: {s['steps']} steps, {s['seconds_per_step']} s/step, last rewards "
                  + ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} n/a"
                              for k, v in last.items()) + f" -> {r.model}")
    _eval_hint(out, "grpo")


@app.command("verl")
def verl_cmd(run: RunArg, out: OutOpt,
             dry_run: Annotated[bool, typer.Option("--dry-run", help="Write and validate the "
                                                   "config and data; launch nothing.")] = False,
             model: Annotated[str | None, typer.Option(help="Policy to train (train.verl.model)"
                                                       )] = None,
             verl_python: Annotated[str | None, typer.Option(
                 help="A Python with verl installed, for validation against verl's own config "
                 "schema and reward loader (default: this one if it has verl).")] = None,
             config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Write a verl GRPO config for the run's parquet export with the O&R reward as
    custom_reward_function (the paper's settings: fps 2, 128·28·28 pixels, n = 8,
    temperature 0.8, top_p 0.9), validate it, and launch `python -m verl.trainer.main_ppo`.

    Example: rewatch train verl runs/real --out runs/real/verl --dry-run
    """
    from rewatch.data.samples import DataError
    from rewatch.train.verl.launch import VerlError, launch, prepare

    cfg = get_config(config, set_)
    if model:
        cfg.train.verl.model = model
    try:
        plan = prepare(run, out, cfg, verl_python=verl_python)
    except (DataError, VerlError, ValueError) as e:
        _fail(e)
        return
    for line in plan.report:
        console.print(line)
    console.print(f"config: {plan.config_path}\nlaunch: {plan.command_path}")
    if dry_run:
        return
    raise typer.Exit(launch(plan))
