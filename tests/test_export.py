"""SFT/RL exports from a run directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from typer.testing import CliRunner

from rewatch.cli import app

sys.path.insert(0, str(Path(__file__).parent))
from test_viewer import write_run  # noqa: E402


def test_export_writes_three_sft_tasks_and_rl_records(tmp_path):
    write_run(tmp_path)
    result = CliRunner().invoke(app, ["export", str(tmp_path)])
    assert result.exit_code == 0, result.output
    sft = [json.loads(x) for x in (tmp_path / "export" / "sft.jsonl").read_text().splitlines()]
    assert sorted(s["task"] for s in sft) == ["caption", "direct", "think"]
    think = next(s for s in sft if s["task"] == "think")
    assert think["messages"][0]["content"][0] == {"type": "video", "video": think["video"]}
    assert "00:00-00:10" in think["messages"][0]["content"][1]["text"]
    assert think["messages"][1]["content"].endswith("<answer>B</answer>")
    caption = next(s for s in sft if s["task"] == "caption")
    assert caption["messages"][1]["content"].startswith("[00:00-00:01] tags: mountain bike")
    direct = next(s for s in sft if s["task"] == "direct")
    assert direct["messages"][1]["content"] == "B"
    lf = json.loads((tmp_path / "export" / "sft_llamafactory.json").read_text())
    assert all(x["messages"][0]["content"].startswith("<video>") for x in lf)
    rl = [json.loads(x) for x in (tmp_path / "export" / "rl.jsonl").read_text().splitlines()]
    assert rl[0]["reward_model"]["ground_truth"] == "B"
    assert "[00:01-00:03]" in rl[0]["extra_info"]["caption"]
