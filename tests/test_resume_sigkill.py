"""Kill a worker with SIGKILL mid-run, rerun it: nothing lost, no finished call repeated
(counted at the server), and no torn line breaks the next read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rewatch.models.scripted_server import ScriptedTestServer, messages_key
from rewatch.store import JsonlFile, stable_id

WORKER = Path(__file__).with_name("kill_worker.py")
N = 40


def _run(srv, out, cache):
    return subprocess.Popen([sys.executable, str(WORKER), srv.base_url, str(out), str(cache),
                             str(N)])


def test_sigkill_then_resume_repeats_no_finished_call(tmp_path):
    out, cache = tmp_path / "records.jsonl", tmp_path / "cache.sqlite"
    with ScriptedTestServer("a red ball rolls left. ", latency_s=0.05) as srv:
        proc = _run(srv, out, cache)
        deadline = time.time() + 60
        while (not out.exists() or out.read_text().count("\n") < 8) and time.time() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done_before = {r["i"] for r in JsonlFile(out).read()}
        assert 8 <= len(done_before) < N, "the kill should land mid-run"

        assert _run(srv, out, cache).wait(timeout=120) == 0

        records = list(JsonlFile(out).read())
        assert sorted(r["i"] for r in records) == list(range(N))  # each item exactly once
        for line in out.read_text().splitlines():
            json.loads(line)  # no torn line left behind
        for i in done_before:
            msgs = [{"role": "user", "content": f"describe item {i}"}]
            assert srv.by_messages[messages_key(msgs)] == 1, f"item {i} was asked twice"
        # at most the one request in flight at the kill is paid for again
        assert len(srv.requests) <= N + 1
        assert {r["id"] for r in records} == {stable_id("item", i) for i in range(N)}
