"""`backend: ray`: Stages 1-3 on a local Ray instance (`ray.init(num_cpus=2)`) write the same
records as the local asyncio backend (same ids, same content, order aside), a Ray worker
SIGKILLed mid-item is retried and the run completes with nothing lost or written twice, and an
unreachable Ray address is a clear error.

The videos are generated clips captioned by the object captioner inside the Ray workers; every
LLM role is the SCRIPTED stand-in `ScriptedPipelineModel` (tests/pipeline_scripted.py, not a
model) behind the loopback ScriptedTestServer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray", reason="the Ray backend needs the `ray` extra")
psutil = pytest.importorskip("psutil")

from pipeline_scripted import ScriptedPipelineModel, run_records, stage_of  # noqa: E402

import rewatch  # noqa: E402
from rewatch.config import load_config  # noqa: E402
from rewatch.models.scripted_server import ScriptedTestServer, last_user_text  # noqa: E402
from rewatch.samples import SHAPES_COUNT, SHAPES_CUTS, synthetic_video  # noqa: E402
from rewatch.synth.pipeline import synthesize  # noqa: E402

RECORDS = ("videos.jsonl", "captions.jsonl", "qa.jsonl", "mcq.jsonl", "cot.jsonl",
           "rejected.jsonl")
REPO = Path(rewatch.__file__).resolve().parents[1]


def config(url: str, *extra: str) -> Any:
    """The demo config with every LLM role (llm, probe_small) on the scripted server."""
    sets = [f"models.{name}.{k}={v}" for name in ("llm", "probe_small") for k, v in (
        ("backend", "openai"), ("base_url", url), ("model", f"scripted-{name}"),
        ("max_retries", 0), ("timeout_s", 120))]
    # max_chains below the MCQ count: which MCQs Stage 3 takes must not depend on file order
    return load_config("demo", [*sets, "synth.qa.questions_per_video=3", "synth.cot.max_chains=6",
                                *extra])


def records(out: Path) -> dict[str, dict[str, dict[str, Any]]]:
    return run_records(out, RECORDS)


class ActorKiller:
    """The server's responder: the scripted model, which can SIGKILL the Ray worker process
    that sent the n-th request of a stage (before answering, so that worker dies mid-item).
    One server serves every run of this module: its URL is part of the stages' ids."""

    def __init__(self) -> None:
        self.model = ScriptedPipelineModel()
        self.lock = threading.Lock()
        self.port = 0
        self.arm(None, 0)

    def arm(self, stage: str | None, nth: int) -> None:
        with self.lock:
            self.stage, self.nth, self.seen = stage, nth, 0
            self.killed: list[str] = []

    def __call__(self, body: dict[str, Any]) -> str:
        with self.lock:
            if self.stage is not None and stage_of(body) == self.stage:
                self.seen += 1
                if self.seen == self.nth:
                    self.killed = kill_ray_clients(self.port)
                    return ""  # the sender is dead
        return self.model(body)


def kill_ray_clients(port: int) -> list[str]:
    """SIGKILL every Ray worker process with a connection open to 127.0.0.1:`port`."""
    killed = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            title = " ".join(p.info["cmdline"] or [])
            if title.startswith("ray::") and any(
                    c.raddr and c.raddr.port == port for c in p.net_connections("tcp")):
                os.kill(p.pid, signal.SIGKILL)
                killed.append(title)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return killed


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("videos")
    return [synthetic_video(folder / f"{s.name}.mp4", s).path for s in (SHAPES_CUTS,
                                                                        SHAPES_COUNT)]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20,
             configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def server():
    killer = ActorKiller()
    with ScriptedTestServer(killer) as srv:
        killer.port = int(srv.base_url.rsplit(":", 1)[1].split("/")[0])
        yield srv, killer


