"""`rewatch export`: each format read back by its consumer's own loader (datasets and TRL's data
helpers for TRL, datasets for verl's parquet); LLaMA-Factory's files against its documented
schema (LLaMA-Factory itself needs torch 2.14 with CUDA and transformers 5.6, which cannot share
this environment)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from train_scripted import pipeline_run
from typer.testing import CliRunner

from rewatch.cli import app
from rewatch.config import Config
from rewatch.data.export import export_run

sys.path.insert(0, str(Path(__file__).parent))
from test_viewer import write_run  # noqa: E402


def said(result) -> str:  # type: ignore[no-untyped-def]
    """CLI output with the console's line wrapping undone."""
    return " ".join(result.output.split())


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    out = base / "exported"
    if not (out / "manifest.json").exists():
        export_run(pipeline_run(base), out, Config())
    return out


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_trl_files_load_with_datasets_and_trls_helpers(exported: Path) -> None:
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from trl.data_utils import apply_chat_template, is_conversational

    from rewatch.train.student import base_model_dir

    trl = exported / "trl"
    sft = load_dataset("json", data_files=str(trl / "sft_train.jsonl"), split="train")
    assert len(sft) > 0 and {"id", "task", "messages"} <= set(sft.column_names)
    assert set(sft["task"]) == {"caption", "direct", "think"}
    row = sft[0]
    assert is_conversational(row)
    user, assistant = row["messages"]
    assert user["content"][0]["type"] == "video" and Path(user["content"][0]["video"]).exists()
    assert assistant["content"][0]["text"]
    text = load_dataset("json", data_files=str(trl / "sft_text_train.jsonl"), split="train")
    tok = AutoTokenizer.from_pretrained(base_model_dir())
    rendered = apply_chat_template(text[0], tok)
    assert "You cannot see the video" in rendered["prompt"]
    assert rendered["completion"].strip().endswith("<|im_end|>")
    grpo = load_dataset("json", data_files=str(trl / "grpo_train.jsonl"), split="train")
    assert {"prompt", "answer", "question", "options", "caption"} <= set(grpo.column_names)
    assert all(r["answer"] in {k for k, v in r["options"].items() if v} for r in grpo)
    assert all(r["caption"].startswith("[00:00-") for r in grpo)


def test_verl_parquet_has_verls_columns(exported: Path) -> None:
    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=str(exported / "verl" / "train.parquet"),
                      split="train")
    assert len(ds) > 0
    assert {"data_source", "prompt", "ability", "reward_model", "extra_info", "videos"} <= \
        set(ds.column_names)
    for r in ds:
        assert r["data_source"] == "rewatch" and r["ability"] == "video_reasoning"
        assert r["prompt"][0]["role"] == "user"
        assert r["prompt"][0]["content"].count("<video>") == len(r["videos"]) == 1
        v = r["videos"][0]
        assert v["video"].startswith("file://") and Path(v["video"][7:]).exists()
        assert (v["fps"], v["max_frames"], v["max_pixels"]) == (2.0, 192, 128 * 28 * 28)
        gt = r["reward_model"]["ground_truth"]
        assert r["extra_info"]["options"][gt] and r["extra_info"]["question"]
        assert r["extra_info"]["caption"].startswith("[00:00-") and r["extra_info"]["has_caption"]


def test_llamafactory_files_follow_its_sharegpt_schema(exported: Path) -> None:
    lf = exported / "llamafactory"
    info = json.loads((lf / "dataset_info.json").read_text())
    entry = info["rewatch_sft"]
    assert entry["formatting"] == "sharegpt"
    assert entry["columns"] == {"messages": "messages", "videos": "videos"}
    assert entry["tags"] == {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                             "assistant_tag": "assistant"}
    rows = json.loads((lf / entry["file_name"]).read_text())
    assert rows
    for r in rows:
        roles = [m[entry["tags"]["role_tag"]] for m in r["messages"]]
        assert roles == ["user", "assistant"]
        user = r["messages"][0]["content"]
        assert user.count("<video>") == len(r["videos"]) == 1 and user.startswith("<video>")
        assert all(Path(v).exists() for v in r["videos"])
    assert "rewatch_sft_val" in info and (lf / info["rewatch_sft_val"]["file_name"]).exists()


def test_manifest_and_heldout_set(exported: Path) -> None:
    m = json.loads((exported / "manifest.json").read_text())
    assert m["videos"]["heldout"] == 1 and m["videos"]["train"] >= 2
    assert sum(m["sft_train"].values()) == m["files"]["trl/sft_train"]
    held = json.loads((exported / "heldout" / "minerva.json").read_text())
    assert held and len(held) == m["files"]["heldout_mcq"]
    assert all((exported / "heldout" / "videos" / f"{r['video_id']}.mp4").exists() for r in held)


def test_cli_formats_and_errors(tmp_path: Path) -> None:
    write_run(tmp_path)  # one video with hostile caption text: everything goes to training
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(tmp_path), "--format", "verl"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "export"
    assert (out / "verl" / "train.parquet").exists() and not (out / "trl").exists()
    assert json.loads((out / "manifest.json").read_text())["videos"]["heldout"] == 0
    result = runner.invoke(app, ["export", str(tmp_path), "--format", "trl,llamafactory"])
    assert result.exit_code == 0, result.output
    think = next(r for r in lines(out / "trl" / "sft_train.jsonl") if r["task"] == "think")
    assert think["messages"][1]["content"][0]["text"].endswith("<answer>B</answer>")
    bad = runner.invoke(app, ["export", str(tmp_path), "--format", "csv"])
    assert bad.exit_code == 2 and "unknown export format" in said(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = runner.invoke(app, ["export", str(empty)])
    assert bad.exit_code == 2 and "has no captions" in said(bad)
    cfg = tmp_path / "mix.yaml"
    cfg.write_text("data:\n  sft_mix: {caption: 0, direct: 0, think: 0}\n")
    bad = runner.invoke(app, ["export", str(tmp_path), "--config", str(cfg)])
    assert bad.exit_code == 2 and "yields no samples" in said(bad)
