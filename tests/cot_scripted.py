"""Scripted agents for Stage 3 tests, served by the loopback ScriptedTestServer (not models).

The scripted Reasoner is a policy that reads its own history: it searches, queries the first
timestamp it was shown, then answers with the option its observations name (so a wrong answer
stays possible when the evidence does not name one). The Observer echoes the caption lines it is
given; the converter writes plain connecting sentences.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cot_truth import caption_from_truth, mcqs_from_truth

from rewatch.config import Config, ModelSpec
from rewatch.models import Models
from rewatch.models.cache import ResponseCache
from rewatch.samples import GroundTruth
from rewatch.store import RunDir

Policy = Callable[[list[dict[str, Any]]], dict[str, Any]]


def step(thought: str, action: str, argument: str) -> dict[str, Any]:
    return {"thought": thought, "action": action, "argument": argument}


def observations(messages: list[dict[str, Any]]) -> str:
    """What the Observer said so far (the question repeated beside it, cot_decide.md, left
    out)."""
    return " ".join(m["content"].split("\n\nYou may answer now.")[0] for m in messages[2:]
                    if m["role"] == "user")


def options_of(messages: list[dict[str, Any]]) -> dict[str, str]:
    return dict(re.findall(r"^([A-Z])\. (.+)$", messages[1]["content"], re.M))


def answer(messages: list[dict[str, Any]], letter: str, thought: str = "I know it"
           ) -> dict[str, Any]:
    """A final_answer step naming option `letter` by its text (the schema's enum)."""
    return step(thought, "final_answer", options_of(messages)[letter])


def evidence_reasoner(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Search with the question, look at the first timestamp seen, answer from the evidence."""
    n = sum(1 for m in messages if m["role"] == "assistant")
    question = re.search(r"Question: (.+)", messages[1]["content"]).group(1)
    if n == 0:
        return step("I should find this moment.", "segment_retrieval", question[:80])
    if n == 1:
        stamps = re.findall(r"\d{2}:\d{2}", observations(messages))
        return step("Let me look closer.", "segment_query", stamps[0] if stamps else "00:00")
    seen = observations(messages).lower()
    named = [k for k, v in options_of(messages).items() if re.search(rf"\b{v.lower()}\b", seen)]
    options = options_of(messages)
    return step("The evidence decides it.", "final_answer", options[named[0] if named else "A"])


def is_reasoner(request: dict[str, Any]) -> bool:
    """Whether a request the scripted server received is a Reasoner step."""
    return request["messages"][0]["content"].startswith("You are the Reasoner")


def schema_of(request: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema a request carried in its response_format."""
    return request["response_format"]["json_schema"]["schema"]


def variants(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The Reasoner schema's alternatives by action name (`anyOf` of `$ref`s into `$defs`)."""
    out = {}
    for alt in schema["anyOf"]:
        obj = schema["$defs"][alt["$ref"].rsplit("/", 1)[1]]
        out[obj["properties"]["action"]["const"]] = obj
    return out


def actions_of(schema: dict[str, Any]) -> list[str]:
    return list(variants(schema))


def reasoner_enum(request: dict[str, Any]) -> list[str]:
    """The segment_query arguments a Reasoner request allowed ([] when segment_query was not
    offered)."""
    query = variants(schema_of(request)).get("segment_query")
    return query["properties"]["argument"]["enum"] if query else []


def echo_observer(content: str) -> dict[str, Any]:
    block = content.split("Caption lines:\n", 1)[1].split("\nReply with", 1)[0]
    lines = re.findall(r"^\[(\d{2}:\d{2}-\d{2}:\d{2})\] (.+)$", block, re.M)
    text = " ".join(t for _, t in lines)
    return {"observation": text[:300].rsplit(" ", 1)[0] if len(text) > 300 else text,
            "timestamps": [s for s, _ in lines][:4]}


def plain_converter(content: str) -> dict[str, Any]:
    n = int(re.search(r"\((\d+) in all", content).group(1))
    return {"steps": ["I re-watch this part to check it."] * n,
            "conclusion": "The observations settle the question."}


def evidence_recap(content: str) -> dict[str, Any]:
    """The recap answer (`answer_recap`, prompts/cot_answer.md): the first option whose text
    the listed observations name, else option A."""
    seen = content.split("Question: ")[0].lower()
    options = dict(re.findall(r"^([A-Z])\. (.+)$", content, re.M))
    named = [v for v in options.values() if re.search(rf"\b{v.lower()}\b", seen)]
    return {"thought": "The observation of that moment names it.",
            "answer": named[0] if named else options["A"]}


class Agents:
    """A responder for ScriptedTestServer that dispatches on the prompt of each role."""

    def __init__(self, reasoner: Policy = evidence_reasoner,
                 observer: Callable[[str], dict[str, Any]] = echo_observer,
                 converter: Callable[[str], dict[str, Any]] = plain_converter,
                 recap: Callable[[str], dict[str, Any]] = evidence_recap):
        self.reasoner, self.observer, self.converter = reasoner, observer, converter
        self.recap = recap
        self.calls = {"reasoner": 0, "observer": 0, "converter": 0, "recap": 0}
        self.fail = False  # when set, every request fails (a server outage)
        self.failures = 0

    def __call__(self, body: dict[str, Any]) -> str:
        if self.fail:
            self.failures += 1
            raise RuntimeError("scripted outage")
        msgs = body["messages"]
        first = msgs[0]["content"]
        if first.startswith("You are the Reasoner"):
            self.calls["reasoner"] += 1
            out: Any = self.reasoner(msgs)
        elif first.startswith("You are the Observer"):
            self.calls["observer"] += 1
            out = self.observer(first)
        elif first.startswith("You are M_convert"):
            self.calls["converter"] += 1
            out = self.converter(first)
        elif first.startswith("You re-watched parts of a video"):
            self.calls["recap"] += 1
            out = self.recap(first)
        else:
            raise AssertionError(f"unexpected prompt {first[:60]!r}")
        return out if isinstance(out, str) else json.dumps(out)


def scripted_config(base_url: str, **cot: Any) -> Config:
    cfg = Config()
    cfg.models["llm"] = ModelSpec(backend="openai", base_url=base_url, model="scripted",
                                  max_retries=0, schema_retries=1)
    for k, v in cot.items():
        setattr(cfg.synth.cot, k, v)
    return cfg


def make_run(root: Path, truth: GroundTruth, n: int | None = None) -> RunDir:
    """A run directory holding the ground-truth caption and MCQs of a synthetic video."""
    run = RunDir(root)
    run.file("captions.jsonl").append(caption_from_truth(truth))
    for m in mcqs_from_truth(truth)[:n]:
        run.file("mcq.jsonl").append(m)
    return run


def models_for(cfg: Config, run: RunDir) -> Models:
    return Models(cfg, ResponseCache(run.cache_path))


async def run_scripted_cot(root: Path, agents: Agents, truth: GroundTruth, n: int | None = 1,
                           **cot: Any) -> tuple[RunDir, list[dict[str, Any]]]:
    """Stage 3 over the first `n` MCQs of `truth` with `agents` on a loopback server and the
    given `synth.cot` settings: the run directory and the Reasoner requests the server got."""
    from rewatch.models.scripted_server import ScriptedTestServer
    from rewatch.synth.cot import synthesize_cot

    run = make_run(root, truth, n)
    with ScriptedTestServer(agents) as srv:
        cfg = scripted_config(srv.base_url, **cot)
        await synthesize_cot(run, cfg, models_for(cfg, run))
        requests = list(srv.requests)
    return run, [r for r in requests if is_reasoner(r)]