@pytest.fixture(scope="module")
def reference(videos, server, tmp_path_factory) -> dict[str, dict[str, dict[str, Any]]]:
    """Stages 1-3 with the local asyncio backend."""
    out = tmp_path_factory.mktemp("local")
    asyncio.run(synthesize(videos, config(server[0].base_url), out))
    return records(out)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ray_backend_writes_the_local_backends_records(videos, server, local_ray, reference,
                                                       tmp_path):
    srv, _killer = server
    for name in RECORDS:
        if name != "rejected.jsonl":
            assert reference[name], f"the local run wrote no {name}"
    out = tmp_path / "ray"
    cfg = config(srv.base_url, "backend=ray", "ray.actors=2", "ray.concurrency=4")
    result = asyncio.run(synthesize(videos, cfg, out))
    assert records(out) == reference
    assert result.counts["cot"]["kept"] == len(reference["cot.jsonl"])
    asked = len(srv.requests)
    again = asyncio.run(synthesize(videos, cfg, out))  # resume: everything is finished
    assert len(srv.requests) == asked, "a finished run asked the model again"
    assert again.counts["caption"]["skipped"] == len(videos)
    assert again.counts["qa"]["videos_skipped"] == len(reference["captions.jsonl"])
    assert again.counts["cot"]["skipped"] == again.counts["cot"]["total"] > 0
    assert records(out) == reference


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ray_shards_per_worker_files_merge_into_the_local_backends_records(
        videos, server, local_ray, reference, tmp_path, caplog):
    """`ray.shards`: each worker appends its records to its own qa.shard-<worker>.jsonl (and so
    on), merged by id after each stage: the same files as the driver-written run, no shard
    left over."""
    caplog.set_level(logging.INFO, logger="rewatch.store")
    out = tmp_path / "ray-shards"
    cfg = config(server[0].base_url, "backend=ray", "ray.actors=2", "ray.shards=true")
    asyncio.run(synthesize(videos, cfg, out))
    merged = [r.getMessage() for r in caplog.records if "merged the workers' shards" in
              r.getMessage()]
    assert len(merged) == 3 and "'cot.jsonl'" in merged[-1], merged  # one merge per stage
    assert not list(out.glob("*.shard-*"))
    assert records(out) == reference


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_ray_worker_killed_mid_item_is_retried_nothing_lost_or_doubled(
        videos, server, local_ray, reference, tmp_path):
    srv, killer = server
    killer.arm("qa", 5)  # the 5th Stage 2 request: its sender (a Ray worker) dies
    out = tmp_path / "ray-killed"
    cfg = config(srv.base_url, "backend=ray", "ray.actors=1", "ray.concurrency=2",
                 "ray.max_retries=2")
    try:
        result = asyncio.run(synthesize(videos, cfg, out))
        killed = killer.killed
    finally:
        killer.arm(None, 0)
    # (an idle worker of an earlier stage still connected would be killed too: harmless)
    assert any("StageWorker" in k for k in killed), killed
    assert result.counts["qa"]["errors"] == 0
    assert records(out) == reference


def test_unreachable_ray_address_is_a_clear_error(tmp_path):
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:9",
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get(
               "PYTHONPATH")])])}
    video = synthetic_video(tmp_path / "v.mp4", SHAPES_COUNT).path
    done = subprocess.run([sys.executable, "-m", "rewatch.cli", "synth", str(video), "--out",
                           str(tmp_path / "run"), "--backend", "ray"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "cannot reach the Ray cluster at 127.0.0.1:9" in done.stdout + done.stderr
    assert not (tmp_path / "run" / "captions.jsonl").exists()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_eval_run_on_ray_writes_the_local_backends_predictions(local_ray, tmp_path):
    """`rewatch eval run --backend ray` (frames mode: each video's frames decoded once on a
    worker): the same predictions and scores as the local runner."""
    import eval_fixtures as fx

    from rewatch.eval.benchmarks import get_benchmark
    from rewatch.eval.run import EvalRunner
    from rewatch.models.registry import build_model

    vids = fx.make_videos(tmp_path / "videos")
    data = fx.minerva(tmp_path, vids)
    bench = get_benchmark("minerva")
    items = bench.load(data, tmp_path / "videos")

    def answer(body: dict[str, Any]) -> str:  # scripted: a letter from the clip number
        n = int(re.search(r"clip (\d+)", last_user_text(body)).group(1))
        return f"<think>re-watching</think><answer>{'ABCDE'[n % 5]}</answer>"

    def run(srv: ScriptedTestServer, out: Path, *extra: str) -> Any:
        cfg = load_config(None, ["video.max_frames=8", "eval.concurrency=4",
                                 "models.eval_model.backend=openai",
                                 f"models.eval_model.base_url={srv.base_url}",
                                 "models.eval_model.model=scripted", "eval.model=eval_model",
                                 *extra])
        cfg.video.root = str((tmp_path / "videos").resolve())

        async def go() -> Any:
            model = build_model(cfg.models["eval_model"], None)
            try:
                return await EvalRunner(bench, cfg, out, model,
                                        videos_dir=tmp_path / "videos").run(items)
            finally:
                await model.aclose()

        return asyncio.run(go())

    def predictions(out: Path) -> dict[str, dict[str, Any]]:
        rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
        assert len({r["id"] for r in rows}) == len(rows) == len(items)
        return {r["id"]: {k: v for k, v in r.items() if k != "latency_s"} for r in rows}

    with ScriptedTestServer(answer) as srv:
        local = run(srv, tmp_path / "local")
        asked = len(srv.requests)
        on_ray = run(srv, tmp_path / "ray", "backend=ray", "ray.actors=2")
        # the actors share the run's response cache (the local run here has none): a request
        # already made is answered from it, or joins the identical one in flight, so the Ray
        # run sends at most the local count (one fresh-clone CI run sent 9 of 12)
        sent = len(srv.requests) - asked
        assert 0 < sent and sent + on_ray.cache_hits <= asked
        again = run(srv, tmp_path / "ray", "backend=ray")  # resume: nothing left to ask
        assert len(srv.requests) == asked + sent and again.already_done == len(items)
    assert predictions(tmp_path / "ray") == predictions(tmp_path / "local")
    assert on_ray.answered == local.answered == len(items) and on_ray.failed == 0
    assert on_ray.scores["strict"].correct == local.scores["strict"].correct > 0
