"""Thin trainer adapters over `orr.score`: verl / EasyR1 `compute_score` and TRL GRPO rewards.

Trainers call reward functions synchronously. The judges are async `ChatModel`s whose HTTP
clients and semaphores belong to one event loop, so every `ORReward` owns a private event loop
on a daemon thread and submits batches to it: this works from plain code, from threads, and
from code that already runs an event loop (a notebook, an async trainer).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from rewatch.models.base import ChatModel
from rewatch.reward.judges import RewardJudge, build_judge
from rewatch.reward.orr import RewardBreakdown, RewardWeights, score_many
from rewatch.reward.parse import MAX_STEPS

log = logging.getLogger(__name__)
T = TypeVar("T")
CONFIG_ENV = "REWATCH_REWARD_CONFIG"  # a config file for the module-level `compute_score`


class _LoopThread:
    """A private asyncio loop on a daemon thread; `run` blocks the caller until a coroutine ends."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="rewatch-reward-loop")
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("ORReward called from its own event loop; await orr.score instead")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


class ORReward:
    """The O&R reward for trainers: a judge, weights and a private event loop.

    on_judge_failure: `acc_only` gives a failed sample w_acc·r_acc + w_fmt·r_fmt (and logs it
    as failed), `raise` stops the training step.
    """

    def __init__(self, judge: RewardJudge | ChatModel | None = None,
                 weights: RewardWeights = RewardWeights(), *, concurrency: int = 32,
                 max_steps: int = MAX_STEPS, on_judge_failure: str = "acc_only"):
        if on_judge_failure not in ("acc_only", "raise"):
            raise ValueError("on_judge_failure must be 'acc_only' or 'raise'")
        self.judge = judge if judge is None or isinstance(judge, RewardJudge) \
            else RewardJudge(judge)
        self.weights = weights
        self.concurrency = concurrency
        self.max_steps = max_steps
        self.on_judge_failure = on_judge_failure
        self._loop: _LoopThread | None = None
        self._lock = threading.Lock()
        self._memo: tuple[Any, list[RewardBreakdown]] | None = None

    @classmethod
    def from_config(cls, config: str | Path | None = None, overrides: Sequence[str] = (),
                    *, judge: str = "config", cache_path: str | Path | None = None) -> ORReward:
        """Build from a rewatch config (path or name) and a judge choice (see `build_judge`)."""
        from rewatch.config import load_config
        from rewatch.models.cache import ResponseCache

        cfg = load_config(config, list(overrides))
        cache = None
        if cfg.cache and judge != "none":
            cache = ResponseCache(cache_path or Path.home() / ".cache" / "rewatch-kit"
                                  / "reward_cache.sqlite")
        r = cfg.reward
        return cls(build_judge(cfg, judge, cache), RewardWeights.from_config(r),
                   concurrency=r.concurrency, max_steps=r.max_steps,
                   on_judge_failure=r.on_judge_failure)

    def score_batch(self, items: Sequence[Mapping[str, Any]]) -> list[RewardBreakdown]:
        """Score `{response, answer, question, caption[, options]}` items; blocks until done."""
        with self._lock:
            if self._loop is None:
                self._loop = _LoopThread()
        return self._loop.run(score_many(items, judge=self.judge, weights=self.weights,
                                         concurrency=self.concurrency, max_steps=self.max_steps))

    def train_score(self, b: RewardBreakdown) -> float:
        """The number a trainer optimises: `overall`, or the failure policy's fallback."""
        if b.overall is not None:
            return b.overall
        if self.on_judge_failure == "raise" and b.failed:
            raise RuntimeError(f"O&R judge failed: {b.error}")
        w = self.weights
        log.warning("O&R reward not computed (%s): using w_acc·r_acc + w_fmt·r_fmt",
                    b.error or b.skip_reason)
        return w.w_acc * (b.acc or 0.0) + w.w_fmt * b.fmt

    # --- verl / EasyR1 -----------------------------------------------------------------
    def verl_dict(self, b: RewardBreakdown) -> dict[str, float]:
        """verl's dict return: `score` is optimised, every other key is logged (floats only)."""
        return {"score": self.train_score(b), "acc": b.acc or 0.0, "obs": b.obs or 0.0,
                "rea": b.rea or 0.0, "fmt": b.fmt, "n_steps": float(b.n_steps),
                "judge_skipped": float(b.judge_skipped), "judge_failed": float(b.failed)}

    # --- TRL ---------------------------------------------------------------------------
    def _trl_batch(self, completions: Sequence[Any], kwargs: Mapping[str, Any]) -> \
            list[RewardBreakdown]:
        items = [_trl_item(completions, kwargs, i) for i in range(len(completions))]
        key = tuple((it["response"], it["answer"], it["question"], it["caption"],
                     repr(it["options"])) for it in items)
        memo = self._memo
        if memo is not None and memo[0] == key:
            return memo[1]  # the other component functions of the same TRL step
        out = self.score_batch(items)
        self._memo = (key, out)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and out:
            log_metric("orr/judge_failed", sum(b.failed for b in out) / len(out))
            log_metric("orr/judge_skipped", sum(b.judge_skipped for b in out) / len(out))
        return out

    def trl_reward_functions(self) -> list[Callable[..., list[float | None]]]:
        """TRL GRPO reward functions: the O&R reward, then r_acc, r_obs, r_rea, r_fmt for
        logging. Give `GRPOConfig(reward_weights=[1, 0, 0, 0, 0])` to train on O&R only."""

        def make(name: str, pick: Callable[[RewardBreakdown], float | None]) -> Callable[..., Any]:
            def reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
                return [pick(b) for b in self._trl_batch(completions, kwargs)]

            reward.__name__ = reward.__qualname__ = name
            reward.__doc__ = f"{name} of the O&R reward (None where not computed)."
            return reward

        return [make("orr_reward", self.train_score),
                make("accuracy_reward", lambda b: b.acc),
                make("observation_reward", lambda b: b.obs),
                make("reasoning_reward", lambda b: b.rea),
                make("format_reward", lambda b: b.fmt)]

    def close(self) -> None:
        """Stop the private event loop."""
        if self._loop is not None:
            self._loop.loop.call_soon_threadsafe(self._loop.loop.stop)
            self._loop.thread.join(timeout=5)
            self._loop = None


