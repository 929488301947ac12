"""Kill the synthesis run (`rewatch synth`, what the demo runs) with SIGKILL at a random point
in each stage, rerun it: the final records equal those of an uninterrupted run (same ids, same
content), and no request for a finished item reaches the model again.

The LLM is the real embedded SmolLM2, served to the demo process through a scripted loopback
server (`ScriptedTestServer` whose replies come from llama.cpp) so every request is counted at
the server and the kill lands at a chosen request.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from rewatch.models.local import load_llama, smollm2_path
from rewatch.models.scripted_server import ScriptedTestServer, messages_key
from rewatch.samples import SHAPES_CUTS, synthetic_video

RECORDS = ("videos.jsonl", "captions.jsonl", "qa.jsonl", "mcq.jsonl", "cot.jsonl",
           "rejected.jsonl")
COT_SCHEMAS = ("Reasoner", "Observation", "Converted")


class EmbeddedReplies:
    """Answers a chat request with the real embedded model; can SIGKILL a process at a given
    request index (before answering it, so that request is in flight when the process dies)."""

    def __init__(self) -> None:
        self.llama = load_llama(smollm2_path(), 4096, None)
        self.titles: list[str] = []
        self.kill_at: int | None = None
        self.pid: int | None = None
        self.lock = threading.Lock()

    def __call__(self, body: dict) -> str:
        fmt = body.get("response_format") or {}
        with self.lock:
            self.titles.append(str(fmt.get("schema", {}).get("title")))
            n = len(self.titles) - 1
            if self.kill_at is not None and n >= self.kill_at and self.pid is not None:
                os.kill(self.pid, signal.SIGKILL)
                self.kill_at = None
                return ""  # nobody is waiting for this reply any more
            # llama.cpp is not thread-safe: one generation at a time
            out = self.llama.create_chat_completion(
                messages=body["messages"], response_format=fmt or None,
                temperature=body.get("temperature", 0.0), max_tokens=body.get("max_tokens"),
                seed=body.get("seed"))
        return out["choices"][0]["message"]["content"] or ""


def stage_of(title: str, seen_cot: bool) -> str:
    if title == "Summary":
        return "caption"
    if title.startswith(COT_SCHEMAS):
        return "cot"
    return "after" if seen_cot else "qa"


def stage_ranges(titles: list[str]) -> dict[str, list[int]]:
    ranges: dict[str, list[int]] = {"caption": [], "qa": [], "cot": [], "after": []}
    seen_cot = False
    for i, t in enumerate(titles):
        s = stage_of(t, seen_cot)
        seen_cot = seen_cot or s == "cot"
        ranges[s].append(i)
    return ranges


def synth(folder: Path, out: Path, url: str, replies: EmbeddedReplies) -> int:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rewatch.cli", "synth", str(folder), "--out", str(out),
         "--set", "models.llm.backend=openai", "--set", f"models.llm.base_url={url}",
         "--set", "models.llm.structured=json_object", "--set", "models.llm.max_retries=0",
         "--set", "models.llm.timeout_s=900",
         "--set", "synth.qa.questions_per_video=2", "--set", "synth.concurrency=1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    replies.pid = proc.pid
    _, err = proc.communicate(timeout=1800)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(err[-3000:])
    return proc.returncode


def records(out: Path) -> dict[str, dict[str, dict]]:
    """Per file: id -> record, without run-specific fields (wall times)."""
    result = {}
    for name in RECORDS:
        path = out / name
        rows = [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
        result[name] = {r["id"]: {k: v for k, v in r.items() if "seconds" not in k}
                        for r in rows}
    return result


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_sigkill_in_each_stage_then_rerun_matches_an_uninterrupted_run(tmp_path):
    folder = tmp_path / "videos"
    synthetic_video(folder / "shapes.mp4", SHAPES_CUTS)
    replies = EmbeddedReplies()
    with ScriptedTestServer(replies) as srv:
        assert synth(folder, tmp_path / "reference", srv.base_url, replies) == 0
        reference = records(tmp_path / "reference")
        ranges = stage_ranges(replies.titles)
        n_reference = len(replies.titles)
        assert ranges["caption"] and ranges["qa"], ranges  # the embedded run asks in both
        rng = random.Random(7)
        killed_stages = []
        for stage in ("caption", "qa", "cot"):
            if not ranges[stage]:
                continue  # the tiny model left this stage nothing to do (reported below)
            out = tmp_path / f"killed-{stage}"
            start = len(srv.requests)
            replies.kill_at = rng.choice(ranges[stage])
            assert synth(folder, out, srv.base_url, replies) == -signal.SIGKILL
            assert synth(folder, out, srv.base_url, replies) == 0
            assert records(out) == reference, f"records differ after a kill in {stage}"
            mine = srv.requests[start:]
            counts: dict[str, int] = {}
            for body in mine:
                key = messages_key(body["messages"])
                counts[key] = counts.get(key, 0) + 1
            repeated = [k for k, c in counts.items() if c > 1]
            # only the request in flight at the kill may be asked again
            assert len(repeated) <= 1, f"{len(repeated)} requests repeated after a kill in {stage}"
            assert len(mine) <= n_reference + 1
            killed_stages.append(stage)
    print(f"killed in {killed_stages}; stage requests {({k: len(v) for k, v in ranges.items()})}")
