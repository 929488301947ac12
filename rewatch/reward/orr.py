"""The Observation & Reasoning (O&R) reward of ReWatch-R1, independent of any trainer.

    overall = w_acc · r_acc · (1 + w_obs · r_obs + w_rea · r_rea) + w_fmt · r_fmt

With every weight 1 this is the paper's r_O&R = r_acc × (1 + r_obs + r_rea) + r_fmt. The product
makes r_obs and r_rea irrelevant when r_acc = 0, so their judge calls are skipped and the sample
is reported as skipped. A judge that fails after its retries marks the sample `failed` with
`overall = None`: never a silent 0. Accuracy-only and format-only rewards are the same function
with other weights (`ABLATIONS`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from rewatch.models.base import ChatModel
from rewatch.reward.answers import AnswerKind, answer_kind, rule_accuracy
from rewatch.reward.judges import JudgeError, RewardJudge, quotes_caption
from rewatch.reward.parse import MAX_CHARS, MAX_STEPS, ParsedResponse, Step, parse_response


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the O&R formula; all 1 is the paper's reward."""

    w_acc: float = 1.0
    w_obs: float = 1.0
    w_rea: float = 1.0
    w_fmt: float = 1.0

    @classmethod
    def from_config(cls, cfg: Any) -> RewardWeights:
        """From a `RewardConfig` (or anything with w_acc, w_obs, w_rea, w_fmt)."""
        return cls(cfg.w_acc, cfg.w_obs, cfg.w_rea, cfg.w_fmt)

    @property
    def needs_judge(self) -> bool:
        return self.w_acc != 0 and (self.w_obs != 0 or self.w_rea != 0)


# The reward rows of the paper: RL with the accuracy (+ format) reward vs RL with O&R.
ABLATIONS: dict[str, RewardWeights] = {
    "o&r": RewardWeights(1, 1, 1, 1),
    "accuracy+format": RewardWeights(1, 0, 0, 1),
    "accuracy": RewardWeights(1, 0, 0, 0),
    "format": RewardWeights(0, 0, 0, 1),
    "observation-only": RewardWeights(1, 1, 0, 1),
    "reasoning-only": RewardWeights(1, 0, 1, 1),
}


