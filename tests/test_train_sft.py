"""`rewatch train sft`: a real SFTTrainer run of SmolLM2-135M on a run written by Stages 1-3, in
text-proxy mode; the checkpoint reloads in transformers and in llama.cpp (GGUF) and answers
through `rewatch eval run`; resume, and the bad-input errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from train_scripted import pipeline_run, sft_student, small_sft_data, student_config
from typer.testing import CliRunner

from rewatch.cli import app
from rewatch.train.sft import prepare_out, train_sft
from rewatch.train.student import CheckpointError, base_model_dir, check_same_model, read_meta


def said(result) -> str:  # type: ignore[no-untyped-def]
    """CLI output with the console's line wrapping undone."""
    return " ".join(result.output.split())


@pytest.fixture(scope="session")
def student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sft_student(tmp_path_factory.getbasetemp())


def mean_nll(model_dir: Path, rows: list[dict]) -> float:
    """Mean token NLL of the completions under a model (TRL's own tokenisation)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.data_utils import apply_chat_template

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    total, n = 0.0, 0
    for r in rows:
        t = apply_chat_template({"prompt": r["prompt"], "completion": r["completion"]}, tok)
        p = tok(t["prompt"], add_special_tokens=False)["input_ids"]
        c = tok(t["completion"], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p + c])
        labels = torch.tensor([[-100] * len(p) + c])
        with torch.no_grad():
            loss = model(input_ids=ids, labels=labels).loss
        total += float(loss) * len(c)
        n += len(c)
    return total / n


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the session's SFT run is set up here first
def test_sft_trains_logs_each_task_and_lowers_the_loss(student: Path, tmp_path: Path) -> None:
    from rewatch.data.export import trl_text_record

    summary = json.loads((student / "summary.json").read_text())
    assert summary["steps"] == 10 and summary["tokens"] > 0 and summary["peak_rss_mb"] > 0
    logs = [json.loads(x) for x in (student / "log.jsonl").read_text().splitlines()]
    logged = {k for r in logs for k in r}
    assert {"loss", "loss_caption", "loss_direct", "loss_think"} <= logged
    cfg = student_config()
    data = small_sft_data(pipeline_run(student.parent), cfg)
    think = [trl_text_record(s, cfg) for s in data.sft_train if s.task == "think"][:2]
    assert think
    before, after = mean_nll(base_model_dir(), think), mean_nll(student / "model", think)
    assert after < 0.7 * before, (before, after)
    meta = read_meta(student / "model")
    assert meta["stage"] == "sft" and meta["base_model"] == "smollm2-135m"


@pytest.mark.slow
def test_checkpoint_reloads_and_generates(student: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rewatch.models.local import EmbeddedChatModel

    tok = AutoTokenizer.from_pretrained(student / "model")
    model = AutoModelForCausalLM.from_pretrained(student / "model", dtype=torch.float32)
    ids = tok.apply_chat_template([{"role": "user", "content": "Name a colour."}],
                                  add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    import asyncio

    llm = EmbeddedChatModel("sft-student", model_path=str(student / "model.gguf"), n_ctx=2048)
    reply = asyncio.run(llm.chat([{"role": "user", "content": "Name a colour."}],
                                 max_tokens=12, temperature=0.0))
    assert reply.usage.completion_tokens > 0 and reply.text.strip()


@pytest.mark.slow
def test_rewatch_eval_runs_the_checkpoint(student: Path, tmp_path: Path) -> None:
    from rewatch.data.export import export_run

    export_run(pipeline_run(student.parent), tmp_path / "export", student_config(),
               formats=(), embedder=None)
    held = tmp_path / "export" / "heldout"
    result = CliRunner().invoke(app, [
        "eval", "run", "--bench", "minerva", "--data", str(held / "minerva.json"),
        "--videos", str(held / "videos"), "--inputs", "text_proxy", "--mode", "direct",
        "--captions", str(held / "captions.jsonl"), "--model", "student", "--limit", "2",
        "--out", str(tmp_path / "eval"), "--set", f"models.student.model_path={student}/model.gguf",
        "--set", "models.student.model=sft-student", "--set", "eval.max_tokens=16",
        "--set", "cache=false"])
    assert result.exit_code == 0, result.output
    preds = [json.loads(x) for x in (tmp_path / "eval" / "predictions.jsonl").read_text()
             .splitlines()]
    assert len(preds) == 2 and all(p["usage"]["completion_tokens"] > 0 for p in preds)


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint(student: Path, tmp_path: Path) -> None:
    n = json.loads((student / "summary.json").read_text())["steps"]
    ckpt = student / f"checkpoint-{n}"
    assert ckpt.is_dir()
    out = tmp_path / "resumed"
    (out / ckpt.name).mkdir(parents=True)
    for f in ckpt.iterdir():  # hard links: the trainer writes new folders, never these files
        os.link(f, out / ckpt.name / f.name)
    cfg = student_config()
    data = small_sft_data(pipeline_run(student.parent), cfg)
    r = train_sft(student.parent / "pipeline_run", out, cfg, resume=True, max_steps=n + 1,
                  gguf=False, data=data)
    assert r.summary["resumed_from"].endswith(ckpt.name) and r.summary["steps"] == n + 1
    logs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    # the history of steps 1-n comes back from the checkpoint; one step was trained
    assert [r["step"] for r in logs if "loss" in r] == list(range(1, n + 2))
    first = [json.loads(x) for x in (student / "log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in logs[:n]] == [r["loss"] for r in first if "loss" in r]
    assert r.summary["tokens"] < 600  # one sample's tokens, not the whole epoch again


def test_an_used_output_folder_needs_resume(tmp_path: Path) -> None:
    (tmp_path / "checkpoint-3").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="pass --resume"):
        prepare_out(tmp_path, resume=False, base=base_model_dir())
    result = CliRunner().invoke(app, ["train", "sft", str(tmp_path), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "already holds a training run" in said(result)


def test_a_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    cfg = json.loads((base_model_dir() / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 2,
                                                   "hidden_size": 64}))
    with pytest.raises(CheckpointError, match="another model"):
        check_same_model(other, base_model_dir())
    out = tmp_path / "out"
    (out / "checkpoint-2").mkdir(parents=True)
    shutil.copyfile(other / "config.json", out / "checkpoint-2" / "config.json")
    with pytest.raises(CheckpointError, match="another model"):
        prepare_out(out, resume=True, base=base_model_dir())
    result = CliRunner().invoke(app, ["train", "grpo", str(tmp_path), "--init", str(other),
                                      "--out", str(tmp_path / "g")])
    assert result.exit_code == 2 and "another model" in said(result)
    result = CliRunner().invoke(app, ["train", "grpo", str(tmp_path), "--init",
                                      str(tmp_path / "nothing"), "--out", str(tmp_path / "g")])
    assert result.exit_code == 2 and "not a model checkpoint" in said(result)


def test_empty_run_and_empty_mix(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
                                 ) -> None:
    result = CliRunner().invoke(app, ["train", "sft", str(tmp_path / "run"), "--out",
                                      str(tmp_path / "out")])
    assert result.exit_code == 2 and "no such run directory" in said(result)
    run = pipeline_run(tmp_path_factory.getbasetemp())
    result = CliRunner().invoke(app, ["train", "sft", str(run), "--out", str(tmp_path / "o2"),
                                      "--set", "data.sft_mix.caption=0",
                                      "--set", "data.sft_mix.direct=0",
                                      "--set", "data.sft_mix.think=0"])
    assert result.exit_code == 2 and "yields no samples" in said(result)


def test_demo_sft_is_off_by_default_and_reports_a_skip(tmp_path: Path,
                                                       tmp_path_factory: pytest.TempPathFactory
                                                       ) -> None:
    from rewatch.config import Config
    from rewatch.train.demo import demo_sft

    run = shutil.copytree(pipeline_run(tmp_path_factory.getbasetemp()), tmp_path / "run")
    summary: dict = {}
    assert demo_sft(Config(), run, summary) is None and summary == {}
    assert not (run / "sft").exists()
    cfg = Config()
    cfg.train.demo_sft = True
    cfg.data.sft_mix.caption = cfg.data.sft_mix.direct = cfg.data.sft_mix.think = 0
    assert demo_sft(cfg, run, summary) is None
    assert summary["SFT"].startswith("skipped:") and "yields no samples" in summary["SFT"]
