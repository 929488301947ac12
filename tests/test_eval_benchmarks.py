"""Loaders on fixture files in each official format, and the official scoring rules checked on
hand-computed cases."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import eval_fixtures as fx
import pytest

from rewatch.eval.benchmarks import (
    BenchmarkFormatError,
    ScoreOptions,
    UnsafePathError,
    get_benchmark,
    names,
    safe_video_path,
)


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    tmp = tmp_path_factory.mktemp("bench")
    return tmp, fx.make_videos(tmp / "videos")


def test_registry_has_the_five_benchmarks() -> None:
    assert set(names()) == {"vcr-bench", "minerva", "video-holmes", "videomathqa",
                            "videomathqa-mbin", "cg-av-counting"}
    assert get_benchmark("Video-Holmes").name == "video-holmes"
    with pytest.raises(KeyError, match="known"):
        get_benchmark("mvbench")


def test_minerva_loads_and_scores(bench_dir: tuple[Path, list[str]]) -> None:
    tmp, vids = bench_dir
    b = get_benchmark("minerva")
    items = b.load(fx.minerva(tmp, vids), tmp / "videos")
    assert len(items) == 6 and items[2].answer == "C" and items[2].options["C"] == "colour 2"
    assert Path(items[0].video) == (tmp / "videos" / "vid0.mp4").resolve()
    assert items[3].video.endswith("bikes.mp4")  # the real sample video, found by extension
    replies = {"m0": "<answer>A</answer>",  # right
               "m1": "The answer is (B).",  # right
               "m2": "I cannot tell.",  # no answer: wrong, counted apart
               "m3": "A",  # wrong
               "m4": "Option B or C"}  # ambiguous: no answer
    s = b.score(items, replies)  # m5 has no reply: missing
    assert (s.n, s.correct, s.no_answer, s.missing) == (6, 2, 2, 1)
    assert s.score == pytest.approx(100 * 2 / 6)
    qt = s.breakdowns["question_type"]
    assert qt["counting"]["n"] == 3 and qt["counting"]["accuracy"] == pytest.approx(100 / 3)
    assert qt["temporal"]["accuracy"] == pytest.approx(100 / 3)


def test_video_holmes_per_type(bench_dir: tuple[Path, list[str]]) -> None:
    tmp, vids = bench_dir
    b = get_benchmark("video-holmes")
    items = b.load(fx.holmes(tmp, vids), tmp / "videos")
    assert len(items) == 7 and items[5].answer == "F" and len(items[0].options) == 6
    replies = {it.id: f"<think>...</think><answer>{it.answer}</answer>" for it in items[:4]}
    replies[items[4].id] = "<answer>A</answer>"  # MHR wrong (gt E)
    s = b.score(items, replies)
    assert s.correct == 4 and s.missing == 2
    assert s.breakdowns["question_type"]["SR"]["accuracy"] == 100.0
    assert s.breakdowns["question_type"]["MHR"]["accuracy"] == 0.0


def test_videomathqa_mcq(bench_dir: tuple[Path, list[str]]) -> None:
    tmp, vids = bench_dir
    b = get_benchmark("videomathqa")
    items = b.load(fx.videomathqa(tmp, vids), tmp / "videos")
    assert items[1].options == {"A": "10", "B": "11", "C": "12", "D": "13", "E": "14"}
    assert items[1].answer == "B"
    s = b.score(items, {it.id: it.answer for it in items[:3]})
    assert s.score == 75.0 and s.breakdowns["length"]["short"]["accuracy"] == 100.0


def test_multi_binary_all_pairs_rule(bench_dir: tuple[Path, list[str]]) -> None:
    tmp, vids = bench_dir
    b = get_benchmark("videomathqa-mbin")
    items = b.load(fx.videomathqa(tmp, vids, binary=True), tmp / "videos")
    assert len(items) == 16 and {it.group for it in items} == {"vm0", "vm1", "vm2", "vm3"}
    assert all(len(it.options) == 2 for it in items)
    replies = {it.id: it.answer for it in items}
    replies["vm1#2"] = "A" if replies["vm1#2"] == "B" else "B"  # one wrong pair sinks vm1
    replies["vm2#0"] = "no idea"  # one unanswered pair: vm2 is "no answer"
    del replies["vm3#3"]  # one pair never asked: vm3 is missing
    s = b.score(items, replies)
    assert (s.n, s.correct, s.no_answer, s.missing) == (4, 1, 1, 1)
    assert s.score == 25.0
    assert s.metrics["pairs"] == 16 and s.metrics["pair_accuracy"] == pytest.approx(100 * 13 / 16)


def test_multi_binary_expands_five_option_rows(bench_dir: tuple[Path, list[str]]) -> None:
    tmp, vids = bench_dir
    items = get_benchmark("videomathqa-mbin").load(fx.videomathqa(tmp, vids), tmp / "videos")
    vm1 = [it for it in items if it.group == "vm1"]
    assert len(vm1) == 4
    # the correct option ("11") is in every pair, alternating between A and B
    assert [it.options[it.answer] for it in vm1] == ["11"] * 4
    assert [it.answer for it in vm1] == ["A", "B", "A", "B"]
    always_a = get_benchmark("videomathqa-mbin").score(items, {it.id: "A" for it in items})
    assert always_a.correct == 0


def test_counting_metrics_by_hand(bench_dir: tuple[Path, list[str]]) -> None:
    tmp, vids = bench_dir
    b = get_benchmark("cg-av-counting")
    items = b.load(fx.counting(tmp, vids), tmp / "videos")
    assert [it.answer for it in items] == ["1", "2", "3", "4", "5"]
    replies = {"0": "<answer>1</answer>",  # exact
               "1": "There are 3 of them.",  # off by one: OBOA yes
               "2": "I count seven.",  # off by 4
               "3": "I am not sure how many."}  # unparseable: counted, not dropped
    s = b.score(items, replies)  # "4" missing
    m = s.metrics
    assert (s.correct, s.no_answer, s.missing, s.n) == (1, 1, 1, 5)
    assert m["acc"] == 20.0 and m["oboa"] == 40.0 and m["parsed"] == 3
    assert m["mae"] == pytest.approx(5 / 3)
    assert m["rmse"] == pytest.approx(math.sqrt(17 / 3))
    # OBOA edges: an error of exactly 1 counts, 2 does not
    s2 = b.score(items, {"0": "2", "1": "0", "2": "5", "3": "4", "4": "5"})
    assert s2.metrics["oboa"] == 60.0 and s2.metrics["acc"] == 40.0  # errors 1,2,2,0,0
    assert s2.metrics["mae"] == pytest.approx((1 + 2 + 2 + 0 + 0) / 5)
    assert s2.breakdowns["type"]["V"]["mae"] == 1.0


def test_counting_protocols(bench_dir: tuple[Path, list[str]]) -> None:
    tmp, vids = bench_dir
    data = fx.counting(tmp, vids)
    ref = get_benchmark("cg-av-counting", protocol="ref").load(data, tmp / "videos")
    assert ref[0].extra["clip"] == (0.0, 2.0)
    clue = get_benchmark("cg-av-counting", protocol="clue").load(data, tmp / "videos")
    assert json.loads(clue[0].extra["clue"]) == [{"start": 0.0, "end": 1.0}]
    with pytest.raises(ValueError, match="protocol"):
        get_benchmark("cg-av-counting", protocol="nope")


def test_vcr_bench_rules(bench_dir: tuple[Path, list[str]]) -> None:
    tmp, vids = bench_dir
    b = get_benchmark("vcr-bench")
    items = b.load(fx.vcr(tmp, vids), tmp / "videos")
    assert [it.kind for it in items] == ["mcq", "open", "open", "open"]
    assert [it.extra["answer_type"] for it in items] == ["choice", "temporal", "spatial", "text"]
    # cau_acc.py's buckets (duration <= 60, <= 300, else)
    assert [it.categories["duration"] for it in items] == ["0-60", "60-300", "300+", "0-60"]
    good = {"1": "<answer>A</answer>", "2": "From 1.6 to 3.0 s: [1.6, 3.0]",  # IoU 0.93
            "3": "<answer>[12, 12, 50, 50]</answer>", "4": "It is red."}  # box IoU 0.9025
    s = b.score(items, good, ScoreOptions(judgments={"open_judge:4": '{"correct": true}'}))
    assert s.correct == 4 and s.unjudged == 0
    s = b.score(items, good)  # no judge verdict: unjudged, counted wrong
    assert s.correct == 3 and s.unjudged == 1
    bad = {"1": "B", "2": "[0, 3]",  # temporal IoU 0.5 <= 0.7
           "3": "[10, 10, 30, 30]", "4": "blue"}  # box IoU 0.25 <= 0.5
    s = b.score(items, bad, ScoreOptions(judgments={"open_judge:4": '{"correct": false}'}))
    assert s.correct == 0 and s.no_answer == 0
    assert b.score(items, {"2": "sometime in the middle"}).no_answer == 1


@pytest.mark.parametrize("rel", ["../outside.mp4", "/etc/passwd", "sub/../../x.mp4", ""])
def test_paths_escaping_the_videos_dir_are_refused(tmp_path: Path, rel: str) -> None:
    (tmp_path / "videos").mkdir()
    with pytest.raises(UnsafePathError):
        safe_video_path(tmp_path / "videos", rel)


def test_symlink_out_of_the_videos_dir_is_refused(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    (tmp_path / "secret.mp4").write_bytes(b"x")
    os.symlink(tmp_path / "secret.mp4", videos / "link.mp4")
    with pytest.raises(UnsafePathError, match="outside"):
        safe_video_path(videos, "link.mp4")
    (videos / "ok.mp4").write_bytes(b"x")
    assert safe_video_path(videos, "ok.mp4") == (videos / "ok.mp4").resolve()


def test_benchmark_file_with_escaping_path_is_refused(bench_dir: tuple[Path, list[str]]) -> None:
    tmp, vids = bench_dir
    rows = json.loads(fx.vcr(tmp, vids).read_text())
    rows[1]["video_path"] = "../../../etc/hosts"
    bad = tmp / "bad_vcr.json"
    bad.write_text(json.dumps(rows))
    with pytest.raises(UnsafePathError, match="row 1"):
        get_benchmark("vcr-bench").load(bad, tmp / "videos")
    m = json.loads(fx.minerva(tmp, vids).read_text())
    m[0]["video_id"] = "../../home/x"
    bad.write_text(json.dumps(m))
    with pytest.raises(UnsafePathError):
        get_benchmark("minerva").load(bad, tmp / "videos")


def test_malformed_files_name_the_row(bench_dir: tuple[Path, list[str]], tmp_path: Path) -> None:
    tmp, vids = bench_dir
    rows = json.loads(fx.holmes(tmp, vids).read_text())
    rows[2]["Answer"] = "Z"
    (tmp_path / "h.json").write_text(json.dumps(rows))
    with pytest.raises(BenchmarkFormatError, match="row 2"):
        get_benchmark("video-holmes").load(tmp_path / "h.json", tmp / "videos")
    (tmp_path / "n.json").write_text("{not json")
    with pytest.raises(BenchmarkFormatError, match="not valid JSON"):
        get_benchmark("minerva").load(tmp_path / "n.json", tmp / "videos")
    # JSON Lines is read too
    lines = "\n".join(json.dumps(r) for r in json.loads(fx.minerva(tmp, vids).read_text()))
    (tmp_path / "m.jsonl").write_text(lines + "\n")
    assert len(get_benchmark("minerva").load(tmp_path / "m.jsonl", tmp / "videos")) == 6
