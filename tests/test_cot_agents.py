"""The Reasoner/Observer loop, conversion and the stage over a run directory, against scripted
agents on a loopback server (replies we control: loops, limits, bad replies, outages)."""

from __future__ import annotations

import json
import re

import pytest
from cot_scripted import (
    Agents,
    actions_of,
    answer,
    echo_observer,
    evidence_reasoner,
    is_reasoner,
    make_run,
    models_for,
    options_of,
    reasoner_enum,
    run_scripted_cot,
    schema_of,
    scripted_config,
    step,
    variants,
)
from cot_truth import SPEC, truth_of

from rewatch.models.scripted_server import ScriptedTestServer
from rewatch.synth.cot import synthesize_cot
from rewatch.synth.cot_stats import cot_stats
from rewatch.synth.cot_validate import check_tags

TRUTH = truth_of(SPEC)


async def run_stage(tmp_path, agents: Agents, n: int | None = 1, **cot):
    run = make_run(tmp_path, TRUTH, n)
    with ScriptedTestServer(agents) as srv:
        cfg = scripted_config(srv.base_url, **cot)
        models = models_for(cfg, run)
        counts = await synthesize_cot(run, cfg, models)
        await models.aclose()
    kept = list(run.file("cot.jsonl").read())
    rejected = [r for r in run.file("rejected.jsonl").read() if r["stage"] == "cot"]
    return counts, kept, rejected


async def test_evidence_chain_is_kept_with_its_trajectory(tmp_path):
    agents = Agents()
    counts, kept, rejected = await run_stage(tmp_path, agents, n=2)
    assert counts["kept"] == 2 and not rejected, rejected
    rec = next(r for r in kept if r["mcq_id"] == "vid-colour-0")  # the circle at 00:01: red
    assert rec["n_actions"] == 2 and len(rec["trajectory"]) == 3
    first, second, final = rec["trajectory"]
    assert first["action"].startswith('segment_retrieval("What colour')
    stamp = second["action"].split('"')[1]
    assert f"{stamp}-" in first["observation"]  # it queried a moment the retrieval returned
    assert "red circle" in first["observation"] + second["observation"]
    assert final["final_answer"] == rec["answer"] == "B"
    cot = rec["cot"]
    assert check_tags(cot) is None and cot.endswith(f"<answer>{rec['answer']}</answer>")
    assert cot.count("<action>") == 2
    assert f"<observation>{second['observation']}</observation>" in cot
    assert agents.calls == {"reasoner": 6, "observer": 4, "converter": 2,
                           "recap": 0}


async def test_repeated_retrieval_ends_the_trajectory(tmp_path):
    agents = Agents(reasoner=lambda m: step("again", "segment_retrieval", "red circle"))
    counts, kept, rejected = await run_stage(tmp_path, agents)
    assert not kept and rejected[0]["reason"] == "repeated_action"
    assert "step 2 repeats step 1" in rejected[0]["detail"]
    assert agents.calls["reasoner"] == 2 and agents.calls["converter"] == 0


async def test_a_repeat_after_min_actions_is_asked_again_as_the_answer(tmp_path):
    """`answer_on_repeat`: the Reasoner repeats its first retrieval at step 3; that step is
    asked again with only final_answer allowed (the schema's one variant), and the chain ends
    on that answer. Before min_actions are met a repeat still ends the trajectory."""
    calls: list[list[dict]] = []

    def repeat_then_answer(messages):
        calls.append(messages)
        if len(calls) == 2:
            return evidence_reasoner(messages)  # a segment_query of a stamp it saw
        if len(calls) == 4:
            return evidence_reasoner(messages)  # the re-ask: answers from the evidence
        return step("look", "segment_retrieval", "What colour is the circle")

    run, asked = await run_scripted_cot(tmp_path, Agents(reasoner=repeat_then_answer), TRUTH,
                                        min_actions=2, answer_on_repeat=True)
    schemas = [schema_of(r) for r in asked]
    kept = list(run.file("cot.jsonl").read())
    assert len(calls) == 4 and len(kept) == 1, list(run.file("rejected.jsonl").read())
    assert "anyOf" not in json.dumps(schemas[3]) and "final_answer" in json.dumps(schemas[3])
    assert [s["action"] for s in kept[0]["trajectory"][:2]][0].startswith("segment_retrieval")
    assert kept[0]["n_actions"] == 2 and kept[0]["trajectory"][-1]["final_answer"] == "B"

    calls.clear()
    agents = Agents(reasoner=lambda m: step("again", "segment_retrieval", "red circle"))
    counts, kept, rejected = await run_stage(tmp_path / "early", agents, min_actions=2,
                                             answer_on_repeat=True)
    assert rejected[0]["reason"] == "repeated_action"  # 1 action < min_actions 2


