"""Ray backend benchmark (issue 16): local Ray vs local asyncio on the same work, side by side.

Stages 1-3 on generated videos (copies of the sample specs under distinct names), every LLM
role the scripted stand-in (tests/pipeline_scripted.py) behind a loopback server with a fixed
latency; the object captioner runs in process (local) or in the Ray workers. Each driver runs
the three stages in one call, as `rewatch synth` does, one after the other in this process:
the asyncio driver, Ray with 1 CPU and Ray with 2 CPUs (`ray.init(num_cpus=k)`, its start-up
timed apart). Printed: wall seconds and items/s per stage and in all, the overhead ratio
Ray(1 CPU) / asyncio (goal <= 1.3x), the speed-up Ray(2 CPUs) / Ray(1 CPU) and the load
average; then the figures docs/scale.md builds on: CPU seconds per video second of Stage 1
(decoding + captioning, from an asyncio run stage by stage) and model calls per item of each
stage (counted at the server). The three runs' records are compared (ids and content,
wall-time fields aside).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from rewatch.bench import use_test_fixtures

use_test_fixtures()

from pipeline_scripted import ScriptedPipelineModel  # noqa: E402

from rewatch.config import load_config  # noqa: E402
from rewatch.models.scripted_server import ScriptedTestServer  # noqa: E402
from rewatch.samples import (  # noqa: E402
    SHAPES_COUNT,
    SHAPES_CUTS,
    SHAPES_MIX,
    SyntheticSpec,
    synthetic_video,
)
from rewatch.synth.pipeline import STAGES, synthesize  # noqa: E402

RECORDS = ("videos.jsonl", "captions.jsonl", "qa.jsonl", "mcq.jsonl", "cot.jsonl",
           "rejected.jsonl")


def config(url: str, *extra: str) -> Any:
    sets = [f"models.{name}.{k}={v}" for name in ("llm", "probe_small") for k, v in (
        ("backend", "openai"), ("base_url", url), ("model", f"scripted-{name}"),
        ("max_retries", 0), ("timeout_s", 120), ("concurrency", 16))]
    # every MCQ gets its chain (the demo config stops at 14)
    return load_config("demo", [*sets, "synth.qa.questions_per_video=3", "synth.concurrency=8",
                                "synth.cot.max_chains=0",
                                *extra])


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (Ray workers are not children)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def one_run(videos: list[Path], cfg: Any, out: Path, srv: ScriptedTestServer
            ) -> dict[str, dict[str, float]]:
    """Each stage on its own (same run directory): wall s, CPU s here, requests by stage."""
    per: dict[str, dict[str, float]] = {}
    for stage in STAGES:
        n0, c0, t0 = len(srv.requests), cpu_seconds(), time.perf_counter()
        result = asyncio.run(synthesize(videos, cfg, out, (stage,)))
        wall = time.perf_counter() - t0
        sent = srv.requests[n0:]
        chars = sum(len(json.dumps(b.get("messages", []), ensure_ascii=False)) for b in sent)
        max_tokens = sum(int(b.get("max_tokens") or 0) for b in sent)
        per[stage] = {"wall": wall, "cpu": cpu_seconds() - c0, "calls": len(sent),
                      "prompt_chars": chars, "max_tokens": max_tokens,
                      **{f"counts.{k}": v for k, v in result.counts[stage].items()
                         if isinstance(v, int | float)}}
    return per


def records(out: Path) -> dict[str, dict[str, Any]]:
    result = {}
    for name in RECORDS:
        path = out / name
        rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        result[name] = {r["id"]: {k: v for k, v in r.items() if "seconds" not in k}
                        for r in rows}
    return result


def items_of(out: Path) -> dict[str, int]:
    """Items of each stage's input: videos, captions, MCQs."""
    def n(name: str) -> int:
        p = out / name
        return len(p.read_text().splitlines()) if p.exists() else 0
    return {"caption": n("videos.jsonl"), "qa": n("captions.jsonl"), "cot": n("mcq.jsonl")}


