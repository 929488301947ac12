"""Validate a `rewatch train verl` folder with verl's own code (run in verl's environment).

`python -m rewatch.train.verl.check DIR` composes verl's `ppo_trainer` Hydra config with
DIR/overrides.txt (an unknown or mistyped key fails here), runs verl's `validate_config`, loads
our reward through verl's `get_custom_reward_fn` and calls it on the first training row, and
expands that row's `<video>` placeholder with verl's dataset code. It prints one JSON line.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any


def check(out: Path) -> dict[str, Any]:
    """verl's checks of the config and data in `out`; raises on the first failure."""
    import pyarrow.parquet as pq
    import verl
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from rewatch.train.verl.launch import wrong_answer

    overrides = [x for x in (out / "overrides.txt").read_text().splitlines() if x.strip()]
    config_dir = Path(verl.__file__).parent / "trainer" / "config"
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        cfg = compose(config_name="ppo_trainer", overrides=overrides)
    validate_config(cfg, use_reference_policy=need_reference_policy(cfg),
                    use_critic=need_critic(cfg))
    fn = get_custom_reward_fn(cfg)
    if fn is None:
        raise RuntimeError("verl found no custom reward function")
    row = pq.read_table(cfg.data.train_files).slice(0, 1).to_pylist()[0]
    result = fn(data_source=row["data_source"], solution_str=wrong_answer(row),
                ground_truth=row["reward_model"]["ground_truth"],
                extra_info={**row["extra_info"], "num_turns": None})
    if inspect.isawaitable(result):
        result = asyncio.run(result)  # type: ignore[arg-type]
    holder = SimpleNamespace(image_key=cfg.data.image_key, video_key=cfg.data.video_key,
                             audio_key=cfg.data.get("audio_key", "audios"), processor=object())
    messages = RLHFDataset._build_messages(holder, dict(row), cfg.data.prompt_key)  # type: ignore[arg-type]
    parts = [p for m in messages for p in (m["content"] if isinstance(m["content"], list)
                                           else [])]
    videos = [p for p in parts if p.get("type") == "video"]
    if len(videos) != len(row["videos"]):
        raise RuntimeError(f"verl expanded {len(videos)} video parts for {len(row['videos'])}")
    r = cfg.actor_rollout_ref.rollout
    return {"verl_version": verl.__version__, "reward": result,
            "reward_function": cfg.reward.custom_reward_function.name,
            "rollout": {"n": r.n, "temperature": r.temperature, "top_p": r.top_p},
            "video_part": {k: videos[0].get(k) for k in ("type", "video", "fps", "max_frames",
                                                          "max_pixels")},
            "adv_estimator": cfg.algorithm.adv_estimator,
            "resolved_keys": len(OmegaConf.to_container(cfg, resolve=False))}  # type: ignore[arg-type]


def main() -> None:
    """Entry point: `python -m rewatch.train.verl.check DIR`."""
    print(json.dumps(check(Path(sys.argv[1])), default=str))


if __name__ == "__main__":
    main()
