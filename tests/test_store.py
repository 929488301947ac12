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


def test_unwritable_run_directory_is_refused_before_work(tmp_path):
    import pytest

    from rewatch.store import RunDirError

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(RunDirError, match="not writable"):
        RunDir(blocker / "run")  # a path under a regular file cannot be created
    with pytest.raises(RunDirError, match="not writable"):
        RunDir("/proc/rewatch-run")  # a read-only file system


def test_nearly_full_disk_is_refused_before_work(tmp_path):
    import pytest

    from rewatch.store import RunDirError, check_writable

    # a disk-full simulation: ask for more free space than any disk here has
    with pytest.raises(RunDirError, match="MB free"):
        check_writable(tmp_path / "run", min_free=2**62)


def test_cli_says_so_and_exits_2(tmp_path):
    from typer.testing import CliRunner

    from rewatch.cli import app

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for args in (["demo", "--out", str(blocker / "run")],
                 ["synth", str(tmp_path), "--out", str(blocker / "run")]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2
        assert "is not writable" in " ".join(result.output.split())  # rich wraps lines


def test_worker_shards_merge_into_their_files_by_id(tmp_path):
    """Per-worker shards (Ray backend, ray.shards) fold into qa.jsonl / errors.jsonl: ids
    already in the file or in an earlier shard are dropped (a retried item's second copy), a
    torn last line is skipped, and the shards are gone afterwards."""
    run = RunDir(tmp_path)
    run.file("qa.jsonl").append({"id": "a", "n": 1})
    w1, w2 = run.shard("qa.jsonl", "node.1-11"), run.shard("qa.jsonl", "node-2-22")
    assert w1.path.name == "qa.shard-node-1-11.jsonl"
    w1.append({"id": "a", "n": 2})  # already in qa.jsonl
    w1.append({"id": "b", "n": 1})
    w2.append({"id": "b", "n": 2})  # the same item written again by its retry
    w2.append({"id": "c", "n": 1})
    with open(w2.path, "a") as f:
        f.write('{"id": "d", "n"')  # the worker was killed mid-write
    run.shard("errors.jsonl", "w").append({"stage": "qa", "id": "e", "error": "X"})
    assert run.merge_shards() == {"qa.jsonl": 2, "errors.jsonl": 1}
    rows = list(run.file("qa.jsonl").read())
    assert [(r["id"], r["n"]) for r in rows] == [("a", 1), ("b", 1), ("c", 1)]
    assert [r["id"] for r in run.file("errors.jsonl").read()] == ["e"]
    assert not list(tmp_path.glob("*.shard-*"))
    assert run.merge_shards() == {}
