"""Stage 2 benchmark (issue 4): questions per second against the scripted server.

generate_qa with the scripted panel (tests/qa_scripted.py) behind a loopback server at 300 ms
latency, concurrency 32, no response cache, on videos whose candidates are a fixed mix: half
pass every filter, a quarter contradict the caption (F1 rejects), a quarter are answered from
the summary (F3 rejects). Printed for three settings: F1 -> F3 -> F2 with short circuit (the
default), the same order without short circuit (every filter on every question), and the
order F2 -> F3 -> F1 with short circuit. For each: candidates/s against the ideal bound, model
calls in all and per accepted question. The ideal wall time is the larger of total calls x
latency / concurrency (the server's capacity) and the longest chain of calls that must follow
one another (M_qa, F1, the panel member by member for F3 and F2, distractors, check) x latency.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from rewatch.bench import use_test_fixtures

use_test_fixtures()

from qa_scripted import Panel, Q, make_run, scripted_config, shapes_caption  # noqa: E402

import rewatch.models.openai_compat  # noqa: E402,F401  (import the client before timing)
from rewatch.models import Models  # noqa: E402
from rewatch.models.scripted_server import ScriptedTestServer  # noqa: E402
from rewatch.synth.qa import generate_qa  # noqa: E402


def workload(videos: int, per_video: int) -> tuple[list, dict[str, list[Q]]]:
    captions, table = [], {}
    for v in range(videos):
        marker = f"marker{v:04d}"
        lines = [(0, 2, f"{marker} a dark green background"),
                 (2, 4, f"a red circle number {v} appears"),
                 (4, 8, f"two blue squares move left in clip {v}"),
                 (8, 10, f"a yellow triangle appears in clip {v}")]
        captions.append(shapes_caption(f"v{v}", lines))
        qs = []
        for i in range(per_video):
            kind = i % 4
            q = Q(f"In clip {v}, what colour is the shape number {i} at 00:08?", "yellow",
                  evidence=("00:08",))
            if kind == 1:
                q.supported = False  # F1 rejects (the judge)
            elif kind == 3:
                q.summary = "yellow"  # F3 rejects
            qs.append(q)
        table[marker] = qs
    return captions, table


async def one_setting(label: str, videos: int, per_video: int, latency: float,
                      concurrency: int, **qa: object) -> None:
    captions, table = workload(videos, per_video)
    with tempfile.TemporaryDirectory() as tmp, \
            ScriptedTestServer(Panel(table), latency_s=latency) as srv:
        cfg = scripted_config(srv.base_url, questions_per_video=per_video, generation="free",
                              **qa)
        cfg.models["llm"].concurrency = concurrency
        cfg.synth.concurrency = concurrency
        run = make_run(Path(tmp) / "run", captions)
        models = Models(cfg, None)
        t0 = time.perf_counter()
        try:
            counts = await generate_qa(run, cfg, models)
        finally:
            await models.aclose()
        wall = time.perf_counter() - t0
        calls = len(srv.requests)
    n = counts["candidates"]
    panel = cfg.synth.qa.probe_prompts * len(cfg.synth.qa.probes)
    chain = 1 + 1 + 2 * panel + 2  # M_qa, F1, F3 and F2 one member after another, MCQ (2)
    ideal = max(calls * latency / concurrency, chain * latency)
    bound = f"ideal {n / ideal:7.2f} ({100 * ideal / wall:5.1f}%)" if ideal else "ideal   -"
    print(f"{label:34s} {n / wall:7.2f} cand/s  {bound}  {calls / wall:6.1f} calls/s"
          f"  calls {calls:5d}  per accepted {calls / max(1, counts['accepted']):5.2f}"
          f"  accepted {counts['accepted']}/{n}  wall {wall:6.1f}s")


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--videos", type=int, default=32)
    p.add_argument("--per-video", type=int, default=4)
    p.add_argument("--latency", type=float, default=0.3)
    p.add_argument("--concurrency", type=int, default=32)
    a = p.parse_args()
    print(f"Stage 2 on the scripted server: {a.videos} videos x {a.per_video} candidates, "
          f"latency {a.latency * 1000:.0f} ms, concurrency {a.concurrency}, no cache")
    settings: list[tuple[str, dict[str, Any]]] = [
        ("F1 -> F3 -> F2, short circuit", {}),
        ("F1 -> F3 -> F2, every filter", {"short_circuit": False}),
        ("F2 -> F3 -> F1, short circuit", {"filter_order": ["F2", "F3", "F1"]})]
    for label, kw in settings:
        await one_setting(label, a.videos, a.per_video, a.latency, a.concurrency, **kw)


if __name__ == "__main__":
    asyncio.run(main())
