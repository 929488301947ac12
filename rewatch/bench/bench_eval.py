"""The eval harness against its two limits: 1,000 questions on 20 generated videos (questions
share videos, as in the real benchmarks), a scripted server at 500 ms latency, concurrency 32,
192 frames per question.

Bound 1 (server): concurrency / latency requests per second.
Bound 2 (CPU): preparing every video's frames (decode + resize + JPEG) measured alone, with the
same worker threads; each video is prepared once and shared by its questions, so the rate in
questions/s is questions / (time to prepare all videos).
Prints both bounds, the achieved rate and its ratio to the lower bound (goal >= 0.9), and the
time of a rerun of the finished run (goal < 5% of the first).

    .venv/bin/python bench/bench_eval.py            # full size
    .venv/bin/python bench/bench_eval.py --quick    # 200 questions, 8 videos
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from rewatch.config import load_config
from rewatch.eval.benchmarks import get_benchmark
from rewatch.eval.inputs import frames_messages, prepare_frames
from rewatch.eval.run import EvalRunner
from rewatch.models.cache import ResponseCache, request_key
from rewatch.models.openai_compat import OpenAIChatModel
from rewatch.samples import CACHE_DIR, Shape, SyntheticSpec, synthetic_video


def make_videos(root: Path, n: int, seconds: float) -> list[str]:
    """`n` generated videos, 320x240 at 10 fps, moving shapes over scene cuts (cached)."""
    colours = ["red", "green", "blue", "yellow", "white", "orange", "purple"]
    names = []
    for i in range(n):
        spec = SyntheticSpec(
            name=f"bench{i}", duration=seconds, fps=10, width=320, height=240,
            scenes=tuple((seconds * k / 4, ["black", "navy", "gray", "maroon"][(i + k) % 4])
                         for k in range(4)),
            shapes=tuple(Shape("circle" if k % 2 else "square", colours[(i + k) % 7],
                               seconds * k / 8, seconds, (40.0 + 30 * k, 60.0),
                               velocity=(1.5, 0.8), size=12) for k in range(5)))
        synthetic_video(root / f"bench{i}_{int(seconds)}s.mp4", spec)
        names.append(f"bench{i}_{int(seconds)}s")
    return names


def write_minerva(path: Path, vids: list[str], n: int, seed: int = 0) -> Path:
    """`n` MINERVA-format questions spread over `vids`, shuffled (the runner groups them)."""
    rows = [{"key": f"q{i}", "video_id": vids[i % len(vids)],
             "question": f"What happens in scene {i}?",
             **{f"answer_choice_{k}": f"choice {k}" for k in range(5)},
             "answer_id": i % 5, "question type": "bench", "category": "bench"}
            for i in range(n)]
    random.Random(seed).shuffle(rows)
    path.write_text(json.dumps(rows))
    return path


SERVER = """
import asyncio, json, signal, sys, time
from starlette.responses import JSONResponse
from rewatch.models.scripted_server import ScriptedTestServer

