"""`rewatch train grpo RUN --init CKPT --out DIR`: GRPO with the O&R reward (TRL GRPOTrainer) on
the text-proxy student, starting from the SFT checkpoint (the paper: "RL requires a strong initial
policy").

Rollouts use the paper's temperature 0.8 and top_p 0.9. The optimised reward is `orr_reward`
(r_acc · (1 + r_obs + r_rea) + r_fmt); `accuracy_reward`, `observation_reward`,
`reasoning_reward` and `format_reward` are logged beside it with weight 0, each under its own
name (`rewards/<name>/mean`), with `orr/judge_skipped` (the r_acc = 0 short circuit) and
`orr/judge_failed`. The judge is `train.grpo.judge`: the config's reward judge, the embedded
model, none, or any OpenAI-compatible URL.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from rewatch.config import Config
from rewatch.data.export import TrainingData, build_data, grpo_record
from rewatch.data.samples import DataError
from rewatch.train.sft import TrainResult, peak_rss_mb, prepare_out
from rewatch.train.student import (
    check_same_model,
    export_gguf,
    model_folder,
    resolve_base,
    save_trained,
    write_meta,
)

log = logging.getLogger(__name__)
COMPONENTS = ("orr_reward", "accuracy_reward", "observation_reward", "reasoning_reward",
              "format_reward")


def grpo_dataset(data: TrainingData, cfg: Config) -> Any:
    """The RL prompts in text-proxy mode (items without C_detail cannot be shown as text and
    are left out, counted in the log)."""
    from datasets import Dataset

    rows = [grpo_record(s, cfg) for s in data.rl_train if s.has_caption]
    left = len(data.rl_train) - len(rows)
    if left:
        log.info("GRPO text-proxy: %d RL samples without C_detail left out", left)
    if not rows:
        raise DataError("no RL samples with a caption on the training side: text-proxy GRPO "
                        "shows C_detail in place of the video")
    return Dataset.from_list(rows)


def build_reward(cfg: Config, out: Path, judge: str | None = None) -> Any:
    """The O&R reward for TRL with the chosen judge (responses cached under DIR)."""
    from rewatch.models.cache import ResponseCache
    from rewatch.reward.adapters import ORReward
    from rewatch.reward.judges import build_judge
    from rewatch.reward.orr import RewardWeights

    choice = judge or cfg.train.grpo.judge
    cache = ResponseCache(out / "judge_cache.sqlite") if cfg.cache and choice != "none" else None
    r = cfg.reward
    return ORReward(build_judge(cfg, choice, cache), RewardWeights.from_config(r),
                    concurrency=r.concurrency, max_steps=r.max_steps,
                    on_judge_failure=r.on_judge_failure)


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def train_grpo(run_dir: str | Path, init: str | Path, out: str | Path, cfg: Config, *,
               resume: bool = False, max_steps: int | None = None, judge: str | None = None,
               gguf: bool = True, data: TrainingData | None = None) -> TrainResult:
    """GRPO from `init` on a run's RL set; DIR is laid out like `train_sft`'s."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    out = Path(out)
    base = resolve_base(cfg.train.base_model)
    init_dir = model_folder(init)
    check_same_model(init_dir, base)
    ckpt = prepare_out(out, resume, base)
    data = data or build_data(run_dir, cfg)
    train_set = grpo_dataset(data, cfg)
    g = cfg.train.grpo
    if g.batch_size % g.num_generations:
        raise ValueError(f"train.grpo.batch_size ({g.batch_size}) must be a multiple of "
                         f"train.grpo.num_generations ({g.num_generations})")
    torch.manual_seed(g.seed)
    tok = AutoTokenizer.from_pretrained(init_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(init_dir, dtype=torch.float32)
    reward = build_reward(cfg, out, judge)
    args = GRPOConfig(
        output_dir=str(out), use_cpu=True, per_device_train_batch_size=g.batch_size,
        num_generations=g.num_generations, max_completion_length=g.max_completion_length,
        max_steps=max_steps or g.max_steps, learning_rate=g.learning_rate,
        temperature=g.temperature, top_p=g.top_p, beta=g.beta, logging_steps=g.logging_steps,
        save_steps=g.save_steps, seed=g.seed, report_to=[], bf16=False, fp16=False,
        reward_weights=[1.0, 0.0, 0.0, 0.0, 0.0], log_completions=False, disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=reward.trl_reward_functions(), args=args,
                          train_dataset=train_set, processing_class=tok)
    t0 = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    finally:
        reward.close()
    wall = time.perf_counter() - t0
    final, history = save_trained(trainer, tok, out)
    steps = trainer.state.global_step - (int(ckpt.name[11:]) if ckpt else 0)
    rewards = {name: [_finite(r.get(f"rewards/{name}/mean")) for r in history
                      if f"rewards/{name}/mean" in r] for name in COMPONENTS}
    summary = {
        "stage": "grpo", "run": str(run_dir), "init": str(init_dir),
        "base_model": cfg.train.base_model, "steps": trainer.state.global_step,
        "judge": judge or g.judge, "prompts": len(train_set),
        "num_generations": g.num_generations, "temperature": g.temperature, "top_p": g.top_p,
        "train_seconds": round(wall, 2),
        "seconds_per_step": round(wall / steps, 2) if steps else None,
        "peak_rss_mb": round(peak_rss_mb(), 1), "rewards_per_step": rewards,
        "judge_skipped": [_finite(r.get("orr/judge_skipped")) for r in history
                          if "orr/judge_skipped" in r],
    }
    write_meta(final, base_model=cfg.train.base_model, stage="grpo", run=str(run_dir),
               init=str(init_dir), steps=trainer.state.global_step)
    gguf_path = export_gguf(final, out / "model.gguf") if gguf else None
    summary["gguf"] = str(gguf_path) if gguf_path else None
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    log.info("GRPO done: %d steps, %.1f s/step", summary["steps"],
             summary["seconds_per_step"] or 0)
    return TrainResult(out, final, gguf_path, summary)