def _text(completion: Any) -> str:
    """A TRL completion as text: a string, or chat messages (content string or parts)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(_text(m) for m in completion)
    if isinstance(completion, dict):
        content = completion.get("content", completion.get("text", ""))
        return content if isinstance(content, str) else _text(content)
    return str(completion)


def _trl_item(completions: Sequence[Any], kw: Mapping[str, Any], i: int) -> dict[str, Any]:
    """One row's fields from TRL's dataset columns (plain columns or verl-style records)."""
    def col(*names: str) -> Any:
        for n in names:
            v = kw.get(n)
            if isinstance(v, (list, tuple)) and i < len(v) and v[i] is not None:
                return v[i]
        return None

    extra = col("extra_info") or {}
    answer = col("answer", "ground_truth", "solution")
    if answer is None:
        answer = (col("reward_model") or {}).get("ground_truth")
    return {
        "response": _text(completions[i]),
        "answer": "" if answer is None else str(answer),
        "question": str(col("question") or extra.get("question", "")),
        "caption": str(col("caption") or extra.get("caption", "")),
        "options": col("options") or extra.get("options") or None,
    }


# --- verl module-level entry points (custom_reward_function.path=<this file>) -------------
_DEFAULT: dict[tuple[Any, ...], ORReward] = {}
_DEFAULT_LOCK = threading.Lock()


def default_reward(config: str | None = None, judge: str = "config",
                   overrides: Sequence[str] = ()) -> ORReward:
    """The process-wide ORReward for a config (default: $REWATCH_REWARD_CONFIG or built-in)."""
    key = (config or os.environ.get(CONFIG_ENV), judge, tuple(overrides))
    with _DEFAULT_LOCK:
        if key not in _DEFAULT:
            _DEFAULT[key] = ORReward.from_config(key[0], overrides, judge=judge)
        return _DEFAULT[key]


def _verl_item(solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None) \
        -> dict[str, Any]:
    extra = dict(extra_info or {})
    return {"response": solution_str, "answer": str(ground_truth),
            "question": str(extra.get("question") or ""),
            "caption": str(extra.get("caption") or ""), "options": extra.get("options") or None}


def compute_score(data_source: str, solution_str: str, ground_truth: Any,
                  extra_info: Mapping[str, Any] | None = None, *, config: str | None = None,
                  judge: str = "config", **kwargs: Any) -> dict[str, float]:
    """verl's reward function: the caption and question travel in `extra_info` (see
    `rewatch export`); extra keyword arguments come from `custom_reward_function.reward_kwargs`."""
    reward = default_reward(config, judge)
    b = reward.score_batch([_verl_item(solution_str, ground_truth, extra_info)])[0]
    return reward.verl_dict(b)


def compute_score_batch(data_sources: Sequence[str], solution_strs: Sequence[str],
                        ground_truths: Sequence[Any],
                        extra_infos: Sequence[Mapping[str, Any] | None] | None = None, *,
                        config: str | None = None, judge: str = "config",
                        **kwargs: Any) -> list[dict[str, float]]:
    """verl's batch reward manager entry (`reward_model.reward_manager=batch`): all judge calls
    of the batch run concurrently."""
    reward = default_reward(config, judge)
    extras = list(extra_infos) if extra_infos is not None else [None] * len(solution_strs)
    items = [_verl_item(s, g, e) for s, g, e in zip(solution_strs, ground_truths, extras,
                                                     strict=True)]
    return [reward.verl_dict(b) for b in reward.score_batch(items)]
