"""Kill the main job (`rewatch demo`) with SIGKILL at a random request inside each of its model
stages (Stage 1 captions, Stage 2 questions and MCQs, Stage 3 chains, the O&R reward), rerun
it: the records equal those of an uninterrupted run (same ids, same content), and no request
for a finished item reaches the model again (only the one in flight at the kill is asked twice).

The videos are real generated clips captioned by the default object captioner (in process).
Every LLM role is the SCRIPTED stand-in `ScriptedPipelineModel` (tests/pipeline_scripted.py,
not a model) behind the loopback ScriptedTestServer, so each request is counted at the server,
the stage it belongs to is known, and the kill lands on a chosen request.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pipeline_scripted import ScriptedPipelineModel, run_records, stage_of

import rewatch
from rewatch.models.scripted_server import ScriptedTestServer
from rewatch.samples import SHAPES_COUNT, SHAPES_CUTS, synthetic_video

RECORDS = ("videos.jsonl", "captions.jsonl", "qa.jsonl", "mcq.jsonl", "cot.jsonl",
           "rejected.jsonl", "rewards.jsonl", "export/trl/sft_train.jsonl",
           "export/trl/sft_val.jsonl", "export/trl/grpo_train.jsonl", "export/trl/grpo_val.jsonl")
STAGES = ("caption", "qa", "cot", "reward")  # the demo's model stages, in the order it runs them
REPO = Path(rewatch.__file__).resolve().parents[1]


class KillSwitch:
    """The server's responder: the scripted model, which can SIGKILL the demo process at its
    n-th request of a run (before answering it, so that request is in flight when it dies)."""

    def __init__(self) -> None:
        self.model = ScriptedPipelineModel()
        self.lock = threading.Lock()
        self.pid: int | None = None
        self.kill_at: int | None = None
        self.seen = 0

    def arm(self, pid: int, kill_at: int | None) -> None:
        with self.lock:
            self.pid, self.kill_at, self.seen = pid, kill_at, 0

    def __call__(self, body: dict[str, Any]) -> str:
        with self.lock:
            n, self.seen = self.seen, self.seen + 1
            if n == self.kill_at and self.pid is not None:
                os.kill(self.pid, signal.SIGKILL)
                return ""  # nobody is waiting for this reply any more
        return self.model(body)


def request_key(body: dict[str, Any]) -> str:
    """One request as the response cache sees it: model, messages, schema, sampling."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def overrides(url: str) -> list[str]:
    """Every LLM role of the demo config (llm, probe_small) on the scripted server."""
    out = []
    for name in ("llm", "probe_small"):
        for key, value in (("backend", "openai"), ("base_url", url), ("model", f"scripted-{name}"),
                           ("max_retries", 0), ("timeout_s", 120), ("concurrency", 1)):
            out += ["--set", f"models.{name}.{key}={value}"]
    # one call at a time (the demo config runs 4): the kill is placed by the request order,
    # which concurrent calls do not fix
    return out + ["--set", "synth.qa.questions_per_video=3", "--set", "synth.concurrency=1"]


def demo(videos: Path, out: Path, srv: ScriptedTestServer, switch: KillSwitch,
         kill_at: int | None = None) -> tuple[int, list[dict[str, Any]]]:
    """Run `rewatch demo` to the end (or to the kill): its exit code and the requests it sent."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    start = len(srv.requests)
    proc = subprocess.Popen(
        [sys.executable, "-m", "rewatch.cli", "demo", "--videos", str(videos), "--out", str(out),
         *overrides(srv.base_url)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    switch.arm(proc.pid, kill_at)
    _, err = proc.communicate(timeout=600)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"demo exited {proc.returncode}: {err[-3000:]}")
    return proc.returncode, srv.requests[start:]


def records(out: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """The stages' records and the SFT/RL exports of a finished run, which has a report."""
    assert (out / "report.html").exists()
    return run_records(out, RECORDS)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigkill_in_each_stage_of_the_demo_then_rerun_matches_an_uninterrupted_run(tmp_path):
    videos = tmp_path / "videos"
    for spec in (SHAPES_CUTS, SHAPES_COUNT):
        synthetic_video(videos / f"{spec.name}.mp4", spec)
    switch = KillSwitch()
    seed = int(os.environ.get("REWATCH_KILL_SEED", random.SystemRandom().randrange(10**6)))
    rng = random.Random(seed)
    t0 = time.monotonic()
    with ScriptedTestServer(switch) as srv:
        rc, sent = demo(videos, tmp_path / "reference", srv, switch)
        assert rc == 0
        reference = records(tmp_path / "reference")
        keys = [request_key(b) for b in sent]
        stages = [stage_of(b) for b in sent]
        # the reference run yields at every step, so every stage below is killed for real
        # (rejections are compared but may be none: which lines become questions is a seeded
        # draw keyed by the video ids, which hash the videos' paths)
        for name in RECORDS:
            if name != "rejected.jsonl":
                assert reference[name], f"the reference run wrote no {name}"
        assert set(reference["rewards.jsonl"]) == set(reference["cot.jsonl"])
        ranges = {s: [i for i, x in enumerate(stages) if x == s] for s in STAGES}
        assert all(ranges.values()), {s: len(r) for s, r in ranges.items()}
        assert stages == sorted(stages, key=STAGES.index), "stages ran out of order"

        kills = {}
        for stage in STAGES:
            out = tmp_path / f"killed-in-{stage}"
            kill_at = rng.choice(ranges[stage])
            kills[stage] = kill_at
            why = f"kill at request {kill_at} ({stage}), REWATCH_KILL_SEED={seed}"
            rc, before = demo(videos, out, srv, switch, kill_at)
            assert rc == -signal.SIGKILL, why
            # the run up to the kill asked what the reference asked, in the same order
            assert [request_key(b) for b in before] == keys[:kill_at + 1], why
            rc, after = demo(videos, out, srv, switch)
            assert rc == 0, why
            assert records(out) == reference, f"records differ from the reference after a {why}"
            # every reference request was asked once, the one in flight at the kill twice
            asked = Counter(request_key(b) for b in before + after)
            expected = Counter(keys) + Counter([keys[kill_at]])
            assert asked == expected, (
                f"{why}: {sum((asked - expected).values())} requests asked again, "
                f"{sum((expected - asked).values())} never asked")
    counts = {name.removesuffix(".jsonl"): len(v) for name, v in reference.items()}
    print(f"\nrecords {counts}; requests per stage "
          f"{ {s: f'{r[0]}-{r[-1]}' for s, r in ranges.items()} }; kills {kills} "
          f"(REWATCH_KILL_SEED={seed}); {time.monotonic() - t0:.0f} s")
