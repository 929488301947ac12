"""The O&R reward as verl loads it: `custom_reward_function.path=<this file>`.

`compute_score` (naive reward manager), `compute_score_batch` (batch manager: all judge calls of
a step at once) and `compute_score_async` (verl's async reward loop) wrap the reward's verl
adapter (`rewatch.reward.adapters`). A sample whose `extra_info` has no C_detail (external
Video-R1 questions without captions) cannot be judged for r_obs and r_rea: it gets
w_acc·r_acc + w_fmt·r_fmt by rule, no judge call, and `no_caption = 1` in the logged metrics.
`reward_kwargs` pass `config` (a rewatch config file naming the judge endpoints) and `judge`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from rewatch.reward import adapters
from rewatch.reward.orr import RewardWeights, score_rules


def _has_caption(extra_info: Mapping[str, Any] | None) -> bool:
    return bool((extra_info or {}).get("caption"))


def _rules(solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None,
           reward: adapters.ORReward) -> dict[str, float]:
    w = reward.weights
    b = score_rules(solution_str, str(ground_truth), (extra_info or {}).get("options"),
                    weights=RewardWeights(w.w_acc, 0.0, 0.0, w.w_fmt))
    b.skip_reason = "no caption: r_obs and r_rea skipped"
    return {**reward.verl_dict(b), "no_caption": 1.0}


def compute_score(data_source: str, solution_str: str, ground_truth: Any,
                  extra_info: Mapping[str, Any] | None = None, *, config: str | None = None,
                  judge: str = "config", **kwargs: Any) -> dict[str, float]:
    """verl's per-sample reward: the O&R reward, or r_acc + r_fmt without a caption."""
    if not _has_caption(extra_info):
        return _rules(solution_str, ground_truth, extra_info,
                      adapters.default_reward(config, judge))
    out = adapters.compute_score(data_source, solution_str, ground_truth, extra_info,
                                 config=config, judge=judge)
    return {**out, "no_caption": 0.0}


def compute_score_batch(data_sources: Sequence[str], solution_strs: Sequence[str],
                        ground_truths: Sequence[Any],
                        extra_infos: Sequence[Mapping[str, Any] | None] | None = None, *,
                        config: str | None = None, judge: str = "config",
                        **kwargs: Any) -> list[dict[str, float]]:
    """verl's batch reward manager entry: captioned samples are judged concurrently."""
    extras = list(extra_infos) if extra_infos is not None else [None] * len(solution_strs)
    reward = adapters.default_reward(config, judge)
    judged = [i for i, e in enumerate(extras) if _has_caption(e)]
    scored = adapters.compute_score_batch(
        [data_sources[i] for i in judged], [solution_strs[i] for i in judged],
        [ground_truths[i] for i in judged], [extras[i] for i in judged],
        config=config, judge=judge) if judged else []
    out: list[dict[str, float]] = [{} for _ in solution_strs]
    for i, s in zip(judged, scored, strict=True):
        out[i] = {**s, "no_caption": 0.0}
    for i, e in enumerate(extras):
        if not out[i]:
            out[i] = _rules(solution_strs[i], ground_truths[i], e, reward)
    return out


async def compute_score_async(data_source: str, solution_str: str, ground_truth: Any,
                              extra_info: Mapping[str, Any] | None = None, **kwargs: Any
                              ) -> dict[str, float]:
    """verl's async reward loop entry: the judge calls run on the reward's own loop thread, so
    verl's event loop is never blocked."""
    return await asyncio.to_thread(compute_score, data_source, solution_str, ground_truth,
                                   extra_info, **kwargs)
