"""`rewatch demo`: the main job on the embedded default (grows with the pipeline)."""

from __future__ import annotations

import time

from pydantic import BaseModel
from rich.table import Table

from rewatch.clikit import console
from rewatch.config import Config
from rewatch.models import build_models
from rewatch.models.cache import ResponseCache
from rewatch.store import RunDir


class DemoAnswer(BaseModel):
    answer: str
    confidence: int


async def run_demo(cfg: Config, out: str) -> None:
    """Ask the embedded model one schema-constrained question and write a run directory."""
    t0 = time.time()
    run = RunDir(out, cfg)
    models = build_models(cfg, ResponseCache(run.cache_path) if cfg.cache else None)
    llm = models[cfg.synth.qa.generator]
    reply = await llm.chat(
        [{"role": "user", "content": "A video shows a red ball rolling left, then a blue cube "
          "appearing. Which object appears second? Reply as JSON."}],
        schema=DemoAnswer,
        max_tokens=64,
    )
    table = Table(title=f"rewatch demo ({out})")
    table.add_column("step")
    table.add_column("result")
    table.add_row("structured question", f"{reply.parsed!r}")
    table.add_row("model calls / cache hits",
                  f"{llm.stats['calls']} / {llm.stats['cache_hits']}")
    table.add_row("wall time", f"{time.time() - t0:.1f} s")
    console.print(table)
