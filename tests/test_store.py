"""The run store: append + fsync, resume by id, errors.jsonl, torn lines after SIGKILL."""

from __future__ import annotations

import json

from rewatch.store import JsonlFile, RunDir, stable_id


def test_stable_id_depends_only_on_inputs():
    assert stable_id("video.mp4", 3) == stable_id("video.mp4", 3)
    assert stable_id("video.mp4", 3) != stable_id("video.mp4", 4)
    assert stable_id({"b": 1, "a": 2}) == stable_id({"a": 2, "b": 1})


def test_append_read_and_resume(tmp_path):
    f = JsonlFile(tmp_path / "x.jsonl")
    f.append({"id": "a", "v": 1})
    f.append({"id": "b", "v": 2})
    again = JsonlFile(tmp_path / "x.jsonl")
    assert again.ids() == {"a", "b"}
    assert "a" in again and "c" not in again
    assert [r["v"] for r in again.read()] == [1, 2]


def test_torn_last_line_is_dropped_and_next_append_is_clean(tmp_path):
    path = tmp_path / "x.jsonl"
    f = JsonlFile(path)
    f.append({"id": "a"})
    with open(path, "ab") as raw:  # what a SIGKILL in the middle of a write leaves
        raw.write(b'{"id": "b", "text": "half a rec')
    g = JsonlFile(path)
    assert [r["id"] for r in g.read()] == ["a"]
    g.append({"id": "c"})
    lines = path.read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["a", "c"]


def test_errors_are_recorded_with_stage_id_class_and_message(tmp_path):
    run = RunDir(tmp_path / "run")
    try:
        raise ValueError("corrupt moov atom")
    except ValueError as e:
        run.record_error("caption", "vid123", e)
    rec = next(run.errors.read())
    assert rec["stage"] == "caption" and rec["id"] == "vid123"
    assert rec["error"] == "ValueError" and "moov" in rec["message"]
