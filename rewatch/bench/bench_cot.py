"""Stage 3 benchmarks (issue 5): trajectories per second against the scripted server, and
segment_retrieval / segment_query latency over a 2-hour video's caption.

1. synthesize_cot with scripted agents (tests/cot_scripted.py) behind a loopback server at
   300 ms latency, concurrency 32, no response cache: trajectories/s against the ideal bound
   concurrency / (calls per trajectory x latency), calls per trajectory as measured.
2. A generated C_detail of a 2-hour video (one line every 3 s: 2,400 lines): index build time,
   then p50/p95 latency of segment_retrieval and segment_query.
The machine is shared and noisy: both numbers are printed with what they are compared to.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rewatch.bench import use_test_fixtures

use_test_fixtures()

from cot_scripted import Agents, scripted_config  # noqa: E402
from cot_truth import SPEC, caption_from_truth, mcqs_from_truth, truth_of  # noqa: E402

from rewatch.models import Models  # noqa: E402
from rewatch.models.scripted_server import ScriptedTestServer  # noqa: E402
from rewatch.schema import CaptionLine, CaptionRecord, mmss  # noqa: E402
from rewatch.store import RunDir  # noqa: E402
from rewatch.synth.cot import synthesize_cot  # noqa: E402
from rewatch.synth.tools import CaptionIndex  # noqa: E402


def serve(latency: float) -> None:
    """The scripted agents' server in its own process (off the client's GIL); prints PORT."""
    import signal

    srv = ScriptedTestServer(Agents(), latency_s=latency).start()
    print(f"PORT {srv.port}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    srv.stop()


async def trajectories_per_second(n: int, latency: float, concurrency: int) -> None:
    truth = truth_of(SPEC)
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(latency)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().split()[1])
        await _measure(n, latency, concurrency, truth, f"http://127.0.0.1:{port}/v1")
    finally:
        proc.terminate()
        proc.wait()


async def _measure(n: int, latency: float, concurrency: int, truth: Any, url: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir(tmp)
        run.file("captions.jsonl").append(caption_from_truth(truth))
        base = mcqs_from_truth(truth)
        for i in range(n):
            m = base[i % len(base)]
            run.file("mcq.jsonl").append(m.model_copy(update={"id": f"{m.id}-{i}"}))
        cfg = scripted_config(url)
        cfg.models["llm"].concurrency = concurrency
        cfg.synth.concurrency = concurrency
        models = Models(cfg, None)  # no cache: every call goes to the server
        # warm-up: the embedder and the caption index are built once per process
        await synthesize_cot(RunDir(Path(tmp) / "warm"), cfg, models)
        from rewatch.synth.tools import caption_index

        caption_index(caption_from_truth(truth)).segment_retrieval("warm up")
        before = models.stats()["llm"]["calls"] if "llm" in models.stats() else 0
        start = time.perf_counter()
        counts = await synthesize_cot(run, cfg, models)
        elapsed = time.perf_counter() - start
        calls = (models.stats()["llm"]["calls"] - before) / n
        await models.aclose()
    rate = n / elapsed
    ideal = concurrency / (calls * latency)
    print(f"stage 3 vs scripted server at {latency * 1000:.0f} ms, concurrency {concurrency}:")
    print(f"  {n} trajectories in {elapsed:.1f} s ({counts['kept']} kept): {rate:.2f} traj/s")
    print(f"  measured calls per trajectory: {calls:.2f}")
    print(f"  ideal bound concurrency/(calls x latency): {ideal:.2f} traj/s "
          f"-> {rate / ideal:.0%} of ideal")


def long_caption(hours: float = 2.0, every: float = 3.0, seed: int = 0) -> CaptionRecord:
    rng = random.Random(seed)
    colours = ["red", "green", "blue", "yellow", "white", "orange", "purple", "pink", "brown",
               "cyan", "gray", "black"]
    kinds = ["circle", "square", "triangle", "car", "person", "dog", "ball", "box"]
    verbs = ["appears", "leaves", "moves left", "moves right", "stops", "turns around",
             "jumps", "is picked up"]
    places = ["in the kitchen", "on the street", "in a park", "on a table", "near the door"]
    lines = []
    t = 0.0
    while t < hours * 3600:
        text = (f"a {rng.choice(colours)} {rng.choice(kinds)} {rng.choice(verbs)} "
                f"{rng.choice(places)}; a {rng.choice(colours)} {rng.choice(kinds)} stays")
        lines.append(CaptionLine(start=t, end=t + every, text=text))
        t += every
    return CaptionRecord(id="long", video_id="long", video_path="none.mp4",
                         duration=hours * 3600, detail=lines, summary="",
                         captioner="generated")


def retrieval_latency(n_queries: int) -> None:
    cap = long_caption()
    idx = CaptionIndex(cap)
    t0 = time.perf_counter()
    idx.segment_retrieval("warm up the index")
    build = time.perf_counter() - t0
    rng = random.Random(1)
    queries = [rng.choice(cap.detail).text.split(";")[0] for _ in range(n_queries)]
    lat_r, lat_q = [], []
    for q in queries:
        t0 = time.perf_counter()
        idx.segment_retrieval(q, top_k=3)
        lat_r.append(time.perf_counter() - t0)
        stamp = mmss(rng.uniform(0, cap.duration))
        t0 = time.perf_counter()
        idx.segment_query(stamp)
        lat_q.append(time.perf_counter() - t0)

    def pct(xs: list[float], p: float) -> float:
        return statistics.quantiles(xs, n=100)[int(p) - 1] * 1000

    print(f"retrieval over a {cap.duration / 3600:.0f}-hour caption, {len(cap.detail)} lines:")
    print(f"  index build (MiniLM + BM25, first query): {build:.1f} s")
    print(f"  segment_retrieval: p50 {pct(lat_r, 50):.1f} ms, p95 {pct(lat_r, 95):.1f} ms "
          f"({n_queries} queries)")
    print(f"  segment_query:     p50 {pct(lat_q, 50):.2f} ms, p95 {pct(lat_q, 95):.2f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer trajectories and queries")
    p.add_argument("--serve", type=float, default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.serve is not None:
        return serve(a.serve)
    asyncio.run(trajectories_per_second(64 if a.quick else 192, 0.3, 32))
    retrieval_latency(50 if a.quick else 200)


if __name__ == "__main__":
    main()
