"""`rewatch train grpo`: real GRPOTrainer steps from the SFT checkpoint with the O&R reward,
judged by the embedded model (SmolLM2-135M in llama.cpp): every component is logged by name with
real values, and the parameters change."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from train_scripted import pipeline_run, sft_student, small_sft_data, student_config

from rewatch.train.grpo import COMPONENTS, train_grpo


@pytest.mark.slow
@pytest.mark.timeout(1800)  # SFT + 2 GRPO steps: ~5 min on a 2-core box, far more when shared
def test_grpo_from_the_sft_checkpoint(tmp_path_factory: pytest.TempPathFactory,
                                      tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    base = tmp_path_factory.getbasetemp()
    init = sft_student(base)
    cfg = student_config()
    data = small_sft_data(pipeline_run(base), cfg)
    assert data.rl_train
    r = train_grpo(pipeline_run(base), init, tmp_path / "grpo", cfg, judge="embedded",
                   gguf=False, data=data)
    s = r.summary
    assert s["steps"] == 2 and s["seconds_per_step"] > 0
    logs = [json.loads(x) for x in (tmp_path / "grpo" / "log.jsonl").read_text().splitlines()]
    steps = [row for row in logs if "rewards/orr_reward/mean" in row]
    assert len(steps) == 2
    for name in COMPONENTS:
        assert all(f"rewards/{name}/mean" in row for row in steps), name

    def finite(v: float | None) -> float:  # None / NaN: not computed at that step
        return v if v is not None and math.isfinite(v) else -math.inf

    def values(name: str) -> list[float]:
        return [v for row in steps if (v := finite(row[f"rewards/{name}/mean"])) > -math.inf]

    assert values("format_reward")  # r_fmt is computed for every completion
    assert values("accuracy_reward") and all(0 <= v <= 1 for v in values("accuracy_reward"))
    # the student has seen these prompts' chains: some rollouts name the key, and those are
    # judged (r_obs, r_rea) and score r_acc · (1 + r_obs + r_rea) + r_fmt above r_fmt
    assert max(values("accuracy_reward")) > 0, steps
    assert values("observation_reward") and values("reasoning_reward"), steps
    assert any(finite(row["rewards/orr_reward/mean"]) > finite(row["rewards/format_reward/mean"])
               for row in steps), steps
    assert "orr/judge_skipped" in {k for row in logs for k in row}
    before = load_file(str(init / "model" / "model.safetensors"))
    after = load_file(str(r.model / "model.safetensors"))
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, "GRPO did not change any parameter"
    assert min(row["frac_reward_zero_std"] for row in steps) < 1  # a group with an advantage
