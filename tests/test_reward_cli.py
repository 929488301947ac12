"""`rewatch reward score` on a real JSONL file: judges none and URL, resume, errors, weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from reward_scripted import judge_reply
from test_reward_hacking import CAPTION, OPTIONS, QUESTION, good
from typer.testing import CliRunner

from rewatch.cli import app
from rewatch.models.scripted_server import ScriptedTestServer

runner = CliRunner()


def line(response: str, answer: str = "B", **extra: object) -> str:
    return json.dumps({"response": response, "answer": answer, "question": QUESTION,
                       "caption": CAPTION, "options": OPTIONS, **extra}) + "\n"


def write_input(path: Path) -> None:
    path.write_text(line(good()) + line(good("C")) + line(good("A or B"), id="hedge")
                    + "{not json\n" + json.dumps({"response": "x"}) + "\n"
                    + line("<answer>seven</answer>", answer="7", options=None,
                           question="How many dogs run across the garden?"))


def read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_judge_none_then_resume(tmp_path: Path) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp)
    res = runner.invoke(app, ["reward", "score", str(inp), "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = read(out)
    assert len(rows) == 4
    by_answer = {r["answer"]: r for r in rows}
    assert by_answer["B"]["acc"] == 1.0 and by_answer["B"]["obs"] is None
    assert by_answer["B"]["overall"] is None and by_answer["B"]["skip_reason"] == "no judge"
    assert by_answer["C"]["overall"] == 1.0 and by_answer["C"]["skip_reason"] == "acc=0"
    assert by_answer["seven"]["acc"] == 1.0
    assert {r["id"] for r in rows} >= {"hedge"}
    errors = read(tmp_path / "errors.jsonl")
    assert len(errors) == 2 and {e["error"] for e in errors} == {"JSONDecodeError", "ValueError"}
    again = runner.invoke(app, ["reward", "score", str(inp), "--out", str(out)])
    assert again.exit_code == 0 and "4 already scored, 0 to score" in again.output
    assert len(read(out)) == 4 and len(read(tmp_path / "errors.jsonl")) == 2


def test_judge_url_resume_and_cache(tmp_path: Path) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(inp)
    with ScriptedTestServer(judge_reply) as srv:
        res = runner.invoke(app, ["reward", "score", str(inp), "--out", str(out),
                                  "--judge", srv.base_url])
        assert res.exit_code == 0, res.output
        rows = {r["answer"]: r for r in read(out)}
        assert rows["B"]["overall"] == 4.0 and rows["B"]["judge_calls"] == 2
        assert rows["seven"]["overall"] == 1.0 + 1.0  # counting: no steps, r_obs = r_rea = 0
        assert len(srv.requests) == 2 and (tmp_path / "reward_cache.sqlite").exists()
        with open(inp, "a") as f:
            f.write(line(good(step='<action>segment_query("00:06")</action>\n'
                                   "<observation>He picks up a red cup.</observation>")))
        res = runner.invoke(app, ["reward", "score", str(inp), "--out", str(out),
                                  "--judge", srv.base_url])
        assert res.exit_code == 0 and "4 already scored, 1 to score" in res.output
        assert len(read(out)) == 5 and len(srv.requests) == 4


def test_weights_row_and_bad_options(tmp_path: Path) -> None:
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(line(good()))
    res = runner.invoke(app, ["reward", "score", str(inp), "--out", str(out),
                              "--weights", "accuracy+format"])
    assert res.exit_code == 0 and read(out)[0]["overall"] == 2.0
    bad = runner.invoke(app, ["reward", "score", str(inp), "--out", str(tmp_path / "o2.jsonl"),
                              "--judge", "ftp://nowhere"])
    assert bad.exit_code == 2
    bad = runner.invoke(app, ["reward", "score", str(inp), "--out", str(tmp_path / "o3.jsonl"),
                              "--weights", "made-up"])
    assert bad.exit_code == 2


def test_parse_command_shows_problems() -> None:
    res = runner.invoke(app, ["reward", "parse", "<answer>B</answer><answer>C</answer>"])
    assert res.exit_code == 0 and "multiple_answers" in res.output and '"fmt": 0.0' in res.output


@pytest.mark.slow
def test_judge_url_on_rewatch_serve(tmp_path: Path, embedded_server_url: str) -> None:
    """`--judge URL` against the embedded model behind `rewatch serve` (llama.cpp server):
    schema-valid verdicts through the server's grammar mode; mechanics only (a 135M judge)."""
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text(line(good()) + line(good("C")))
    res = runner.invoke(app, ["reward", "score", str(inp), "--out", str(out), "--judge",
                              embedded_server_url])
    assert res.exit_code == 0, res.output
    rows = {r["answer"]: r for r in read(out)}
    right, wrong = rows["B"], rows["C"]
    assert not right["failed"], right["error"]
    assert right["judge_calls"] == 2 and right["obs"] in (0.0, 1.0)
    assert right["inferred_answer"] in OPTIONS and right["rea"] in (0.0, 1.0)
    assert wrong["judge_skipped"] and wrong["judge_calls"] == 0 and wrong["overall"] == 1.0
