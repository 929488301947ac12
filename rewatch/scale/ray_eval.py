"""`rewatch eval run --backend ray`: the eval runner's questions asked from Ray actors.

The items are grouped as the local runner groups them (frames mode: one video's questions
together, its frames decoded once, on the worker; otherwise one question each) and each group
runs through `EvalRunner.ask_all` on a `StageWorker` of a `WorkerPool`; this process appends
the predictions and errors, then scores the run as the local backend does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rewatch.eval.inputs import clip_of
from rewatch.scale.ray_backend import WorkerPool, connect, shutdown

if TYPE_CHECKING:
    from rewatch.eval.benchmarks.base import EvalItem
    from rewatch.eval.run import EvalRunner, RunResult


def ask_on_ray(runner: EvalRunner, todo: list[EvalItem], result: RunResult) -> None:
    """Ask `todo` on Ray for `runner` (same records and counts as `runner.ask_all`)."""
    groups: dict[str, list[str]] = {}
    for it in todo:
        key = f"video:{it.video}:{clip_of(it)}" if runner.cfg.eval.inputs == "frames" else it.id
        groups.setdefault(key, []).append(it.id)
    shared = {"bench": runner.bench, "out": str(runner.dir.root),
              "videos_dir": str(runner.videos_dir), "captions": runner.captions,
              "items": {it.id: it for it in todo}}

    def done(key: str) -> None:
        for _ in groups[key]:
            runner.on_done()

    started = connect(runner.cfg)
    try:
        with WorkerPool(runner.cfg, runner.dir, runner.cfg.ray.actors) as pool:
            got = pool.run_items("eval", [(k, {"ids": ids}) for k, ids in groups.items()],
                                 shared, on_result=done)
    finally:
        shutdown(started)
    runner.preds._ids = None  # appended by the driver's own JsonlFile: read the ids again
    result.answered += got["answered"]
    result.failed += got["failed"] + got["errors"]
    result.calls += got["calls"]
    result.cache_hits += got["cache_hits"]