async def test_after_a_retrieval_the_query_may_name_only_moments_it_found(tmp_path):
    """`query_found`: the step after a segment_retrieval offers segment_query only the stamps
    of lines that retrieval returned; the step after a query offers every line again."""
    # evidence_reasoner: retrieve, query a stamp it saw, answer
    run, asked = await run_scripted_cot(tmp_path, Agents(), TRUTH, query_found=True,
                                        min_actions=2)
    schemas = [reasoner_enum(r) for r in asked]
    kept = list(run.file("cot.jsonl").read())
    assert kept, list(run.file("rejected.jsonl").read())
    first = kept[0]["trajectory"][0]["observation"]
    assert schemas[0] and schemas[1] and set(schemas[1]) < set(schemas[0])
    found = set(re.findall(r"\d{2}:\d{2}-\d{2}:\d{2}", first.split(": ", 1)[0]))
    assert found and found & set(schemas[0]) <= set(schemas[1])  # the found moments offered
    # the rest are stamps whose lines overlap a found line; the step after a query: all again
    assert len(schemas) == 3 and set(schemas[2]) - set(schemas[1])


async def test_repeated_query_is_excluded_by_the_schema_and_refused(tmp_path):
    """The grammar leaves a used timestamp out (and its other form, the same caption line); a
    server that ignores the schema and repeats anyway gets its reply refused, not run."""
    agents = Agents(reasoner=lambda m: step("again", "segment_query", "00:01"))
    run = make_run(tmp_path, TRUTH, 1)
    with ScriptedTestServer(agents) as srv:
        cfg = scripted_config(srv.base_url)
        await synthesize_cot(run, cfg, models_for(cfg, run))
        schemas = [reasoner_enum(r) for r in srv.requests if is_reasoner(r)]
    assert "00:01" in schemas[0] and "00:01-00:02" in schemas[0]
    assert "00:01" not in schemas[1] and "00:01-00:02" not in schemas[1]
    assert set(schemas[0]) - set(schemas[1]) == {"00:01", "00:01-00:02"}
    rejected = list(run.file("rejected.jsonl").read())
    assert rejected[0]["reason"] == "invalid_reasoner_reply"
    assert [s["action"] for s in rejected[0]["trajectory"]] == ['segment_query("00:01")']


async def test_step_limit_ends_the_trajectory(tmp_path):
    def wander(messages):
        n = sum(1 for m in messages if m["role"] == "assistant")
        return step("keep looking", "segment_query", f"00:{n:02d}")

    agents = Agents(reasoner=wander)
    counts, kept, rejected = await run_stage(tmp_path, agents, max_steps=3)
    assert rejected[0]["reason"] == "step_limit" and len(rejected[0]["trajectory"]) == 3
    assert agents.calls["reasoner"] == 3


async def test_invalid_reasoner_replies_end_the_trajectory(tmp_path):
    agents = Agents(reasoner=lambda m: "I think the answer is B")
    counts, kept, rejected = await run_stage(tmp_path, agents)
    assert rejected[0]["reason"] == "invalid_reasoner_reply"
    assert agents.calls["reasoner"] == 2  # asked, re-asked once (schema_retries=1), given up