class Lean(ScriptedTestServer):
    # Reads and parses every request, waits the latency, answers; keeps no bodies and hashes
    # nothing (1,000 requests of 192 frames are ~1 GB; a real server runs on its own machine).
    async def _chat(self, request):
        body = json.loads(await request.body())
        assert body["messages"][0]["content"]
        await asyncio.sleep(self.latency_s)
        self.served += 1
        return JSONResponse({"id": f"lean-{self.served}", "object": "chat.completion",
            "created": int(time.time()), "model": "scripted",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "<answer>A</answer>"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

srv = Lean("<answer>A</answer>", latency_s=float(sys.argv[1])).start()
print("PORT", srv.port, flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
srv.stop()
"""


def cpu_bound(cfg: Any, paths: list[str]) -> tuple[float, list[Any]]:
    """Seconds to prepare every video's frames alone, with the runner's worker threads."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(cfg.eval.prepare_workers) as ex:
        videos = list(ex.map(lambda p: prepare_frames(p, cfg), paths))
    assert all(v.frames == cfg.video.max_frames for v in videos), [v.frames for v in videos]
    return time.perf_counter() - t0, videos


async def requests_alone(base_url: str, videos: list[Any], n: int, concurrency: int,
                         old_path: bool = False) -> tuple[float, float]:
    """Seconds to send `n` frame requests (frames already prepared): the request path alone
    (serialization, cache key, HTTP, the server process), with the same concurrency; and the
    client's CPU ms per request. `old_path` replays the request path before issue 14's fix:
    the frames as a plain list (JSON-encoded for every request) and the whole request encoded
    and hashed once more for a cache key, as `BaseChatModel.chat` did even without a cache."""
    model = OpenAIChatModel("scripted", base_url, concurrency=concurrency)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        messages = frames_messages(f"question {i}", videos[i % len(videos)])
        async with gate:  # the runner's call: a model without a cache hashes no frames
            if old_path:
                messages = [{**m, "content": list(m["content"])} for m in messages]
                request_key(model.name, messages, None, 0.0, 512, model.seed)
            await model.chat(messages, temperature=0.0, max_tokens=512)

    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    await model.aclose()
    return wall, cpu / n * 1000


async def one_run(bench: Any, cfg: Any, out: Path, base_url: str, items: list[Any],
                  videos: Path) -> Any:
    # as `rewatch eval run` does it: the runner owns the (cheaply keyed) response cache
    model = OpenAIChatModel("scripted", base_url, concurrency=cfg.eval.concurrency)
    cache = ResponseCache(out / "cache.sqlite")
    try:
        return await EvalRunner(bench, cfg, out, model, videos_dir=videos, cache=cache
                                ).run(items)
    finally:
        await model.aclose()
        cache.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--questions", type=int, default=1000)
    p.add_argument("--videos", type=int, default=20)
    p.add_argument("--latency", type=float, default=0.5)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--frames", type=int, default=192)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--old-path", action="store_true",
                   help="Also time the request path as it was before issue 14's fix.")
    p.add_argument("--frame-cache", type=int, default=0, metavar="ROUNDS",
                   help="Then a run that fills eval.frame_cache_dir (direct mode, as the first "
                        "run) and ROUNDS pairs of think-mode runs (another prompt on the same "
                        "videos) without and with that cache, with the load average around "
                        "each.")
    p.add_argument("--json", type=Path, help="Also write the figures here.")
    a = p.parse_args()
    if a.quick:
        a.questions, a.videos = 200, 8
    work = CACHE_DIR / "bench_eval"
    videos = work / "videos"
    seconds = a.frames / 2 + 4  # enough for `frames` samples at 2 fps
    t0 = time.perf_counter()
    vids = make_videos(videos, a.videos, seconds)
    print(f"videos: {a.videos} x {seconds:.0f} s (ready in {time.perf_counter() - t0:.1f} s)")
    data = write_minerva(work / "minerva_bench.json", vids, a.questions)
    cfg = load_config(None, [f"video.max_frames={a.frames}", f"eval.concurrency={a.concurrency}",
                             f"eval.prepare_workers={a.workers}", "eval.mode=direct"])
    cfg.video.root = str(videos.resolve())
    bench = get_benchmark("minerva")
    items = bench.load(data, videos)

    t_cpu, prepared = cpu_bound(cfg, [str(videos / f"{v}.mp4") for v in vids])
    cpu_rate = a.questions / t_cpu
    server_rate = a.concurrency / a.latency
    bound = min(cpu_rate, server_rate)

    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(a.latency)],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline().split()[1])  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}/v1"
        t_req, cpu_req = asyncio.run(requests_alone(base, prepared, a.questions,
                                                    a.concurrency))
        old = None
        if a.old_path:  # the same requests the old way, right after, on the same machine
            old = asyncio.run(requests_alone(base, prepared, a.questions, a.concurrency,
                                             old_path=True))
        del prepared
        out = work / "run"
        shutil.rmtree(out, ignore_errors=True)
        first = asyncio.run(one_run(bench, cfg, out, base, items, videos))
        rerun = asyncio.run(one_run(bench, cfg, out, base, items, videos))
        side: list[dict[str, Any]] = []
        if a.frame_cache:
            cache_dir = work / "frame_cache"
            shutil.rmtree(cache_dir, ignore_errors=True)
            Mode = Literal["direct", "think"]
            runs: list[tuple[Mode, bool, str]] = [("direct", True, "fills the frame cache")]
            for _ in range(a.frame_cache):  # another prompt on the same videos, without/with
                runs += [("think", False, "frames prepared"), ("think", True, "frame cache")]
            for mode, cached, what in runs:
                c = cfg.model_copy(deep=True)
                c.eval.mode = mode
                c.eval.frame_cache_dir = str(cache_dir) if cached else None
                shutil.rmtree(out, ignore_errors=True)
                load0 = os.getloadavg()[0]
                res = asyncio.run(one_run(bench, c, out, base, items, videos))
                side.append({"mode": mode, "frames": what, "qps": a.questions / res.wall_s,
                             "prepare_s": res.prepare_s, "failed": res.failed,
                             "load_start": load0, "load_end": os.getloadavg()[0]})
    finally:
        proc.terminate()
        proc.wait()
    rate = a.questions / first.wall_s
    req_rate = a.questions / t_req
    # preparation and the request path share the same cores: their times add up
    shared = 1 / (1 / cpu_rate + 1 / req_rate)
    figures = {
        "questions": a.questions, "videos": a.videos, "frames": a.frames,
        "latency_s": a.latency, "concurrency": a.concurrency, "prepare_workers": a.workers,
        "server_bound_qps": server_rate, "cpu_prepare_all_s": t_cpu, "cpu_bound_qps": cpu_rate,
        "lower_bound_qps": bound, "achieved_qps": rate, "ratio_to_bound": rate / bound,
        "requests_alone_s": t_req, "requests_alone_qps": req_rate,
        "client_cpu_ms_per_request": cpu_req, "shared_cpu_bound_qps": shared,
        "old_path_requests_alone_s": old and old[0], "old_path_client_cpu_ms": old and old[1],
        "ratio_to_shared_bound": rate / min(shared, server_rate),
        "first_run_s": first.wall_s, "answered": first.answered, "failed": first.failed,
        "videos_prepared": first.videos_prepared, "rerun_s": rerun.wall_s,
        "rerun_calls": rerun.calls, "rerun_fraction": rerun.wall_s / first.wall_s,
        "frame_cache_runs": side,
    }
    print(f"server bound: {server_rate:.1f} q/s ({a.concurrency} / {a.latency} s)")
    print(f"CPU bound:    {cpu_rate:.1f} q/s (all {a.videos} videos x {a.frames} frames prepared "
          f"alone in {t_cpu:.1f} s with {a.workers} threads)")
    print(f"achieved:     {rate:.1f} q/s ({a.questions} questions in {first.wall_s:.1f} s; "
          f"{first.videos_prepared} videos prepared once each; {first.failed} failed) = "
          f"{rate / bound:.1%} of the lower bound")
    print(f"request path alone (frames ready): {req_rate:.1f} q/s ({t_req:.1f} s); with "
          f"preparation on the same cores: {shared:.1f} q/s -> achieved = "
          f"{rate / min(shared, server_rate):.1%} of that")
    print(f"client CPU per request: {cpu_req:.2f} ms")
    if old is not None:
        print(f"old request path (frames encoded per request + hashed for a key): "
              f"{a.questions / old[0]:.1f} q/s ({old[0]:.1f} s), client CPU {old[1]:.2f} ms per "
              f"request, vs {req_rate:.1f} q/s and {cpu_req:.2f} ms now")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"rerun of the finished run: {rerun.wall_s:.2f} s = {rerun.wall_s / first.wall_s:.1%} "
          f"of the first ({rerun.calls} calls)")
    for x in side:
        print(f"{x['mode']:6s} run, {x['frames']:21s}: {x['qps']:.1f} q/s = "
              f"{x['qps'] / bound:.1%} of the lower bound, {x['qps'] / server_rate:.1%} of the "
              f"server bound (preparing {x['prepare_s']:.1f} s in all; load "
              f"{x['load_start']:.2f} -> {x['load_end']:.2f}; {x['failed']} failed)")
    if a.json:
        a.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
