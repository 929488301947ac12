"""Loading the benchmarks from folders laid out like their real downloads (Hugging Face
snapshots with parquet or JSON and zipped videos, MINERVA's JSON), `--data` pointing at the
folder; `--limit` keeping multi-binary questions whole; the CLI's benchmark help."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import eval_fixtures as fx
import pytest
from typer.testing import CliRunner

from rewatch.cli import app
from rewatch.eval.benchmarks import get_benchmark, limit_items
from rewatch.eval.downloads import ensure_videos, find_archives, resolve_download
from rewatch.models.scripted_server import ScriptedTestServer


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    tmp = tmp_path_factory.mktemp("downloads")
    return tmp, fx.make_videos(tmp / "videos", n=2)


def test_videomathqa_snapshot_parquet_and_zipped_videos(src: tuple[Path, list[str]],
                                                        tmp_path: Path) -> None:
    tmp, vids = src
    root = fx.hf_videomathqa(tmp_path / "VideoMathQA", tmp / "videos", vids)
    mcq = get_benchmark("videomathqa")
    data, videos = resolve_download(mcq, root, None)
    assert data == root / "mcq/test-00000-of-00001.parquet" and videos == root / "videos"
    items = mcq.load(data, videos)
    assert len(items) == 4 and items[1].options["B"] == "11" and items[1].id == "1"
    assert not Path(items[0].video).exists()  # still inside videos.zip
    assert ensure_videos(items) == len(vids)
    assert all(Path(it.video).exists() for it in items)
    assert (Path(items[0].video).read_bytes()
            == (tmp / "videos" / Path(items[0].video).name).read_bytes())
    mbin = get_benchmark("videomathqa-mbin")
    data, _ = resolve_download(mbin, root, None)
    pairs = mbin.load(data, videos)
    assert data == root / "multi_binary/test-00000-of-00001.parquet"
    assert len(pairs) == 16 and {p.group for p in pairs} == {"0", "1", "2", "3"}


def test_holmes_snapshot_picks_the_test_file(src: tuple[Path, list[str]], tmp_path: Path
                                             ) -> None:
    tmp, vids = src
    root = fx.hf_holmes(tmp_path / "Benchmark", tmp / "videos", vids)
    b = get_benchmark("video-holmes")
    data, videos = resolve_download(b, root, None)
    assert data.name == "test_Video-Holmes.json" and videos == root / "videos"
    items = b.load(data, videos)
    assert ensure_videos(items) == len(vids) and (root / "videos" / f"{vids[0]}.mp4").exists()


def test_counting_snapshot_split_zip_parts(src: tuple[Path, list[str]], tmp_path: Path
                                           ) -> None:
    tmp, vids = src
    root = fx.hf_counting(tmp_path / "CG-AV-Counting", tmp / "videos", vids)
    assert [len(a) for a in find_archives([root])] == [3]  # three parts, one archive
    b = get_benchmark("cg-av-counting")
    data, videos = resolve_download(b, root, None)
    assert data.name == "cg-av-counting.json" and videos == root / "cg_videos_720p"
    items = b.load(data, videos)
    assert ensure_videos(items) == len(vids)
    for it in items:
        assert (Path(it.video).read_bytes() == (tmp / "videos" / Path(it.video).name)
                .read_bytes())
    assert ensure_videos(items) == 0  # already there


def test_vcr_and_minerva_snapshots(src: tuple[Path, list[str]], tmp_path: Path) -> None:
    tmp, vids = src
    root = fx.hf_vcr(tmp_path / "VCR-Bench", tmp / "videos", vids)
    vcr = get_benchmark("vcr-bench")
    data, videos = resolve_download(vcr, root, None)
    assert data == root / "v1/videos/meta_info_video.json" and videos == root / "v1/videos"
    assert [Path(it.video).exists() for it in vcr.load(data, videos)][:2] == [True, True]
    mroot = fx.hf_minerva(tmp_path / "minerva", tmp / "videos", vids)
    mb = get_benchmark("minerva")
    data, videos = resolve_download(mb, mroot, None)
    items = mb.load(data, videos)
    # lmms-eval's copy names the breakdown key `question_type`; the original `question type`
    assert [it.categories["question_type"] for it in items[:2]] == ["counting", "temporal"]
    s = mb.score(items, {it.id: it.answer for it in items})
    assert set(s.breakdowns["question_type"]) == {"counting", "temporal"}


def test_missing_file_in_snapshot_says_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="test_Video-Holmes.json"):
        resolve_download(get_benchmark("video-holmes"), tmp_path / "empty", None)


def test_limit_keeps_multi_binary_groups_whole(src: tuple[Path, list[str]]) -> None:
    tmp, vids = src
    pairs = get_benchmark("videomathqa-mbin").load(fx.videomathqa(tmp, vids, binary=True),
                                                    tmp / "videos")
    assert len(pairs) == 16
    two = limit_items(pairs, 2)
    assert len(two) == 8 and {p.group for p in two} == {"vm0", "vm1"}
    assert limit_items(pairs, 3)[:8] == two
    plain = get_benchmark("minerva").load(fx.minerva(tmp, vids), tmp / "videos")
    assert [it.id for it in limit_items(plain, 2)] == ["m0", "m1"]


def test_cli_run_on_a_snapshot_with_limit(src: tuple[Path, list[str]], tmp_path: Path) -> None:
    """`eval run --data <snapshot>` without --videos: the parquet and the zipped videos are
    found; --limit 1 on multi-binary asks all four pairs of the first question."""
    tmp, vids = src
    root = fx.hf_videomathqa(tmp_path / "VideoMathQA", tmp / "videos", vids)

    def reply(body: dict[str, Any]) -> str:
        return "<answer>A</answer>"

    out = tmp_path / "run"
    with ScriptedTestServer(reply) as srv:
        res = CliRunner().invoke(app, [
            "eval", "run", "--bench", "videomathqa-mbin", "--data", str(root), "--model",
            srv.base_url, "--served-model", "scripted", "--limit", "1", "--out", str(out),
            "--set", "video.max_frames=4", "--mode", "direct"])
        assert res.exit_code == 0, res.output
        assert len(srv.requests) == 4
    scores = json.loads((out / "scores.json").read_text())
    assert scores["scores"]["strict"]["n"] == 1 and scores["scores"]["strict"]["metrics"][
        "pairs"] == 4
    meta = json.loads((out / "meta.json").read_text())
    assert meta["data"].endswith("multi_binary/test-00000-of-00001.parquet")


def test_bench_help_names_the_five_benchmarks() -> None:
    res = CliRunner().invoke(app, ["eval", "run", "--help"], terminal_width=200)
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    for name in ("vcr-bench", "minerva", "video-holmes", "videomathqa", "videomathqa-mbin",
                 "cg-av-counting", "--extraction"):
        assert name in text, name


def test_counting_ref_protocol_uses_the_release_clips(src: tuple[Path, list[str]],
                                                      tmp_path: Path) -> None:
    """With `ref_videos/` downloaded, protocol `ref` asks about the release's own clip
    (`<stem>_<start>_<end>.mp4`, lmms-eval cgav_counting/utils.py @ cb9d7f76 lines 120-122)
    instead of cutting the whole video; without it, the whole video and the interval."""
    tmp, vids = src
    root = fx.hf_counting(tmp_path / "CG-AV-Counting", tmp / "videos", vids)
    b = get_benchmark("cg-av-counting", protocol="ref")
    data, videos = resolve_download(b, root, None)
    cut_here = b.load(data, videos)
    assert cut_here[0].extra["clip"] == (0.0, 2.0) and "ref_clip_file" not in cut_here[0].extra
    (root / "ref_videos").mkdir()
    clips = b.load(data, videos)
    assert Path(clips[0].video) == root / "ref_videos" / f"{vids[0]}_0.00_2.00.mp4"
    assert "clip" not in clips[0].extra and clips[0].extra["ref_clip_file"]
