"""What the model is shown: the text-proxy caption budget chooses lines relevant to the
question (issue 13), and the ReWatch-R1 release prompt as a prompt style."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import eval_fixtures as fx
import pytest

from rewatch.config import Config, load_config
from rewatch.eval.benchmarks import EvalItem, get_benchmark
from rewatch.eval.inputs import (
    FramePool,
    PreparedVideo,
    caption_text,
    prepare_frames,
    text_proxy_messages,
)
from rewatch.eval.run import EvalRunner
from rewatch.models.openai_compat import OpenAIChatModel
from rewatch.models.scripted_server import ScriptedTestServer, last_user_text
from rewatch.schema import CaptionLine, CaptionRecord

SCENES = ["a man waters tomato plants in a garden", "children play football on a lawn",
          "a chef slices onions in a kitchen", "cars wait at a red traffic light",
          "a dog sleeps on a blue sofa", "rain falls on a tin roof"]


def hour_caption() -> CaptionRecord:
    """A 1-hour C_detail, one line every 12 s (300 lines, ~13,000 characters), with one
    distinctive event at 50:00."""
    lines = [CaptionLine(start=12.0 * k, end=12.0 * k + 12.0, text=f"{SCENES[k % len(SCENES)]}"
                         f", shot {k}") for k in range(300)]
    lines[250] = CaptionLine(start=3000.0, end=3006.0,
                             text="a purple hot-air balloon lands beside the lighthouse")
    return CaptionRecord(id="hour", video_id="hour", video_path="/videos/hour.mp4",
                         duration=3600.0, detail=lines, summary="a long day",
                         captioner="fixture ground truth")


def test_caption_budget_keeps_the_lines_the_question_needs() -> None:
    cap = hour_caption()
    full = caption_text(cap, 10**9)
    assert len(full) > 12_000 and full.count("\n") == 299
    q = "What colour is the balloon that lands near the lighthouse?"
    text = caption_text(cap, 6000, query=q)
    assert len(text) <= 6000
    assert "[50:00-50:06] a purple hot-air balloon lands beside the lighthouse" in text
    assert text.rstrip().endswith("those most relevant to the question ...]")
    shown = [ln for ln in text.splitlines() if ln.startswith("[") and not ln.startswith("[...")]
    assert shown and shown == sorted(shown, key=lambda ln: ln[:12])  # time order
    assert f"{len(shown)} of 300 description lines shown" in text
    # the head of the caption, as before, when no question is given: the balloon is cut
    head = caption_text(cap, 6000)
    assert "balloon" not in head and head.endswith("[... description cut to fit ...]")


def test_text_proxy_prompt_uses_the_question(tmp_path: Path) -> None:
    cap = hour_caption()
    item = EvalItem(id="q", bench="minerva", video="/videos/hour.mp4",
                    question="What lands beside the lighthouse?",
                    options={"A": "a balloon", "B": "a helicopter"}, answer="A")
    cfg = load_config(None, ["eval.caption_max_chars=3000"])
    msg = text_proxy_messages("Question: ...", item, cap, cfg)[0]["content"]
    assert "a purple hot-air balloon lands beside the lighthouse" in msg
    assert "written by fixture ground truth" in msg


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    tmp = tmp_path_factory.mktemp("inputs")
    return tmp, fx.make_videos(tmp / "videos", n=2)


def test_rewatch_r1_prompt_style(env: tuple[Path, list[str]], tmp_path: Path) -> None:
    """`eval.prompt_style=rewatch-r1`: the release's inference prompt (alibaba/ReWatch-R1
    README `react_prompt`), the duration as 00:00-MM:SS, recorded in meta.json."""
    tmp, vids = env
    data = fx.minerva(tmp, vids, n=2)
    cfg = load_config(None, ["video.max_frames=4", "eval.prompt_style=rewatch-r1"])
    cfg.video.root = str((tmp / "videos").resolve())
    b = get_benchmark("minerva")
    items = b.load(data, tmp / "videos")

    def reply(body: dict[str, Any]) -> str:
        return "<action>re-watch 00:01</action><observation>red</observation><answer>A</answer>"

    with ScriptedTestServer(reply) as srv:
        async def go() -> Any:
            m = OpenAIChatModel("scripted", srv.base_url)
            try:
                return await EvalRunner(b, cfg, tmp_path / "run", m,
                                        videos_dir=tmp / "videos").run(items)
            finally:
                await m.aclose()

        res = asyncio.run(go())
    text = last_user_text(srv.requests[0])
    assert text.split("[00:0")[-1].split("]", 1)[1].lstrip().startswith(
        "You are a video understanding expert. You are given a video and a question.")
    assert "The video duration is 00:00-00:03." in text
    assert "Options:\n(A) colour 0\n(B) colour 1" in text
    meta = json.loads((tmp_path / "run/meta.json").read_text())
    assert meta["prompt_style"] == "rewatch-r1"
    preds = [json.loads(x) for x in (tmp_path / "run/predictions.jsonl").read_text().splitlines()]
    assert {p["prompt"] for p in preds} == {"rewatch_r1_think"}
    assert res.scores["strict"].correct == 1  # m0's answer is A


def test_prompt_file_of_your_own(env: tuple[Path, list[str]], tmp_path: Path) -> None:
    tmp, vids = env
    data = fx.minerva(tmp, vids, n=1)
    tpl = tmp_path / "mine.txt"
    tpl.write_text("Lasts {duration}. {question}\n{options_section}\n")
    cfg = load_config(None, ["video.max_frames=4", f"eval.prompt_file={tpl}",
                             "eval.inputs=video_url"])
    cfg.video.root = str((tmp / "videos").resolve())
    b = get_benchmark("minerva")
    with ScriptedTestServer("<answer>A</answer>") as srv:
        async def go() -> Any:
            m = OpenAIChatModel("scripted", srv.base_url)
            try:
                return await EvalRunner(b, cfg, tmp_path / "run", m, videos_dir=tmp / "videos"
                                        ).run(b.load(data, tmp / "videos"))
            finally:
                await m.aclose()

        asyncio.run(go())
    assert srv.requests[0]["messages"][0]["content"][1]["text"] == (
        "Lasts 00:00-00:03. Which colour appears first in clip 0?\nOptions:\n(A) colour 0\n"
        "(B) colour 1\n(C) colour 2\n(D) colour 3\n(E) colour 4")


def test_official_prompt_style_uses_the_lmms_eval_prompts(env: tuple[Path, list[str]]) -> None:
    """prompt_style=official: lmms-eval's doc_to_text of VideoMathQA (utils.py @ c7eaef37
    lines 113-124, mcq yaml post_prompt), MINERVA (utils.py @ bec4e649 lines 90-100) and
    CG-AV-Counting (utils.py @ cb9d7f76 lines 173-177), written out exactly."""
    from rewatch.eval.inputs import build_prompt, load_prompt, prompt_name

    tmp, vids = env
    vm = get_benchmark("videomathqa")
    it = vm.load(fx.videomathqa(tmp, vids), tmp / "videos")[1]
    name = prompt_name(it, "direct", "official", None, vm.official_prompts["direct"])
    assert build_prompt(it, load_prompt(name), 3.0) == (
        "Select the best answer to the following multiple-choice question based on the video. "
        "Respond with the letter (A, B, C, D or E) of the correct option.\nWhat is x in problem "
        "1?\n(A) 10\n(B) 11\n(C) 12\n(D) 13\n(E) 14\n\nAnswer with the option's letter (A, B, C,"
        " D or E) from the given choices directly.")
    mn = get_benchmark("minerva")
    m0 = mn.load(fx.minerva(tmp, vids), tmp / "videos")[0]
    text = build_prompt(m0, load_prompt(prompt_name(m0, "direct", "official", None,
                                                    mn.official_prompts["direct"])), 3.0)
    assert text == ("Which colour appears first in clip 0?\nA. colour 0\nB. colour 1\nC. colour 2"
                    "\nD. colour 3\nE. colour 4\nAnswer with the option's letter from the given "
                    "choices directly.")
    cg = get_benchmark("cg-av-counting")
    c0 = cg.load(fx.counting(tmp, vids), tmp / "videos")[0]
    assert build_prompt(c0, load_prompt(prompt_name(c0, "think", "official", None,
                                                    cg.official_prompts["think"])), 3.0) == (
        "Please answer the question 'How many circles appear in clip 0?' with a number. "
        "Output only the number and nothing else.")
    # the default style keeps our prompts
    assert prompt_name(m0, "direct", "auto", None, mn.official_prompts["direct"]) == "direct"


async def test_frame_pool_prepares_the_first_video_alone_then_ahead(
        env: tuple[Path, list[str]]) -> None:
    # no request can go before the first video is ready: it is prepared alone (two at once
    # took twice as long each here), then up to prepare_ahead videos at a time
    tmp, vids = env
    cfg = load_config(None, ["video.max_frames=8", "eval.prepare_workers=2",
                             "eval.prepare_ahead=3"])
    cfg.video.root = str((tmp / "videos").resolve())
    paths = [str((tmp / "videos" / f"{v}.mp4").resolve()) for v in vids[:3]]
    pool = FramePool(cfg)
    try:
        first = await pool.acquire(paths[0])
        second = await pool.acquire(paths[1])
        assert first.done() and not first.exception()  # the second started after it
        third = await pool.acquire(paths[2])
        videos = [await f for f in (first, second, third)]
        assert [v.path for v in videos] == paths and pool.prepared == 3
        assert all(json.loads(v.parts_json) == v.parts for v in videos)
    finally:
        pool.close()


async def test_frame_cache_gives_later_runs_the_same_bytes(env: tuple[Path, list[str]],
                                                           tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    # eval.frame_cache_dir: a later run on the same videos reads each video's prepared frames
    # back, byte for byte what preparing gives; another setting or file is prepared afresh
    tmp, vids = env
    path = str((tmp / "videos" / f"{vids[0]}.mp4").resolve())

    def config(*extra: str) -> Config:
        cfg = load_config(None, ["video.max_frames=8", f"eval.frame_cache_dir={tmp_path}",
                                 *extra])
        cfg.video.root = str((tmp / "videos").resolve())
        return cfg

    async def prepared(cfg: Config) -> PreparedVideo:
        pool = FramePool(cfg)
        try:
            return await (await pool.acquire(path))
        finally:
            pool.close()

    fresh = prepare_frames(path, config())
    first = await prepared(config())
    files = list(tmp_path.glob("*.frames"))
    assert len(files) == 1 and first.parts_json == fresh.parts_json
    again = await prepared(config())
    assert again.parts_json == fresh.parts_json and again.parts == fresh.parts
    assert (again.frames, again.duration, again.head) == (fresh.frames, fresh.duration,
                                                          fresh.head)
    assert again is not first and files[0].stat().st_mtime_ns == list(
        tmp_path.glob("*.frames"))[0].stat().st_mtime_ns  # read, not written again
    other = await prepared(config("eval.jpeg_quality=60"))  # another setting: another entry
    assert len(list(tmp_path.glob("*.frames"))) == 2 and other.parts_json != fresh.parts_json
    files[0].write_bytes(files[0].read_bytes()[:500])  # a torn entry is prepared again
    with caplog.at_level("WARNING"):
        torn = await prepared(config())
    assert torn.parts_json == fresh.parts_json and "unreadable" in caplog.text
    assert files[0].read_bytes().endswith(fresh.parts_json)  # and rewritten whole
    plain = load_config(None, ["video.max_frames=8"])  # off by default: nothing is kept
    assert plain.eval.frame_cache_dir is None


# The README's react_prompt as far as it could be read here (stored copies of
# github.com/alibaba/ReWatch-R1's page end at "...determine the final answer, yo"; docs/eval.md)
README_REACT_PROMPT_READ = (
    "You are a video understanding expert. You are given a video and a question. You need to "
    "answer the question based on the video content. Please answer the question step by step. "
    "When you need more video details, you will re-watch the relevant clips and use <action> "
    "and </action> to mark the actions, and use <observation> and </observation> to mark the "
    "visual details you observe. When you have enough information to determine the final "
    "answer, yo")


def test_rewatch_r1_prompt_is_the_readme_text_as_far_as_it_was_read() -> None:
    from rewatch.eval.inputs import load_prompt

    assert load_prompt("rewatch_r1_think", strip=False).startswith(README_REACT_PROMPT_READ)