@dataclass
class RewardBreakdown:
    """Every component by name, so trainers can log them; None means not computed."""

    overall: float | None
    acc: float | None
    obs: float | None
    rea: float | None
    fmt: float
    n_steps: int
    answer: str | None = None  # the parsed final answer
    inferred_answer: str | None = None  # A_ao, M_infer's answer from the evidence alone
    obs_verdicts: list[bool] = field(default_factory=list)  # one per step
    problems: list[str] = field(default_factory=list)
    judge_skipped: bool = False
    skip_reason: str | None = None
    judge_calls: int = 0  # judge calls this sample needed (cache hits included)
    judge_calls_saved: int = 0  # calls the r_acc = 0 short-circuit did not make
    failed: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def gather_or_cancel(*aws: Any) -> list[Any]:
    """asyncio.gather that cancels the other calls as soon as one fails: a sample whose judge
    failed is failed, so the rest of its calls are not worth paying for."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _combine(acc: float | None, obs: float | None, rea: float | None, fmt: float,
             w: RewardWeights) -> float | None:
    if acc is None:
        return None
    if acc == 0 or w.w_acc == 0:
        return w.w_fmt * fmt
    if (w.w_obs != 0 and obs is None) or (w.w_rea != 0 and rea is None):
        return None
    return w.w_acc * acc * (1 + w.w_obs * (obs or 0.0) + w.w_rea * (rea or 0.0)) + w.w_fmt * fmt


def _judgeable(steps: list[Step], judge: RewardJudge | None) -> list[Step]:
    """Steps a judge sees: well-formed, with an observation of sensible length."""
    limit = judge.max_observation_chars if judge is not None else 1000
    return [s for s in steps if s.problem is None and len(s.observation) <= limit]


def _planned_calls(steps: list[Step], kind: AnswerKind, w: RewardWeights,
                   max_steps: int, judge: RewardJudge | None, caption: str) -> int:
    if len(steps) > max_steps:
        return 0
    judged = {(s.action, s.observation) for s in _judgeable(steps, judge)}
    n = sum(not quotes_caption(caption, *pair) for pair in judged) if w.w_obs else 0
    if w.w_rea and judged:
        n += 1 + (kind == "free")
    return n


async def observation_reward(steps: list[Step], caption: str, judge: RewardJudge,
                             max_steps: int = MAX_STEPS) -> tuple[float, list[bool], int]:
    """r_obs: the mean verdict over steps (identical steps judged once; a step quoting C_detail
    at its own time is supported without a call, `quotes_caption`). Returns the reward, the
    per-step verdicts and the number of judge calls."""
    if not steps or len(steps) > max_steps:
        return 0.0, [False] * len(steps), 0
    unique = list(dict.fromkeys((s.action, s.observation) for s in _judgeable(steps, judge)))
    by_pair = {pair: True for pair in unique if quotes_caption(caption, *pair)}
    judged = [pair for pair in unique if pair not in by_pair]
    judge.stats["observation_quoted"] += len(by_pair)
    verdicts = await gather_or_cancel(*(judge.observation_verdict(caption, a, o)
                                        for a, o in judged))
    by_pair |= {pair: v.supported for pair, v in zip(judged, verdicts, strict=True)}
    per_step = [by_pair.get((s.action, s.observation), False) for s in steps]
    return sum(per_step) / len(per_step), per_step, len(judged)


async def reasoning_reward(steps: list[Step], question: str, answer: str,
                           options: dict[str, str] | None, kind: AnswerKind,
                           judge: RewardJudge) -> tuple[float, str | None, int]:
    """r_rea = M_judge(M_infer(Q, actions + observations), A_gt): does the evidence suffice?
    Letters and counts are compared by rule, free-form answers by the judge. Malformed or
    over-long steps are not evidence; no evidence scores 0 without a call."""
    evidence = _judgeable(steps, judge)
    if not evidence:
        return 0.0, None, 0
    inferred = await judge.infer_answer(question, options, evidence, kind)
    acc, _ = rule_accuracy(inferred, answer, options, kind)
    if acc is not None:
        return acc, inferred, 1
    verdict = await judge.answer_verdict(question, inferred, answer)
    return float(verdict.supported), inferred, 2


def normalize_options(options: Any) -> dict[str, str] | None:
    """Options as {letter: text}: a mapping (None values dropped, as parquet pads them) or a
    list (lettered A, B, …)."""
    if not options:
        return None
    if isinstance(options, dict) and all(
            type(k) is str and type(v) is str and k == k.strip() for k, v in options.items()):
        return options  # already {letter: text}: the common case, no copy
    if isinstance(options, Mapping):
        out = {str(k).strip(): str(v) for k, v in options.items() if v is not None}
    elif isinstance(options, (list, tuple)):
        out = {chr(ord("A") + i): str(v) for i, v in enumerate(options[:26])}
    else:
        return None
    return out or None


def _as_judge(judge: RewardJudge | ChatModel | None) -> RewardJudge | None:
    if judge is None or isinstance(judge, RewardJudge):
        return judge
    return RewardJudge(judge)


async def score(response: str, *, answer: str, caption: str, question: str,
                judge: RewardJudge | ChatModel | None, options: Any = None,
                weights: RewardWeights = RewardWeights(), max_steps: int = MAX_STEPS,
                max_chars: int = MAX_CHARS) -> RewardBreakdown:
    """The O&R reward of one response; `judge=None` computes acc and fmt only."""
    rj = _as_judge(judge)
    opts = normalize_options(options)
    parsed: ParsedResponse = parse_response(response, max_chars=max_chars, max_steps=max_steps)
    kind = answer_kind(str(answer), opts)
    b = RewardBreakdown(overall=None, acc=None, obs=None, rea=None, fmt=parsed.fmt,
                        n_steps=parsed.n_steps, answer=parsed.answer,
                        problems=list(parsed.problems))
    if answer is None or not str(answer).strip():
        b.failed, b.error = True, "no ground-truth answer: the input line needs `answer`"
        b.problems.append("no_ground_truth")
        return b
    try:
        if parsed.answer is None:
            b.acc = 0.0
        else:
            acc, why = rule_accuracy(parsed.answer, str(answer), opts, kind)
            if why:
                b.problems.append(why)
            if acc is None and rj is not None and weights.w_acc != 0:
                verdict = await rj.answer_verdict(question, parsed.answer, str(answer))
                b.judge_calls += 1
                acc = float(verdict.supported)
            elif acc is None:
                b.problems.append("needs_judge: a free-form answer is scored by a judge")
            b.acc = acc
        if b.acc == 0:
            b.judge_skipped, b.skip_reason = True, "acc=0"
            b.judge_calls_saved = _planned_calls(parsed.steps, kind, weights, max_steps, rj,
                                                 caption)
        elif not weights.needs_judge:
            b.judge_skipped, b.skip_reason = True, "weights"
        elif rj is None:
            b.judge_skipped, b.skip_reason = True, "no judge"
        elif b.acc is not None:
            obs_task = (observation_reward(parsed.steps, caption, rj, max_steps)
                        if weights.w_obs else None)
            rea_task = (reasoning_reward(parsed.steps, question, str(answer), opts, kind, rj)
                        if weights.w_rea and parsed.n_steps <= max_steps else None)
            if weights.w_rea and rea_task is None:
                b.rea = 0.0  # too many steps: no judge call for spam
            if obs_task is not None and rea_task is not None:
                (b.obs, b.obs_verdicts, n_obs), (b.rea, b.inferred_answer, n_rea) = \
                    await gather_or_cancel(obs_task, rea_task)
                b.judge_calls += n_obs + n_rea
            elif obs_task is not None:
                b.obs, b.obs_verdicts, n_obs = await obs_task
                b.judge_calls += n_obs
            elif rea_task is not None:
                b.rea, b.inferred_answer, n_rea = await rea_task
                b.judge_calls += n_rea
    except JudgeError as e:
        b.failed, b.error = True, str(e)
        b.problems.append(f"judge_failed: {str(e)[:200]}")
        return b
    b.overall = _combine(b.acc, b.obs, b.rea, b.fmt, weights)
    return b


def score_rules(response: str, answer: str, options: Any = None,
                weights: RewardWeights = ABLATIONS["accuracy+format"]) -> RewardBreakdown:
    """Synchronous acc + fmt only (no judge): the fast path for rule-only rewards."""
    parsed = parse_response(response)
    opts = normalize_options(options)
    acc: float | None = 0.0
    problems = list(parsed.problems)
    if parsed.answer is not None:
        acc, why = rule_accuracy(parsed.answer, str(answer), opts)
        if why:
            problems.append(why)
    w = RewardWeights(weights.w_acc, 0.0, 0.0, weights.w_fmt)
    return RewardBreakdown(overall=_combine(acc, None, None, parsed.fmt, w), acc=acc, obs=None,
                           rea=None, fmt=parsed.fmt, n_steps=parsed.n_steps,
                           answer=parsed.answer, problems=problems, judge_skipped=True,
                           skip_reason="rules only")


async def score_many(items: Iterable[Mapping[str, Any]], *, judge: RewardJudge | ChatModel | None,
                     weights: RewardWeights = RewardWeights(), concurrency: int = 32,
                     max_steps: int = MAX_STEPS) -> list[RewardBreakdown]:
    """Score many `{response, answer, question, caption[, options]}` items concurrently;
    identical items (a GRPO group often repeats a completion) are scored once."""
    rj = _as_judge(judge)
    sem = asyncio.Semaphore(concurrency)
    items = list(items)
    keys = [repr((i.get("response"), str(i.get("answer", "")), i.get("question"),
                  i.get("caption"), normalize_options(i.get("options")))) for i in items]
    first: dict[str, int] = {}
    for n, k in enumerate(keys):
        first.setdefault(k, n)

    async def one(item: Mapping[str, Any]) -> RewardBreakdown:
        async with sem:
            return await score(item.get("response", ""), answer=str(item.get("answer", "")),
                               caption=str(item.get("caption") or ""),
                               question=str(item.get("question") or ""), judge=rj,
                               options=item.get("options") or None, weights=weights,
                               max_steps=max_steps)

    unique = list(first.values())
    scored = dict(zip(unique, await asyncio.gather(*(one(items[n]) for n in unique)),
                      strict=True))
    return [scored[first[k]] for k in keys]
