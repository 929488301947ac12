"""The report: the paper's layout, per-category tables, a chart, published rows labelled as
such, and model text escaped in HTML."""

from __future__ import annotations

import json
from pathlib import Path

import eval_fixtures as fx
import pytest

from rewatch.eval.benchmarks import get_benchmark
from rewatch.eval.benchmarks.minerva import official_fallback
from rewatch.eval.report import COLUMNS, PUBLISHED, load_run, markdown, write_report
from rewatch.eval.run import score_modes, write_scores

EVIL = "<script>alert('x')</script>"


def fake_run(root: Path, bench: str, data: Path, videos: Path, replies: dict[str, str],
             label: str) -> Path:
    """A run directory as `rewatch eval run` leaves it, from hand-written replies."""
    root.mkdir(parents=True)
    (root / "meta.json").write_text(json.dumps({"bench": bench, "model": "m", "mode": "think",
                                                "inputs": "frames", "label": label}))
    with open(root / "predictions.jsonl", "w") as f:
        for k, v in replies.items():
            f.write(json.dumps({"id": k, "reply": v, "extracted": None if v == EVIL else "x",
                                "how": "none"}) + "\n")
    b = get_benchmark(bench)
    write_scores(root, score_modes(b, b.load(data, videos), replies, {}), "official", {})
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    tmp = tmp_path_factory.mktemp("report")
    videos = tmp / "videos"
    vids = fx.make_videos(videos, n=2)
    label = "ours <b>bold</b>"
    return [
        fake_run(tmp / "r1", "minerva", fx.minerva(tmp, vids), videos,
                 {"m0": "A", "m1": "B", "m2": EVIL}, label),
        fake_run(tmp / "r2", "cg-av-counting", fx.counting(tmp, vids), videos,
                 {"0": "1", "1": "3", "2": "ten"}, label),
        fake_run(tmp / "r3", "video-holmes", fx.holmes(tmp, vids), videos,
                 {"vid0_q0": "<answer>A</answer>"}, "other"),
    ]


def test_markdown_has_the_paper_layout(runs: list[Path]) -> None:
    md = markdown([load_run(r) for r in runs])
    header = ("| Model | VCR-Bench official | VCR-Bench strict | MINERVA official | MINERVA strict "
              "| Video Holmes official | Video Holmes strict | VideoMathQA official | VideoMathQA "
              "strict | CG-AV-Counting official | CG-AV-Counting strict | Avg official | "
              "Avg strict |")
    assert header in md
    # minerva strict 2/6 = 33.33; official: the <script> reply has no letter, so lmms-eval's
    # random letter (seed 0) decides it; counting 1/5 = 20.00 in both ("ten" reads in both)
    m_off = 100 * (2 + (official_fallback(0, "m2") == "C")) / 6
    avg_off = (m_off + 20) / 2
    assert (f"| ours <b>bold</b> | – | – | {m_off:.2f} | 33.33 | – | – | – | – | 20.00 | 20.00 "
            f"| {avg_off:.2f}* | 26.67* |") in md
    assert "| other | – | – | – | – | 14.29 | 14.29 | – | – | – | – | 14.29* | 14.29* |" in md
    # the published rows, every one labelled, in the official columns only
    assert ("| ReWatch-R1 + O&R [published] | 40.43 | – | 36.05 | – | 43.88 | – | 31.67 | – | "
            "25.51 | – | 35.51 | – |") in md
    assert md.count("[published]") == len(PUBLISHED) + 1  # + the note under the table
    assert "not measured by this tool" in md
    assert "| question_type |" in md and "oboa" in md
    assert "strict: accuracy **33.33** over 6 (2 correct, 1 no answer (unparsed), 3 missing)" in md
    assert "official: accuracy" in md and "1 guessed (seed 0)" in md
    assert "[published]" not in markdown([load_run(r) for r in runs], published=False)
    assert len(COLUMNS) == 5


def test_html_escapes_and_chart(runs: list[Path], tmp_path: Path) -> None:
    paths = write_report(runs, tmp_path / "rep")
    page = paths["html"].read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page  # the reply, escaped
    assert "<b>bold</b>" not in page and "ours &lt;b&gt;bold&lt;/b&gt;" in page
    assert "Content-Security-Policy" in page and 'src="scores.png"' in page
    assert paths["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["chart"].stat().st_size > 5000
    assert "![scores](scores.png)" in paths["markdown"].read_text()


def test_report_needs_scores(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="rewatch eval"):
        load_run(tmp_path)


def test_report_shows_videomathqa_step_score(tmp_path: Path) -> None:
    """The official 0-10 step score (cot_step_evaluation.py, judged here by stored scripted
    outputs) is listed with the official metrics, in markdown and HTML, and not in strict."""
    videos = tmp_path / "videos"
    vids = fx.make_videos(videos, n=1)
    b = get_benchmark("videomathqa")
    items = b.load(fx.videomathqa(tmp_path, vids, n=8), videos)
    replies = {it.id: "so (A)" for it in items}
    judged = {f"videomathqa_step:{it.id}": f'SCORE_CARD: {{"score": {k + 1}}}'
              for k, it in enumerate(items)}
    root = tmp_path / "run"
    root.mkdir()
    (root / "meta.json").write_text(json.dumps({"bench": "videomathqa", "model": "m",
                                                "mode": "think", "label": "steps"}))
    (root / "predictions.jsonl").write_text("".join(
        json.dumps({"id": k, "reply": v}) + "\n" for k, v in replies.items()))
    write_scores(root, score_modes(b, items, replies, judged, think=True, cot_score=True),
                 "official", {})
    md = markdown([load_run(root)], published=False)
    official = next(line for line in md.splitlines() if line.startswith("Metrics (official)"))
    assert "cot_step_score 4.50" in official and "cot_step_in_mean 8.00" in official
    assert "Metrics (strict)" not in md
    page = write_report([root], tmp_path / "rep", published=False)["html"].read_text()
    assert "Metrics (official): " in page and "cot_step_score 4.50" in page
