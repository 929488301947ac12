"""The demo's optional last step: a short SFT of the student on the demo's own run
(`train.demo_sft: true`; off by default, since it adds minutes on a CPU)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rewatch.clikit import console
from rewatch.config import Config

log = logging.getLogger(__name__)


def demo_sft(cfg: Config, run: str | Path, summary: dict[str, Any]) -> dict[str, Any] | None:
    """With `train.demo_sft`, train the student `train.demo_sft_steps` steps on the run into
    RUN/sft (a killed one resumes; a finished one is kept) and add a line to the summary."""
    if not cfg.train.demo_sft:
        return None
    from rewatch.data.samples import DataError
    from rewatch.train.sft import train_sft
    from rewatch.train.student import CheckpointError

    out = Path(run) / "sft"
    if (out / "summary.json").exists():
        console.print(f"demo SFT: already done ({out})")
        return None
    try:
        r = train_sft(run, out, cfg, resume=out.exists(), max_steps=cfg.train.demo_sft_steps)
    except (DataError, CheckpointError) as e:
        console.print(f"[yellow]demo SFT skipped: {e}[/yellow]")
        summary["SFT"] = f"skipped: {e}"
        return None
    s = r.summary
    summary["SFT"] = {"steps": s["steps"], "first loss": round(s["first_loss"] or 0, 3),
                      "last loss": round(s["last_loss"] or 0, 3),
                      "tokens/s": s["tokens_per_second"], "model": str(r.model)}
    console.print(f"demo SFT: {s['steps']} steps, loss {s['first_loss']:.3f} -> "
                  f"{s['last_loss']:.3f}, {s['tokens_per_second']} tokens/s -> {out}")
    return s
