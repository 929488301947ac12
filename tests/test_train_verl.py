"""`rewatch train verl --dry-run`: our checks always; verl's own schema, validate_config, reward
loader and dataset code when verl's environment exists (`make verl-env` builds .venv-verl)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from train_scripted import pipeline_run
from typer.testing import CliRunner

from rewatch.cli import app
from rewatch.config import Config
from rewatch.train.verl import reward as verl_reward
from rewatch.train.verl.launch import VerlError, prepare

VERL_PYTHON = Path(__file__).resolve().parent.parent / ".venv-verl" / "bin" / "python"
needs_verl = pytest.mark.skipif(not VERL_PYTHON.exists(),
                                reason="verl's own environment is built by `make verl-env`")


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pipeline_run(tmp_path_factory.getbasetemp())


def test_dry_run_writes_the_papers_settings(run_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "verl", str(run_dir), "--out", str(tmp_path),
                                      "--dry-run", "--verl-python", sys.executable])
    assert result.exit_code == 0, result.output
    o = (tmp_path / "overrides.txt").read_text().splitlines()
    for want in ("algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.n=8",
                 "actor_rollout_ref.rollout.temperature=0.8",
                 "actor_rollout_ref.rollout.top_p=0.9", "data.video_key=videos",
                 "reward.custom_reward_function.name=compute_score_async",
                 f"reward.custom_reward_function.path={Path(verl_reward.__file__).resolve()}"):
        assert want in o
    checks = json.loads((tmp_path / "dry_run.json").read_text())
    assert checks["data"]["video"] == {"fps": 2.0, "max_frames": 192, "max_pixels": 128 * 28 * 28}
    assert checks["data"]["train"]["rows"] > 0
    r = checks["data"]["reward_on_a_wrong_answer"]
    assert r["acc"] == 0.0 and r["judge_skipped"] == 1.0 and r["fmt"] == 1.0
    assert "launch.sh" in result.output and (tmp_path / "launch.sh").stat().st_mode & 0o100


def test_the_reward_skips_process_rewards_without_a_caption() -> None:
    good = ("I look. <action>segment_query(\"00:01\")</action><observation>a cyclist passes"
            "</observation> So B. <answer>B</answer>")
    extra = {"question": "What passes?", "options": {"A": "a car", "B": "a cyclist"},
             "caption": ""}
    out = verl_reward.compute_score("video-r1", good, "B", extra, judge="none")
    assert out["score"] == 2.0 and out["acc"] == 1.0 and out["no_caption"] == 1.0
    batch = verl_reward.compute_score_batch(["video-r1"] * 2, [good, good.replace(">B<", ">A<")],
                                            ["B", "B"], [extra, extra], judge="none")
    assert [b["score"] for b in batch] == [2.0, 1.0]


def test_a_run_without_rl_samples_is_an_error(run_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "captions_only"
    run.mkdir()
    (run / "captions.jsonl").write_text((run_dir / "captions.jsonl").read_text())
    with pytest.raises(VerlError, match="no RL samples on the training side"):
        prepare(run, tmp_path / "out", Config(), verl_python=sys.executable)


@needs_verl
def test_dry_run_against_verls_own_code(run_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "verl", str(run_dir), "--out", str(tmp_path),
                                      "--dry-run", "--verl-python", str(VERL_PYTHON)])
    assert result.exit_code == 0, result.output
    v = json.loads((tmp_path / "dry_run.json").read_text())["verl"]
    assert v["verl_version"] == "0.9.1"
    assert v["rollout"] == {"n": 8, "temperature": 0.8, "top_p": 0.9}
    assert v["video_part"]["type"] == "video" and v["video_part"]["fps"] == 2.0
    assert v["reward"]["acc"] == 0.0 and "no_caption" in v["reward"]


@needs_verl
def test_a_mistyped_verl_key_is_refused_by_verls_schema(run_dir: Path, tmp_path: Path) -> None:
    cfg = Config()
    cfg.train.verl.extra = ["actor_rollout_ref.rollout.temprature=0.7"]
    with pytest.raises(VerlError, match="temprature"):
        prepare(run_dir, tmp_path, cfg, verl_python=str(VERL_PYTHON))