async def test_answer_that_is_no_option_is_refused_by_the_schema(tmp_path):
    agents = Agents(reasoner=lambda m: step("sure", "final_answer", "Z"))
    run = make_run(tmp_path, TRUTH, 1)
    with ScriptedTestServer(agents) as srv:
        cfg = scripted_config(srv.base_url, min_actions=0)
        await synthesize_cot(run, cfg, models_for(cfg, run))
        final = variants(schema_of(srv.requests[0]))["final_answer"]
        options = options_of(srv.requests[0]["messages"])
    assert final["properties"]["argument"]["enum"] == [options[k] for k in "ABCD"]
    rejected = list(run.file("rejected.jsonl").read())
    assert rejected[0]["reason"] == "invalid_reasoner_reply" and "Z" in rejected[0]["detail"]


async def test_answer_without_rewatching_is_rejected(tmp_path):
    agents = Agents(reasoner=lambda m: answer(m, "B"))
    _, _, rejected = await run_stage(tmp_path, agents, min_actions=0)
    assert rejected[0]["reason"] == "answer_without_evidence"


async def test_the_first_step_cannot_answer_by_schema(tmp_path):
    seen = []

    def record(messages):
        seen.append(len(messages))
        return answer(messages, "B")

    agents = Agents(reasoner=record)
    run = make_run(tmp_path, TRUTH, 1)
    with ScriptedTestServer(agents) as srv:
        cfg = scripted_config(srv.base_url)
        await synthesize_cot(run, cfg, models_for(cfg, run))
        schema = srv.requests[0]["response_format"]["json_schema"]["schema"]
    assert actions_of(schema) == ["segment_retrieval", "segment_query"]
    rejected = list(run.file("rejected.jsonl").read())
    assert rejected[0]["reason"] == "invalid_reasoner_reply"


async def test_observer_inventing_content_ends_the_trajectory(tmp_path):
    def liar(content):
        out = echo_observer(content)
        out["observation"] = out["observation"][:100].rsplit(" ", 1)[0] + " a blue elephant"
        return out

    agents = Agents(observer=liar)
    _, kept, rejected = await run_stage(tmp_path, agents)
    assert not kept and rejected[0]["reason"] == "observer_unsupported"
    assert "blue" in rejected[0]["detail"] and "elephant" in rejected[0]["detail"]


async def test_observer_quoting_a_line_it_did_not_see_is_caught(tmp_path):
    def misquote(content):
        out = echo_observer(content)
        seen = {int(t[3:5]) for t in out["timestamps"]} | {int(t[9:11]) - 1
                                                             for t in out["timestamps"]}
        unseen = min(set(range(12)) - seen - {x + 1 for x in seen} - {x - 1 for x in seen})
        return {**out, "timestamps": [f"00:{unseen:02d}"]}

    agents = Agents(observer=misquote)
    run = make_run(tmp_path, TRUTH, 1)
    with ScriptedTestServer(agents) as srv:
        cfg = scripted_config(srv.base_url)
        await synthesize_cot(run, cfg, models_for(cfg, run))
        asked = [r for r in srv.requests if r["messages"][0]["content"].startswith(
            "You are the Observer")]
    # the schema lets it cite only the lines it was shown, so the misquote is refused
    prompt = asked[0]["messages"][0]["content"]
    shown = re.findall(r"^\[(\d{2}:\d{2}-\d{2}:\d{2})\]", prompt, re.M)
    cite = schema_of(asked[0])["properties"]["timestamps"]
    assert cite["items"]["enum"] == shown and cite["minItems"] == 1
    rejected = list(run.file("rejected.jsonl").read())
    assert rejected[0]["reason"] == "invalid_observer_reply"


async def test_wrong_final_answer_is_rejected_before_conversion(tmp_path):
    def contrarian(messages):
        out = evidence_reasoner(messages)
        if out["action"] == "final_answer":
            options = options_of(messages)
            out["argument"] = sorted(set(options.values()) - {out["argument"]})[0]
        return out

    agents = Agents(reasoner=contrarian)
    _, kept, rejected = await run_stage(tmp_path, agents)
    assert rejected[0]["reason"] == "wrong_answer" and agents.calls["converter"] == 0