def variant(spec: SyntheticSpec, shift: int) -> SyntheticSpec:
    """`spec` with every event `shift` seconds later: new content (so no request repeats
    another video's and the per-item call counts are true), the same kind of video."""
    if not shift:
        return spec
    scenes = ((0.0, spec.scenes[0][1]),) + tuple((t + shift, c) for t, c in spec.scenes[1:])
    shapes = tuple(replace(x, enter=x.enter + shift, leave=x.leave + shift) for x in spec.shapes)
    return replace(spec, name=f"{spec.name}_{shift}", duration=spec.duration + shift,
                   scenes=scenes, shapes=shapes)


def full_run(videos: list[Path], cfg: Any, out: Path) -> dict[str, float]:
    """Stages 1-3 in one call, as `rewatch synth` runs them: wall s in all and per stage (on
    Ray the worker pool's start falls in Stage 1, the first stage that uses it)."""
    t0 = time.perf_counter()
    result = asyncio.run(synthesize(videos, cfg, out))
    return {"all": time.perf_counter() - t0, **result.seconds,
            "chains": float(result.counts["cot"]["total"])}


def child(kind: str, url: str, out: Path, videos: list[Path]) -> None:
    """One driver's whole run in a fresh process (as the CLI would run it: nothing imported or
    loaded beforehand); prints its timings as JSON."""
    timings: dict[str, float] = {}
    if kind == "asyncio":
        cfg = config(url)
    else:
        import ray

        cfg = config(url, "backend=ray", "ray.actors=2", "ray.concurrency=8")
        t0 = time.perf_counter()
        ray.init(num_cpus=int(kind.removeprefix("ray")), include_dashboard=False,
                 configure_logging=False, object_store_memory=256 * 2**20, log_to_driver=False)
        timings["init"] = time.perf_counter() - t0
    try:
        timings.update(full_run(videos, cfg, out))
    finally:
        if kind != "asyncio":
            ray.shutdown()
    print("BENCH " + json.dumps(timings))


def in_fresh_process(kind: str, url: str, out: Path, videos: list[Path]) -> dict[str, float]:
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [repo, *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, "-m", "rewatch.bench.bench_ray", "--child", kind,
                           "--url", url, "--out", str(out), *map(str, videos)],
                          capture_output=True, text=True, env=env, check=False)
    lines = [x for x in done.stdout.splitlines() if x.startswith("BENCH ")]
    if done.returncode or not lines:
        raise RuntimeError(f"the {kind} run failed: {done.stderr[-3000:]}")
    return dict(json.loads(lines[-1].removeprefix("BENCH ")))


def measure(root: Path, specs: list[SyntheticSpec], latency: float
            ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]],
                       dict[str, float], dict[str, int], bool, dict[str, int],
                       tuple[float, float]]:
    """Side by side on these videos: asyncio, Ray with 1 CPU, Ray with 2 CPUs (each a whole
    run in a fresh process), then asyncio stage by stage for the scaling inputs."""
    videos = [synthetic_video(root / "videos" / f"{s.name}.mp4", s).path for s in specs]
    runs: dict[str, dict[str, float]] = {}
    init_s: dict[str, float] = {}
    load0 = os.getloadavg()[0]
    with ScriptedTestServer(ScriptedPipelineModel(), latency_s=latency) as srv:
        for kind, name in (("asyncio", "asyncio"), ("ray1", "ray 1 CPU"), ("ray2", "ray 2 CPU")):
            runs[name] = in_fresh_process(kind, srv.base_url, root / kind, videos)
            if "init" in runs[name]:
                init_s[name] = runs[name].pop("init")
        load1 = os.getloadavg()[0]
        stages = one_run(videos, config(srv.base_url), root / "stages", srv)
    same = all(records(root / f"ray{c}") == records(root / "asyncio") for c in (1, 2))
    sizes = {f.name: f.stat().st_size for f in (root / "asyncio").iterdir() if f.is_file()}
    items = items_of(root / "asyncio")
    items["mcq"] = items["cot"]
    items["cot"] = int(runs["asyncio"]["chains"])  # the chains asked (max_chains)
    return runs, stages, init_s, items, same, sizes, (load0, load1)


