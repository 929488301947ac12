"""What the model is shown: the text-proxy caption budget chooses lines relevant to the
question (issue 13), and the ReWatch-R1 release prompt as a prompt style."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import eval_fixtures as fx
import pytest

from rewatch.config import load_config
from rewatch.eval.benchmarks import EvalItem, get_benchmark
from rewatch.eval.inputs import caption_text, text_proxy_messages
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