async def test_malformed_tool_calls_are_observations_and_counted(tmp_path):
    def clumsy(messages):  # a query of stopwords only fits the schema but asks for nothing
        n = sum(1 for m in messages if m["role"] == "assistant")
        if n == 0:
            return step("look around", "segment_retrieval", "what is there")
        return evidence_reasoner([*messages[:2], *messages[4:]]) if n < 3 else \
            evidence_reasoner([m for i, m in enumerate(messages) if i not in (2, 3)])

    agents = Agents(reasoner=clumsy)
    _, kept, rejected = await run_stage(tmp_path, agents)
    traj = (kept or rejected)[0]["trajectory"]
    assert traj[0]["tool_error"] and "needs a description" in traj[0]["observation"]
    assert kept, rejected  # it recovered: the chain keeps only the steps with evidence
    assert "what is there" not in kept[0]["cot"] and kept[0]["n_actions"] == 3
    stats = cot_stats(tmp_path)
    assert stats["tool_calls"] == 3 and stats["tool_errors"] == 1
    assert stats["tool_error_rate"] == pytest.approx(1 / 3, abs=1e-3)


async def test_question_with_no_caption_evidence_is_rejected(tmp_path):
    def lost(messages):
        n = sum(1 for m in messages if m["role"] == "assistant")
        return step("look around", "segment_retrieval", "what is there") if n == 0 else \
            answer(messages, "B", "guess")

    _, _, rejected = await run_stage(tmp_path, Agents(reasoner=lost))
    assert rejected[0]["reason"] == "no_caption_evidence"


async def test_converter_adding_a_fact_is_rejected(tmp_path):
    def embellish(content):
        n = int(re.search(r"\((\d+) in all", content).group(1))
        return {"steps": ["I check this part."] * n,
                "conclusion": "I counted 7 circles in all, which settles it."}

    agents = Agents(converter=embellish)
    _, kept, rejected = await run_stage(tmp_path, agents)
    assert not kept and rejected[0]["reason"] == "prose_adds_facts"
    assert "7" in rejected[0]["detail"] and rejected[0]["cot"]
    # one retry (convert_retries=1) was told the words, and added them again
    assert rejected[0]["conversions"] == 2 and agents.calls["converter"] == 2


async def test_converter_told_its_added_words_can_fix_the_chain(tmp_path):
    told = []

    def learns(content):
        n = int(re.search(r"\((\d+) in all", content).group(1))
        m = re.search(r"contains: (.+)\.\n", content)
        told.append(m.group(1) if m else None)
        conclusion = "The observations settle it." if m else "I counted 7 circles in all."
        return {"steps": ["I check this part."] * n, "conclusion": conclusion}

    agents = Agents(converter=learns)
    _, kept, rejected = await run_stage(tmp_path, agents)
    assert kept and not rejected and kept[0]["conversions"] == 2
    assert told == [None, "7"]  # "circles" was observed, "counted" names the attribute
    _, kept, rejected = await run_stage(tmp_path / "none", Agents(converter=learns),
                                        convert_retries=0)
    assert not kept and rejected[0]["reason"] == "prose_adds_facts"


async def test_resume_after_an_outage_repeats_no_model_call(tmp_path):
    agents = Agents()
    run = make_run(tmp_path, TRUTH, n=4)
    with ScriptedTestServer(agents) as srv:
        cfg = scripted_config(srv.base_url)
        real = agents.reasoner
        calls = {"n": 0}

        def flaky(messages):  # the server goes down after 7 reasoner calls, mid-trajectory
            calls["n"] += 1
            if calls["n"] > 7:
                agents.fail = True
            return real(messages)

        agents.reasoner = flaky
        cfg.synth.concurrency = 1
        first = await synthesize_cot(run, cfg, models_for(cfg, run))
        assert first["errors"] >= 1 and first["kept"] >= 1
        errors = [json.loads(x) for x in (tmp_path / "errors.jsonl").read_text().splitlines()]
        assert errors[0]["stage"] == "cot"
        failed = agents.failures
        agents.fail, agents.reasoner = False, real
        second = await synthesize_cot(run, cfg, models_for(cfg, run))
        assert second["skipped"] == first["kept"] + first["rejected"]
        assert second["kept"] + second["rejected"] == first["errors"]
        repeated = {k: v for k, v in srv.by_messages.items() if v > 1}
        # only the requests that failed were asked again, and each only once more
        assert len(repeated) == failed and set(repeated.values()) == {2}
        before = len(srv.requests)
        third = await synthesize_cot(run, cfg, models_for(cfg, run))
        assert third["skipped"] == 4 and len(srv.requests) == before


