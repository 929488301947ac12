"""The O&R (Observation & Reasoning) reward of ReWatch-R1: see docs/reward.md."""

from rewatch.reward.judges import JudgeError, RewardJudge, Verdict
from rewatch.reward.orr import (
    ABLATIONS,
    RewardBreakdown,
    RewardWeights,
    observation_reward,
    reasoning_reward,
    score,
    score_many,
    score_rules,
)
from rewatch.reward.parse import ParsedResponse, Step, format_reward, parse_response

__all__ = [
    "ABLATIONS", "JudgeError", "ParsedResponse", "RewardBreakdown", "RewardJudge",
    "RewardWeights", "Step", "Verdict", "format_reward", "observation_reward", "parse_response",
    "reasoning_reward", "score", "score_many", "score_rules",
]
