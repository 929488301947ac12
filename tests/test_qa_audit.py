"""The difficulty audit: every figure recomputed here from the raw records, the CLI's table,
JSON and plot, and the text-only audit of an external multiple-choice file."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from qa_scripted import SHAPES, panel, rows, run_stage, scripted_config, shapes_run
from typer.testing import CliRunner

from rewatch.cli import app
from rewatch.models.scripted_server import ScriptedTestServer
from rewatch.synth.audit import audit, duplicates


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    with ScriptedTestServer(panel()) as srv:
        cfg = scripted_config(srv.base_url, questions_per_video=len(SHAPES), generation="free")
        run = shapes_run(tmp_path_factory.mktemp("audit") / "run")
        from rewatch.config import dump_config

        (run.root / "config.yaml").write_text(dump_config(cfg))
        run_stage(run, cfg)
    return run


def test_audit_numbers_match_the_records(run_dir):
    rep = audit(run_dir.root, embedder=None)
    qa = rows(run_dir, "qa.jsonl")
    rej = [r for r in rows(run_dir, "rejected.jsonl") if r["stage"] == "qa" and "question" in r]
    assert rep["accepted"] == len(qa) and rep["candidates"] == len(qa) + len(rej)
    assert rep["acceptance_rate"] == pytest.approx(len(qa) / (len(qa) + len(rej)))
    for name in ("F1", "F2", "F3"):
        had = [r for r in qa + rej if name in r.get("filters", {})]
        bad = [r for r in had if not r["filters"][name]["passed"]]
        f = rep["filters"][name]
        assert (f["reached"], f["rejected"]) == (len(had), len(bad))
        assert f["rejected_here"] == sum(r["filter"] == name for r in rej)
    assert rep["filters"]["generation"]["rejected"] == sum(r["filter"] == "generation"
                                                           for r in rej)
    # short circuit: a question rejected by F1 never reached F3 or F2
    assert rep["filters"]["F3"]["reached"] == rep["filters"]["F1"]["reached"] - \
        rep["filters"]["F1"]["rejected"]
    text = [sum(a["correct"] for a in r["filters"]["F2"]["answers"]) / 3 for r in qa]
    assert rep["accepted_text_only_accuracy"] == pytest.approx(sum(text) / len(text))
    letters = Counter(r["answer"] for r in rows(run_dir, "mcq.jsonl"))
    assert rep["mcq"]["letters"]["counts"] == {x: letters[x] for x in "ABCDE"}
    assert rep["qtypes"] == dict(Counter(r["qtype"] for r in qa))
    assert rep["videos_rejected"] == {"schema_error": 1, "empty_caption": 1,
                                      "caption_too_short": 1}
    assert rep["thresholds"] == {"theta_text": 0.5, "theta_sum": 0.5}
    assert json.loads((run_dir.root / "audit.json").read_text()) == rep


def test_near_duplicates_by_minilm():
    qs = ["What colour is the shape that appears at 00:08?",
          "What color is the shape appearing at 00:08?",
          "How many blue squares move left after 00:05?",
          "what colour is the SHAPE that appears at 00:08"]
    d = duplicates([{"id": str(i), "video_id": "v", "question": q} for i, q in enumerate(qs)],
                   0.9)
    assert d["exact_count"] == 1 and d["exact"][0]["b"] == "3"
    assert {(x["a"], x["b"]) for x in d["near"]} == {("0", "1"), ("1", "3")}
    assert all(x["similarity"] >= 0.9 for x in d["near"])


def test_cli_audit_run_prints_and_plots(run_dir):
    res = CliRunner().invoke(app, ["synth", "audit", str(run_dir.root), "--no-embed"])
    assert res.exit_code == 0, res.output
    assert (run_dir.root / "audit.png").stat().st_size > 10_000
    assert json.loads((run_dir.root / "audit.json").read_text())["accepted"] == 3


def test_cli_audit_external_file(tmp_path):
    """Text-only accuracy of a file: the scripted panel always says A; bad items are named."""
    items = [{"id": f"m{i}", "qa_id": "q", "video_id": "v", "question": f"Question {i}?",
              "options": {"A": f"a{i}", "B": f"b{i}", "C": f"c{i}", "D": f"d{i}"},
              "answer": "ABCD"[i % 4] if i < 6 else "A", "qtype": "counting"}
             for i in range(10)]
    items[8]["answer"] = "E"  # not among the options
    items[9]["options"]["B"] = items[9]["options"]["A"].upper()  # duplicate options
    path = tmp_path / "ext.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in items) + '{"id": "x"}\n')
    with ScriptedTestServer(panel()) as srv:
        res = CliRunner().invoke(app, ["synth", "audit", "--qa", str(path), "--no-embed",
                                       "--set", "models.llm.backend=openai",
                                       "--set", f"models.llm.base_url={srv.base_url}",
                                       "--set", "models.llm.structured=parse"])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "ext.audit.json").read_text())
    assert (rep["items"], rep["valid"], rep["invalid"]) == (11, 8, 3)
    assert rep["invalid_reasons"] == {"answer_not_among_options": 1, "duplicate_options": 1,
                                      "schema": 1}
    valid = [x for x in items[:8]]
    assert rep["text_only"]["text_only_accuracy"] == pytest.approx(
        sum(x["answer"] == "A" for x in valid) / len(valid))
    assert rep["text_only"]["chance"] == pytest.approx(0.25)
    assert (tmp_path / "ext.audit.png").exists()
