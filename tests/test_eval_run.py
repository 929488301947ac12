"""The run path end to end: frames / video_url / text-proxy inputs against a scripted loopback
server, the real embedded model in text-proxy mode, resume after a kill without repeated calls,
rescoring without a model, and errors that never stop a run."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import eval_fixtures as fx
import pytest

from rewatch.config import Config, load_config
from rewatch.eval.benchmarks import get_benchmark
from rewatch.eval.inputs import load_captions
from rewatch.eval.run import EvalRunner, RunMismatch, read_predictions
from rewatch.models.cache import ResponseCache
from rewatch.models.openai_compat import OpenAIChatModel
from rewatch.models.scripted_server import ScriptedTestServer, last_user_text, messages_key
from rewatch.video.sampling import frame_indices, load_image_part, smart_nframes

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    tmp = tmp_path_factory.mktemp("evalrun")
    return tmp, fx.make_videos(tmp / "videos")


def scripted_answer(body: dict[str, Any]) -> str:
    """Scripted (not a model): right on even clips, wrong on clip 1, no answer otherwise."""
    m = re.search(r"clip (\d+)", last_user_text(body))
    i = int(m.group(1)) if m else -1
    if i % 2 == 0:
        return f"<think>re-watching</think><answer>{'ABCDE'[i % 5]}</answer>"
    return "<answer>E</answer>" if i == 1 else "I cannot decide."


def config(tmp: Path, *overrides: str) -> Config:
    cfg = load_config(None, ["video.max_frames=8", "eval.concurrency=4", *overrides])
    cfg.video.root = str((tmp / "videos").resolve())
    return cfg


def run(bench: str, data: Path, tmp: Path, out: Path, model: Any, cfg: Config,
        protocol: str = "long", limit: int | None = None, **kw: Any) -> Any:
    """One run in one event loop; `model` is a ChatModel or a function making one (closed
    after the run: its HTTP client belongs to this loop)."""
    b = get_benchmark(bench, protocol=protocol)
    items = b.load(data, tmp / "videos")[:limit]

    async def go() -> Any:
        m = model() if callable(model) else model
        try:
            return await EvalRunner(b, cfg, out, m, videos_dir=tmp / "videos", **kw).run(items)
        finally:
            if callable(model):
                await m.aclose()

    return asyncio.run(go())


def scripted(srv: ScriptedTestServer, **kw: Any) -> Any:
    return lambda: OpenAIChatModel("scripted", srv.base_url, **kw)


def test_frames_mode_end_to_end(env: tuple[Path, list[str]], tmp_path: Path) -> None:
    tmp, vids = env
    data = fx.minerva(tmp, vids)
    with ScriptedTestServer(scripted_answer) as srv:
        res = run("minerva", data, tmp, tmp_path / "run", scripted(srv), config(tmp))
    assert len(srv.requests) == 6 and res.answered == 6 and res.failed == 0
    assert res.videos_prepared == 4  # each video's frames prepared once, shared by its questions
    s = res.scores["strict"]
    assert (s.correct, s.no_answer, s.missing) == (3, 2, 0)  # clips 0, 2, 4 right; 3, 5 none
    off = res.scores["official"]  # the default headline: MINERVA guesses for clips 3 and 5
    assert res.score is off and off.guessed == 2 and off.no_answer == 0 and off.n == 6
    body = srv.requests[0]
    content = body["messages"][0]["content"]
    images = [p for p in content if p["type"] == "image_url"]
    stamps = [p["text"] for p in content if p["type"] == "text"][:-1]
    # vid0: 24 frames at 8 fps -> 6 frames at 2 fps (qwen-vl-utils rule), each 28-aligned
    assert len(images) == smart_nframes(24, 8.0, fps=2.0, max_frames=8) == 6
    # frames 0, 5, 9, 14, 18, 23 of 24 at 8 fps, labelled with their MM:SS time
    assert frame_indices(24, 6) == [0, 5, 9, 14, 18, 23]
    assert stamps == ["[00:00]", "[00:01]", "[00:01]", "[00:02]", "[00:02]", "[00:03]"]
    img = load_image_part(images[0])
    assert img.width % 28 == 0 and img.height % 28 == 0
    assert "The video lasts 00:00-00:03." in content[-1]["text"]
    assert "<answer></answer>" in content[-1]["text"]  # think mode is the default
    preds = [json.loads(x) for x in (tmp_path / "run/predictions.jsonl").read_text().splitlines()]
    assert {p["id"] for p in preds} == {f"m{i}" for i in range(6)}
    assert all(p["prompt"] == "think" for p in preds)
    scores = json.loads((tmp_path / "run/scores.json").read_text())
    assert scores["scores"]["strict"]["no_answer"] == 2 and scores["meta"]["bench"] == "minerva"
    assert scores["extraction"] == "official" and scores["score"]["mode"] == "official"
    scored = [json.loads(x) for x in (tmp_path / "run/scored.jsonl").read_text().splitlines()]
    assert len(scored) == 12 and {r["mode"] for r in scored} == {"official", "strict"}
    by = {(r["id"], r["mode"]): r for r in scored}
    assert by[("m3", "strict")]["extracted"] is None and by[("m3", "official")]["guessed"]
    assert by[("m0", "strict")]["correct"] and by[("m0", "official")]["correct"]
    assert by[("m0", "strict")]["reply"] == by[("m0", "official")]["reply"]


def test_video_url_mode_and_official_holmes_prompt(env: tuple[Path, list[str]],
                                                   tmp_path: Path) -> None:
    tmp, vids = env
    data = fx.holmes(tmp, vids)
    with ScriptedTestServer("<think>x</think><answer>A</answer>") as srv:
        res = run("video-holmes", data, tmp, tmp_path / "run", scripted(srv),
                  config(tmp, "eval.inputs=video_url"))
    assert res.score.correct == 2  # q0 and q6 have answer A
    body = next(b for b in srv.requests if "event 0 happen" in last_user_text(b))
    part = body["messages"][0]["content"][0]
    assert part["type"] == "video_url"
    assert part["video_url"]["url"] == (tmp / "videos/vid0.mp4").resolve().as_uri()
    assert part["fps"] == 2.0 and part["max_frames"] == 8 and part["max_pixels"] == 128 * 28 * 28
    text = body["messages"][0]["content"][1]["text"]
    assert text.startswith("Based on the given video, reason and answer the single-choice")
    assert "A: reason A, B: reason B" in text
    assert body["temperature"] == 0.1  # Video-Holmes' official decoding temperature


def test_text_proxy_counting_with_clue(env: tuple[Path, list[str]], tmp_path: Path) -> None:
    tmp, vids = env
    data = fx.counting(tmp, vids)
    caps = load_captions(fx.captions(tmp, tmp / "videos", vids))
    cfg = config(tmp, "eval.inputs=text_proxy", "eval.mode=direct",
                 "eval.counting_protocol=clue")
    with ScriptedTestServer("There are 3.") as srv:
        res = run("cg-av-counting", data, tmp, tmp_path / "run", scripted(srv), cfg,
                  protocol="clue", captions=caps)
    text = next(b["messages"][0]["content"] for b in srv.requests
                if "clip 0?" in b["messages"][0]["content"])
    assert isinstance(text, str) and "You cannot see the video" in text
    assert "[00:00-00:02] black background; shapes of vid0 appear" in text
    assert "fixture ground truth" in text and "Annotated clue" in text
    assert "single integer" in text
    assert res.score.metrics["acc"] == 20.0 and res.score.metrics["oboa"] == 60.0


def test_errors_go_to_errors_jsonl_and_count_as_missing(env: tuple[Path, list[str]],
                                                        tmp_path: Path) -> None:
    tmp, vids = env
    rows = json.loads(fx.minerva(tmp, vids).read_text())
    rows[1]["video_id"] = "ghost"  # no such file
    data = tmp_path / "minerva.json"
    data.write_text(json.dumps(rows))
    with ScriptedTestServer(scripted_answer) as srv:
        res = run("minerva", data, tmp, tmp_path / "run", scripted(srv), config(tmp))
    assert res.failed == 1 and res.answered == 5 and res.score.missing == 1
    err = json.loads((tmp_path / "run/errors.jsonl").read_text().splitlines()[0])
    assert err["id"] == "m1" and err["error"] == "VideoError"


def test_cache_resume_and_rerun(env: tuple[Path, list[str]], tmp_path: Path) -> None:
    tmp, vids = env
    data = fx.minerva(tmp, vids)
    out = tmp_path / "run"
    cfg = config(tmp)
    with ScriptedTestServer(scripted_answer) as srv:
        def model() -> OpenAIChatModel:
            return OpenAIChatModel("scripted", srv.base_url)  # the runner owns the cache

        def cache() -> ResponseCache:
            return ResponseCache(out / "c.db")

        first = run("minerva", data, tmp, out, model(), cfg, cache=cache())
        assert first.calls == 6 and len(srv.requests) == 6
        # a kill between the cache write and the prediction write: the lines are gone...
        lines = (out / "predictions.jsonl").read_text().splitlines()
        (out / "predictions.jsonl").write_text("\n".join(lines[:2]) + "\n")
        again = run("minerva", data, tmp, out, model(), cfg, cache=cache())
        assert again.already_done == 2 and again.cache_hits == 4 and again.calls == 0
        assert len(srv.requests) == 6  # ...and no request reached the server again
        t0 = time.perf_counter()
        done = run("minerva", data, tmp, out, model(), cfg, cache=cache())  # nothing to do
        assert done.already_done == 6 and done.calls == 0 and done.cache_hits == 0
        assert time.perf_counter() - t0 < 0.5 * first.wall_s + 0.5
        assert done.score.to_dict() == first.score.to_dict()
        # the key names the video file, not its frames: touching the file asks again
        os.utime(tmp / "videos/vid0.mp4")
        (out / "predictions.jsonl").write_text("")
        touched = run("minerva", data, tmp, out, model(), cfg, cache=cache())
        assert touched.calls == 2 and touched.cache_hits == 4  # m0 and m4 are on vid0
        with pytest.raises(RunMismatch, match="mode"):
            run("minerva", data, tmp, out, model(), config(tmp, "eval.mode=direct"))


def test_cache_never_replays_another_model_or_video_file(env: tuple[Path, list[str]],
                                                         tmp_path: Path) -> None:
    tmp, vids = env
    shutil.copytree(tmp / "videos", tmp_path / "videos")  # this test replaces a video file
    data = fx.minerva(tmp_path, vids)
    cfg = config(tmp_path)
    db = tmp_path / "cache.db"

    def go(out: str, model: Any) -> Any:
        cache = ResponseCache(db)  # one cache file for every run below
        try:
            return run("minerva", data, tmp_path, tmp_path / out, model, cfg, cache=cache)
        finally:
            cache.close()

    def replies(out: str) -> set[str]:
        return set(read_predictions(tmp_path / out / "predictions.jsonl")[0].values())

    with ScriptedTestServer(scripted_answer) as a, ScriptedTestServer("<answer>B</answer>") as b:
        assert go("first", scripted(a)).calls == 6
        same = go("same", scripted(a))  # the same model and videos: answered from the cache
        assert (same.calls, same.cache_hits, len(a.requests)) == (0, 6, 6)
        # the same model name on another server is another model
        other_server = go("other_server", scripted(b))
        assert (other_server.calls, other_server.cache_hits, len(b.requests)) == (6, 0, 6)
        assert replies("other_server") == {"<answer>B</answer>"}
        # another model served by the same server
        other_model = go("other_model", lambda: OpenAIChatModel("other", a.base_url))
        assert (other_model.calls, other_model.cache_hits, len(a.requests)) == (6, 0, 12)
        # another video file under the same name (vid1's bytes written to vid0.mp4)
        shutil.copy(tmp_path / "videos/vid1.mp4", tmp_path / "videos/vid0.mp4")
        replaced = go("replaced", scripted(a))
        assert (replaced.calls, replaced.cache_hits) == (2, 4)  # m0 and m4 are on vid0
        asked = {re.search(r"clip (\d+)", last_user_text(m)).group(1) for m in a.requests[12:]}
        assert len(a.requests) == 14 and asked == {"0", "4"}


class HoldingServer(ScriptedTestServer):
    """Scripted server that answers `hold_after` requests, then holds every further one until
    released (so a client can be killed at a known point)."""

    def __init__(self, *a: Any, hold_after: int, **kw: Any):
        super().__init__(*a, **kw)
        self.hold_after: int | None = hold_after
        self.tickets = 0
        self.answered: list[str] = []  # message keys whose reply was sent
        self.received: list[str] = []  # message keys in the order requests arrived

    async def _chat(self, request: Any) -> Any:
        body = await request.json()
        self.received.append(messages_key(body["messages"]))
        while self.hold_after is not None and self.tickets >= self.hold_after:
            await asyncio.sleep(0.02)
        self.tickets += 1  # no await between the check and this line
        self.answered.append(messages_key(body["messages"]))

        async def again() -> dict[str, Any]:
            return body

        request.json = again
        return await super()._chat(request)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rewatch.cli", "eval", "run", *args]


def test_killed_run_resumes_without_repeating_calls(env: tuple[Path, list[str]],
                                                    tmp_path: Path) -> None:
    tmp, vids = env
    data = fx.minerva(tmp, vids, n=24, name="minerva24.json")
    caps = fx.captions(tmp, tmp / "videos", vids)
    out = tmp_path / "run"
    with HoldingServer(scripted_answer, hold_after=10) as srv:
        args = ["--bench", "minerva", "--data", str(data), "--videos", str(tmp / "videos"),
                "--model", srv.base_url, "--served-model", "scripted", "--inputs",
                "text_proxy", "--captions", str(caps), "--out", str(out),
                "--set", "eval.concurrency=4"]
        env_vars = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(_cli(*args), cwd=REPO, env=env_vars, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        preds = out / "predictions.jsonl"
        deadline = time.time() + 60
        while time.time() < deadline:
            if preds.exists() and len(preds.read_text().splitlines()) >= 10:
                break
            time.sleep(0.05)
        time.sleep(0.2)  # held requests are in flight now
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        answered_before = set(srv.answered)
        seen = len(srv.received)
        assert len(answered_before) == 10 and seen >= 10
        assert len(preds.read_text().splitlines()) == 10
        srv.hold_after = None  # release the held handlers (their client is dead)
        done = subprocess.run(_cli(*args), cwd=REPO, env=env_vars, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    resent = srv.received[seen:]
    assert len(resent) == 14  # only what was never answered
    assert not answered_before & set(resent)
    replies, _ = read_predictions(preds)
    assert len(replies) == 24 and len(preds.read_text().splitlines()) == 24
    assert "accuracy" in done.stderr + done.stdout


def test_score_cli_rescoring_without_a_model(env: tuple[Path, list[str]], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from rewatch.cli import app

    tmp, vids = env
    data = fx.minerva(tmp, vids)
    out = tmp_path / "run"
    out.mkdir()
    replies = ["<answer>A</answer>", "B", "nothing", "answer: D", "E", "A or B"]
    with open(out / "predictions.jsonl", "w") as f:
        for i, r in enumerate(replies):
            f.write(json.dumps({"id": f"m{i}", "reply": r}) + "\n")
    res = CliRunner().invoke(app, ["eval", "score", "--bench", "minerva", "--data", str(data),
                                   "--videos", str(tmp / "videos"), "--predictions",
                                   str(out / "predictions.jsonl"), "--json"])
    assert res.exit_code == 0, res.output
    both = json.loads(res.output[res.output.index("{"):])
    s = both["strict"]
    assert (s["correct"], s["no_answer"], s["missing"]) == (4, 2, 0)  # m0, m1, m3, m4 right
    # official (lmms-eval): "A or B" -> B (last capital), "nothing" -> a seeded guess
    o = both["official"]
    assert o["guessed"] == 1 and o["no_answer"] == 0 and o["seed"] == 0
    saved = json.loads((out / "scores.json").read_text())
    assert saved["run"]["rescored"] is True and set(saved["scores"]) == {"official", "strict"}
    res2 = CliRunner().invoke(app, ["eval", "score", "--bench", "minerva", "--data", str(data),
                                    "--videos", str(tmp / "videos"), "--predictions", str(out),
                                    "--extraction", "strict"])
    assert res2.exit_code == 0, res2.output
    assert res2.output.splitlines()[0].startswith("minerva [strict]: accuracy 66.67")
    assert json.loads((out / "scores.json").read_text())["extraction"] == "strict"


@pytest.mark.slow
def test_embedded_model_text_proxy(env: tuple[Path, list[str]], tmp_path: Path,
                                   embedded_llm: Any) -> None:
    """The real SmolLM2-135M on captions: mechanics and honest counts, not accuracy."""
    tmp, vids = env
    data = fx.holmes(tmp, vids)
    caps = load_captions(fx.captions(tmp, tmp / "videos", vids))
    cfg = config(tmp, "eval.inputs=text_proxy", "eval.mode=direct", "eval.max_tokens=12")
    calls0 = embedded_llm.stats["calls"]
    res = run("video-holmes", data, tmp, tmp_path / "run", embedded_llm, cfg, captions=caps,
              limit=3)
    assert embedded_llm.stats["calls"] - calls0 == 3 and res.answered == 3
    preds = [json.loads(x) for x in (tmp_path / "run/predictions.jsonl").read_text().splitlines()]
    assert all(isinstance(p["reply"], str) and p["usage"]["completion_tokens"] > 0 for p in preds)
    s = res.score
    assert s.n == 3 and s.missing == 0
    assert s.no_answer == sum(p["extracted"] is None for p in preds)
    assert s.correct == sum(p["extracted"] == p["answer"] for p in preds)


def test_text_proxy_captions_the_videos_first(env: tuple[Path, list[str]], tmp_path: Path) -> None:
    """Without --captions, text-proxy mode runs Stage 1 on the benchmark's videos (here the
    captioner and summarizer are the scripted server too), then asks the questions."""
    from typer.testing import CliRunner

    from rewatch.cli import app

    tmp, vids = env
    data = fx.minerva(tmp, vids, n=4, name="minerva4.json")

    def reply(body: dict[str, Any]) -> str:
        content = body["messages"][0]["content"]
        if isinstance(content, list) and any(p["type"] == "image_url" for p in content):
            return json.dumps({"lines": [{"start": 0.0, "end": 1.0,
                                          "text": "a green circle appears"}]})
        if "Question:" in last_user_text(body):
            return "<answer>A</answer>"
        return json.dumps({"summary": "shapes on a dark background"})

    out = tmp_path / "run"
    with ScriptedTestServer(reply) as srv:
        sets = [f"models.{m}.{k}={v}" for m in ("captioner", "llm") for k, v in
                (("backend", "openai"), ("base_url", srv.base_url), ("model", "scripted"))]
        args = ["eval", "run", "--bench", "minerva", "--data", str(data), "--videos",
                str(tmp / "videos"), "--model", srv.base_url, "--served-model", "scripted",
                "--inputs", "text_proxy", "--mode", "direct", "--out", str(out)]
        for s in sets:
            args += ["--set", s]
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        questions = [b for b in srv.requests if "Question:" in last_user_text(b)]
    caps = [json.loads(x) for x in (out / "captions.jsonl").read_text().splitlines()]
    assert {Path(c["video_path"]).name for c in caps} == {f"{v}.mp4" for v in vids}
    assert len(questions) == 4
    assert all("a green circle appears" in last_user_text(b) for b in questions)
    assert all("openai:scripted" in last_user_text(b) for b in questions)  # who captioned
    scores = json.loads((out / "scores.json").read_text())["score"]
    assert scores["n"] == 4 and scores["correct"] == 1  # only m0's answer is A