def main(quick: bool, copies: int, latency: float) -> None:
    base = (SHAPES_CUTS, SHAPES_COUNT, SHAPES_MIX)
    large = [variant(s, i) for i in range(1 if quick else copies) for s in base]
    with tempfile.TemporaryDirectory() as tmp:
        runs, a, init_s, items, same, sizes, load_at = measure(Path(tmp), large, latency)
    video_s = sum(s.duration for s in large)
    n_videos = len(large)

    load = os.getloadavg()
    print(f"Ray backend vs asyncio: {n_videos} generated videos ({video_s:.0f} s of video), "
          f"scripted server at {latency * 1000:.0f} ms latency, {os.cpu_count()} cores, load "
          f"average (1 min) {load_at[0]:.2f} before the runs, {load_at[1]:.2f} after the Ray "
          f"runs, now {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    names = list(runs)
    print(f"  {'stage':8} {'items':>5}  " + "  ".join(f"{n:>17}" for n in names)
          + "   ray1/asyncio  ray2/ray1")
    for stage in (*STAGES, "all"):
        cells = []
        for n in names:
            wall = runs[n][stage]
            rate = f"{items[stage] / wall:5.2f}/s" if stage in items else " " * 7
            cells.append(f"{wall:6.1f} s {rate}")
        ratio = runs["ray 1 CPU"][stage] / runs["asyncio"][stage]
        speed = runs["ray 1 CPU"][stage] / runs["ray 2 CPU"][stage]
        print(f"  {stage:8} {items.get(stage, ''):>5}  " + "  ".join(f"{c:>17}" for c in cells)
              + f"   {ratio:10.2f}x  {speed:8.2f}x"
              + ("   (goal ray1/asyncio <= 1.3x)" if stage == "all" else ""))
    n_items = sum(items[s] for s in STAGES)
    print(f"  items/s over all {n_items} items: " + ", ".join(
        f"{n} {n_items / runs[n]['all']:.2f}" for n in names))
    with_init = (runs["ray 1 CPU"]["all"] + init_s["ray 1 CPU"]) / runs["asyncio"]["all"]
    print("  Ray start-up (ray.init), not in the table: " + ", ".join(
        f"{k} {v:.1f} s" for k, v in init_s.items())
        + f"; with it, ray1/asyncio {with_init:.2f}x")
    print(f"  records of both Ray runs identical to asyncio's: {'yes' if same else 'NO'}")
    print("scaling inputs (asyncio, each stage run on its own):")
    print(f"  stage 1 CPU: {a['caption']['cpu']:.1f} s for {video_s:.0f} s of video = "
          f"{a['caption']['cpu'] / video_s:.3f} CPU s per video second "
          "(decode + object captioner + driver)")
    for stage in STAGES:
        per = a[stage]["calls"] / max(1, items[stage])
        unit = {"caption": "video", "qa": "video", "cot": "chain"}[stage]
        calls = max(1.0, a[stage]["calls"])
        print(f"  {stage:8} model calls per {unit}: {per:5.1f}   ({a[stage]['calls']:.0f} "
              f"calls / {items[stage]} items), prompt {a[stage]['prompt_chars'] / calls:6.0f} "
              f"chars/call, max_tokens {a[stage]['max_tokens'] / calls:5.0f}/call, CPU here "
              f"{a[stage]['cpu']:.1f} s")
    print(f"  records: MCQs per video {items['mcq'] / n_videos:.1f}, chains asked "
          f"{items['cot']} (synth.cot.max_chains); run directory per video: "
          + ", ".join(f"{k} {v / n_videos / 1024:.1f} KiB" for k, v in sorted(sizes.items())
                      if k.endswith(".jsonl")))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="one copy of each video")
    p.add_argument("--copies", type=int, default=3,
                   help="time-shifted variants of each of the 3 sample specs")
    p.add_argument("--latency", type=float, default=0.05, help="scripted server latency (s)")
    p.add_argument("--child", help=argparse.SUPPRESS)  # one run: asyncio, ray1 or ray2
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("videos", nargs="*", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.url, args.out, args.videos)
    else:
        main(args.quick, args.copies, args.latency)