async def test_cot_stats_appear_in_the_audit(tmp_path):
    from rewatch.synth.audit import audit

    await run_stage(tmp_path, Agents(), n=2)
    stats = audit(tmp_path, embedder=None)["cot"]
    assert stats == cot_stats(tmp_path)
    assert stats["kept"] == stats["total"] == 2 and stats["avg_actions_kept"] == 2.0
    assert stats["tokenizer"] == "smollm2" and stats["avg_tokens_kept"] > 50
    assert stats["tool_error_rate"] == 0.0


def free_writer(drop_closing_tag: bool = False):
    """A scripted converter in free mode: writes the whole chain from the trajectory it is
    shown (the prompt's `Action:` / `Observation:` lines)."""

    def write(content):
        steps = re.findall(r"^Action: (.+)\nObservation: (.+)$", content, re.M)
        answer = re.search(r"answer with the letter (\w)", content).group(1)
        body = "\n".join(f"I re-watch this part.\n<action>{a}</action>\n"
                         f"<observation>{o}</observation>" for a, o in steps)
        text = f"{body}\nSo the question is settled.\n<answer>{answer}</answer>"
        return text.replace("</observation>", "", 1) if drop_closing_tag else text

    return write


async def test_free_conversion_is_kept_when_it_follows_the_template(tmp_path):
    agents = Agents(converter=free_writer())
    _, kept, rejected = await run_stage(tmp_path, agents, convert_mode="free")
    assert kept and not rejected, rejected
    assert kept[0]["cot"].count("<observation>") == kept[0]["n_actions"] == 2


async def test_free_conversion_with_a_broken_tag_is_rejected(tmp_path):
    agents = Agents(converter=free_writer(drop_closing_tag=True))
    _, kept, rejected = await run_stage(tmp_path, agents, convert_mode="free")
    assert not kept and rejected[0]["reason"] == "unbalanced_tags"


async def test_answer_recap_asks_the_answer_again_from_the_observations_alone(tmp_path):
    """`answer_recap`: the Reasoner names a wrong option in its history; the answer is asked
    again in one message (prompts/cot_answer.md) of its observations, the question and the
    options, and that reply is the chain's answer and final thought. Without the setting the
    Reasoner's own pick stands and the chain is rejected as a wrong answer. When the last step
    must answer (`answer_at_limit`) the Reasoner is not asked at all: only the recap is."""
    def wrong_in_history(messages):
        if sum(1 for m in messages if m["role"] == "assistant") < 2:
            return evidence_reasoner(messages)
        right = evidence_reasoner(messages)["argument"]
        return step("Probably this one.", "final_answer",
                    next(v for v in options_of(messages).values() if v != right))

    agents = Agents(reasoner=wrong_in_history)
    counts, kept, rejected = await run_stage(tmp_path / "off", agents, min_actions=2)
    assert not kept and rejected[0]["reason"] == "wrong_answer", rejected
    assert agents.calls["recap"] == 0

    agents = Agents(reasoner=wrong_in_history)
    run, asked = await run_scripted_cot(tmp_path / "on", agents, TRUTH, min_actions=2,
                                        answer_recap=True)
    kept = list(run.file("cot.jsonl").read())
    assert len(kept) == 1, list(run.file("rejected.jsonl").read())
    final = kept[0]["trajectory"][-1]
    assert final["final_answer"] == kept[0]["answer"] == "B"
    assert final["thought"] == "The observation of that moment names it."
    assert agents.calls["recap"] == 1 and len(asked) == 3

    # answer_at_limit with max_steps 3: two actions, then the recap without a Reasoner call
    agents = Agents()
    run, asked = await run_scripted_cot(tmp_path / "limit", agents, TRUTH, min_actions=2,
                                        max_steps=3, answer_at_limit=True, answer_recap=True)
    kept = list(run.file("cot.jsonl").read())
    assert len(kept) == 1 and kept[0]["n_actions"] == 2
    assert len(asked) == 2 and agents.calls["recap"] == 1
