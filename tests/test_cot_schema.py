"""The Reasoner's and Observer's reply schemas: segment_query may only name a real caption line not
queried yet, final_answer only an option letter, a retrieval query is words; the Observer cites
lines it was shown. Checked on the schemas themselves, on what a loopback server receives, and on
the grammar llama.cpp builds from them."""

from __future__ import annotations

import json
import re

import pytest
from cot_scripted import (
    Agents,
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
from cot_truth import SPEC, caption_from_truth, truth_of
from pydantic import ValidationError

from rewatch.models.base import json_schema_of
from rewatch.models.scripted_server import ScriptedTestServer
from rewatch.schema import CoTStep, mmss
from rewatch.synth.cot import synthesize_cot
from rewatch.synth.cot_agents import (
    extractive_observer,
    observer_schema,
    open_targets,
    quote_options,
    quote_schema,
    reasoner_schema,
)
from rewatch.synth.cot_convert import prose_schema
from rewatch.synth.tools import CaptionIndex, parse_action

TRUTH = truth_of(SPEC)
CAPTION = caption_from_truth(TRUTH)
LETTERS = ("A", "B", "C", "D")
ANSWERS = ("blue", "red", "green", "yellow")  # the final answer names an option's text


@pytest.fixture(scope="module")
def index() -> CaptionIndex:
    return CaptionIndex(CAPTION)


def test_query_targets_are_the_caption_lines_and_resolve_to_them(index):
    targets = index.query_targets()
    expected = [s for c in index.lines for s in (mmss(c.start), f"{mmss(c.start)}-{mmss(c.end)}")]
    assert list(targets) == list(dict.fromkeys(expected))
    for stamp, lines in targets.items():
        result = index.segment_query(stamp)
        assert result.ok and result.lines, stamp
        assert {index.lines.index(c) for c in result.lines} == set(lines)
    # "00:03" lies inside the merged line 00:02-00:04 but starts no line: not a target
    assert "00:03" not in targets and "00:02-00:04" in targets


def test_used_queries_and_their_other_form_leave_the_enum(index):
    targets = index.query_targets()
    steps = [CoTStep(thought="t", action='segment_query("00:05")', observation="o"),
             CoTStep(thought="t", action='segment_retrieval("red circle")', observation="o"),
             CoTStep(thought="t", action='segment_query("00:02-00:04")', observation="o")]
    allowed = open_targets(targets, steps)
    for gone in ("00:05", "00:05-00:06", "00:02", "00:02-00:04"):
        assert gone not in allowed
    assert len(allowed) == len(targets) - 4 and "00:01" in allowed


def test_reasoner_schema_constrains_every_argument(index):
    model = reasoner_schema(tuple(index.query_targets()), ANSWERS, True)
    ok = [{"thought": "look", "action": "segment_query", "argument": "00:05"},
          {"thought": "find", "action": "segment_retrieval", "argument": "red circle appears"},
          {"thought": "done", "action": "final_answer", "argument": "green"}]
    for reply in ok:
        assert model.model_validate(reply).root.argument == reply["argument"]
    bad = [{"thought": "", "action": "segment_query", "argument": "d"},
           {"thought": "", "action": "segment_query", "argument": "00:03"},  # no line starts
           {"thought": "", "action": "segment_query", "argument": "Amaranthia marina"},
           {"thought": "", "action": "segment_retrieval", "argument": "00:01"},  # a time
           {"thought": "", "action": "segment_retrieval", "argument": "x"},  # too short
           {"thought": "", "action": "segment_retrieval", "argument": 'say "hi"'},
           {"thought": "", "action": "segment_retrieval", "argument": "a" * 81},
           {"thought": "", "action": "final_answer", "argument": "C"},  # a letter
           {"thought": "", "action": "final_answer", "argument": "purple"}]
    for reply in bad:
        with pytest.raises(ValidationError):
            model.model_validate(reply)


def test_reasoner_schema_drops_choices_that_are_not_open():
    first = json_schema_of(reasoner_schema(("00:01",), ANSWERS, False))
    assert [a["$ref"].rsplit("/", 1)[1] for a in first["anyOf"]] == ["Retrieve", "Query"]
    exhausted = json_schema_of(reasoner_schema((), ANSWERS, True))
    assert [a["$ref"].rsplit("/", 1)[1] for a in exhausted["anyOf"]] == ["Retrieve", "Answer"]
    assert first["title"] == "ReasonerReply"  # the json_schema name servers are sent


def _keywords(node: object) -> set[str]:
    if isinstance(node, dict):
        out = set(node)
        for k, v in node.items():
            if k not in ("properties", "$defs"):
                out |= _keywords(v)
            else:
                out |= {kw for sub in v.values() for kw in _keywords(sub)}
        return out
    if isinstance(node, list):
        return {kw for x in node for kw in _keywords(x)}
    return set()


def test_schemas_are_plain_json_schema_that_llama_cpp_compiles(index):
    """Every reply schema of Stage 3 uses only plain JSON-schema keywords (what vLLM's guided
    decoding takes) and compiles into a grammar llama.cpp's sampler accepts (a grammar it cannot
    parse gives a NULL sampler, which crashes generation: an escaped quote in a pattern did)."""
    import llama_cpp
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    from rewatch.models.local import load_llama, smollm2_path

    vocab = load_llama(smollm2_path(), 512, 1).vocab
    plain = {"$defs", "$ref", "anyOf", "properties", "required", "title", "type", "enum",
             "const", "items", "minItems", "maxItems", "maxLength", "pattern"}
    result = index.segment_retrieval("red circle appears")
    models = [reasoner_schema(tuple(index.query_targets()), ANSWERS, True),
              reasoner_schema(("00:01",), ANSWERS, False),
              reasoner_schema((), ANSWERS, True, True),
              observer_schema(("00:01-00:02", "00:02-00:04")),
              quote_schema(tuple(quote_options(result))),
              prose_schema(3), prose_schema(3, hours=False)]
    for model in models:
        schema = json_schema_of(model)
        assert _keywords(schema) <= plain, _keywords(schema) - plain
        gbnf = json_schema_to_gbnf(json.dumps(schema))
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
        assert sampler, f"llama.cpp cannot parse the grammar of {model.__name__}"
        llama_cpp.llama_sampler_free(sampler)
    bad = json_schema_to_gbnf(json.dumps({"type": "string", "pattern": r"^[A-Za-z\'-]+$"}))
    assert not llama_cpp.llama_sampler_init_grammar(vocab, bad.encode(), b"root")  # it can fail


def test_prose_under_an_hour_writes_times_as_mm_ss():
    short, long = prose_schema(1, hours=False), prose_schema(1)
    for text in ("I look again at 00:03 to count them.", "At 00:03-00:05 the circle moves.",
                 "It is gone by 00:05"):
        short.model_validate({"steps": [text], "conclusion": text})
    for text in ("I see it at 00:03:00 on the right.", "It moves: left and then right."):
        with pytest.raises(ValidationError):
            short.model_validate({"steps": [text], "conclusion": "The circle moves right."})
    long.model_validate({"steps": ["At 01:02:03 the circle moves."],
                         "conclusion": "The circle moves right."})


def test_observer_schema_cites_only_shown_lines_and_wants_words():
    model = observer_schema(("00:01-00:02", "00:02-00:04", "00:01-00:02"))
    cite = json_schema_of(model)["properties"]["timestamps"]
    assert cite["items"]["enum"] == ["00:01-00:02", "00:02-00:04"] and cite["maxItems"] == 2
    ok = model.model_validate({"timestamps": ["00:02-00:04"],
                               "observation": "a red circle moving right on a navy background"})
    assert ok.timestamps == ["00:02-00:04"]
    for bad in ({"timestamps": [], "observation": "a red circle appears"},
                {"timestamps": ["00:05-00:06"], "observation": "a red circle appears"},
                {"timestamps": ["00:01-00:02"], "observation": "00:01-00:02"},
                {"timestamps": ["00:01-00:02"], "observation": "At 00:01 a red circle"},
                {"timestamps": ["00:01-00:02"], "observation": "red"}):
        with pytest.raises(ValidationError):
            model.model_validate(bad)


async def test_server_receives_the_shrinking_enum_and_every_query_is_a_caption_line(tmp_path):
    """Over a full scripted run, each Reasoner request's segment_query enum is the caption's
    targets minus what that trajectory already queried, and every query made is a target."""
    index = CaptionIndex(CAPTION)
    targets = index.query_targets()
    run = make_run(tmp_path, TRUTH, 4)
    with ScriptedTestServer(Agents()) as srv:
        cfg = scripted_config(srv.base_url)
        counts = await synthesize_cot(run, cfg, models_for(cfg, run))
        requests = [r for r in srv.requests if is_reasoner(r)]
    assert counts["kept"] + counts["rejected"] == 4 and counts["kept"] >= 1
    assert {r["reason"] for r in run.file("rejected.jsonl").read()} <= {"wrong_answer"}
    for req in requests:
        queried = [json.loads(m["content"])["argument"] for m in req["messages"]
                   if m["role"] == "assistant"
                   and json.loads(m["content"])["action"] == "segment_query"]
        steps = [CoTStep(thought="", action=f'segment_query("{q}")') for q in queried]
        assert reasoner_enum(req) == open_targets(targets, steps)
        assert not set(queried) & set(reasoner_enum(req))
    for rec in [*run.file("cot.jsonl").read(), *run.file("rejected.jsonl").read()]:
        actions = [s["action"] for s in rec["trajectory"] if s["action"]]
        assert len(actions) == len(set(actions))
        for a in actions:
            tool, arg = parse_action(a)
            assert tool != "segment_query" or arg in targets


async def test_extractive_observer_copies_the_lines_and_calls_no_model(tmp_path):
    agents = Agents()
    run = make_run(tmp_path, TRUTH, 2)
    with ScriptedTestServer(agents) as srv:
        cfg = scripted_config(srv.base_url, observer_mode="extractive")
        counts = await synthesize_cot(run, cfg, models_for(cfg, run))
    assert counts["kept"] == 2 and agents.calls["observer"] == 0
    index = CaptionIndex(CAPTION)
    for rec in run.file("cot.jsonl").read():
        for s in rec["trajectory"]:
            if not s["action"]:
                continue
            tool, arg = parse_action(s["action"])
            result = index.run(tool, arg)
            assert s["observation"] == extractive_observer(result)
            for c in result.lines:
                assert f"At {mmss(c.start)}-{mmss(c.end)}: {c.text}" in s["observation"]
            assert f"<observation>{s['observation']}</observation>" in rec["cot"]


def test_extractive_observation_is_verbatim(index):
    result = index.segment_query("00:05")
    assert extractive_observer(result) == (
        f"At 00:05-00:06: {index.lines[[mmss(c.start) for c in index.lines].index('00:05')].text}")


async def test_a_timestamp_only_observation_is_refused_by_the_schema(tmp_path):
    def stamps_only(content):
        shown = re.findall(r"^\[(\d{2}:\d{2}-\d{2}:\d{2})\]", content, re.M)
        return {"timestamps": shown[:1], "observation": shown[0]}

    def query_first(messages):
        n = sum(1 for m in messages if m["role"] == "assistant")
        return step("look", "segment_query", "00:01") if n == 0 else evidence_reasoner(messages)

    agents = Agents(reasoner=query_first, observer=stamps_only)
    run = make_run(tmp_path, TRUTH, 1)
    with ScriptedTestServer(agents) as srv:
        cfg = scripted_config(srv.base_url)
        await synthesize_cot(run, cfg, models_for(cfg, run))
        asked = [r for r in srv.requests if not is_reasoner(r)]
    pattern = schema_of(asked[0])["properties"]["observation"]["pattern"]
    assert re.fullmatch(pattern, "00:01-00:02") is None
    assert agents.calls["observer"] == 2  # asked, re-asked once, refused
    rejected = list(run.file("rejected.jsonl").read())
    assert rejected[0]["reason"] == "invalid_observer_reply"
    assert variants(schema_of(srv.requests[0]))  # the Reasoner was schema-constrained too


def quote_picker(content: str) -> dict[str, list[str]]:
    """A scripted quoting Observer: picks the listed quotes that share a word with the action."""
    action = re.search(r"^Action: (.+)$", content, re.M).group(1).lower()
    options = re.findall(r"^(\[\d{2}:\d{2}-\d{2}:\d{2}\] .+)$", content, re.M)
    words = set(re.findall(r"[a-z]{3,}", action))
    return {"quotes": [q for q in options if words & set(re.findall(r"[a-z]{3,}", q))][:2]
            or options[:1]}


async def test_quoting_observer_picks_only_listed_clauses_verbatim(tmp_path):
    agents = Agents(observer=quote_picker)
    run = make_run(tmp_path, TRUTH, 2)
    with ScriptedTestServer(agents) as srv:
        cfg = scripted_config(srv.base_url, observer_mode="quote")
        counts = await synthesize_cot(run, cfg, models_for(cfg, run))
        asked = [r for r in srv.requests if not is_reasoner(r)
                 and r["messages"][0]["content"].startswith("You are the Observer")]
    assert counts["kept"] >= 1 and agents.calls["observer"] == len(asked) > 0
    # the scripted picker may leave out the clause that names the answer: then a wrong answer
    assert {r["reason"] for r in run.file("rejected.jsonl").read()} <= {"wrong_answer"}
    for req in asked:  # the enum is exactly the clauses of the lines the tool returned
        content = req["messages"][0]["content"]
        listed = re.findall(r"^(\[\d{2}:\d{2}-\d{2}:\d{2}\] .+)$", content, re.M)
        quotes = schema_of(req)["properties"]["quotes"]
        assert quotes["items"]["enum"] == listed and quotes["minItems"] == 1
        assert len(listed) >= 2  # a one-clause result is its own quote: no call is made
        lines = {c.text for c in CAPTION.detail}
        for q in listed:
            clause = q.split("] ", 1)[1]
            assert any(clause in text for text in lines), q
    for rec in [*run.file("cot.jsonl").read(), *run.file("rejected.jsonl").read()]:
        for s in rec["trajectory"]:
            if s["observation"]:
                body = s["observation"].split(": ", 1)[1]
                for clause in body.split("; "):
                    assert any(clause in c.text for c in CAPTION.detail), clause


async def test_query_verbatim_observes_a_moment_whole_without_an_observer_call(tmp_path):
    """`query_verbatim`: segment_query(timestamp) observes every line of that moment verbatim
    (no Observer call); segment_retrieval(query) is still quoted by the Observer model."""
    agents = Agents(observer=quote_picker)
    run = make_run(tmp_path, TRUTH, 2)
    with ScriptedTestServer(agents) as srv:
        cfg = scripted_config(srv.base_url, observer_mode="quote", query_verbatim=True)
        await synthesize_cot(run, cfg, models_for(cfg, run))
        asked = [r["messages"][0]["content"] for r in srv.requests
                 if r["messages"][0]["content"].startswith("You are the Observer")]
    assert asked and all("segment_retrieval(" in a for a in asked), asked
    records = [*run.file("cot.jsonl").read(),
               *(r for r in run.file("rejected.jsonl").read() if r["stage"] == "cot")]
    queries = [s for r in records for s in r["trajectory"]
               if (s["action"] or "").startswith("segment_query(") and s["observation"]]
    assert queries, records
    index = CaptionIndex(CAPTION)
    for s in queries:
        shown = index.segment_query(s["action"].split('"')[1]).lines
        assert shown
        for c in shown:  # every line of the moment is in the observation, word for word
            assert c.text in s["observation"], (c.text, s["observation"])


async def test_quoting_observer_cannot_pick_an_unlisted_clause(tmp_path):
    agents = Agents(observer=lambda content: {"quotes": ["[00:01-00:02] a blue elephant"]})
    run = make_run(tmp_path, TRUTH, 1)
    with ScriptedTestServer(agents) as srv:
        cfg = scripted_config(srv.base_url, observer_mode="quote")
        await synthesize_cot(run, cfg, models_for(cfg, run))
    rejected = list(run.file("rejected.jsonl").read())
    assert rejected[0]["reason"] == "invalid_observer_reply" and agents.calls["observer"] == 2


async def test_answer_at_limit_leaves_only_the_answer_on_the_last_step(tmp_path):
    def wander(messages):
        n = sum(1 for m in messages if m["role"] == "assistant")
        return step("keep looking", "segment_query", f"00:{n:02d}")

    run, asked = await run_scripted_cot(tmp_path, Agents(reasoner=wander), TRUTH, max_steps=3,
                                        answer_at_limit=True)
    schemas = [schema_of(r) for r in asked]
    assert "anyOf" in schemas[0] and "anyOf" in schemas[1]
    last = schemas[2]  # one object: the answer, an option's text
    options = options_of(asked[0]["messages"])
    assert last["properties"]["action"]["const"] == "final_answer"
    assert last["properties"]["argument"]["enum"] == [options[k] for k in LETTERS]
    rejected = list(run.file("rejected.jsonl").read())
    # the scripted policy ignores the schema and queries again: refused, not run
    assert rejected[0]["reason"] == "invalid_reasoner_reply"
    assert len(rejected[0]["trajectory"]) == 2


async def test_converter_prose_starts_with_a_word_by_schema(tmp_path):
    def numbered(content):
        n = int(re.search(r"\((\d+) in all", content).group(1))
        return {"steps": [f"{i}. The step" for i in range(1, n + 1)], "conclusion": "Settled."}

    agents = Agents(converter=numbered)
    run = make_run(tmp_path, TRUTH, 1)
    with ScriptedTestServer(agents) as srv:
        cfg = scripted_config(srv.base_url)
        await synthesize_cot(run, cfg, models_for(cfg, run))
        asked = [r for r in srv.requests
                 if r["messages"][0]["content"].startswith("You are M_convert")]
    prose = schema_of(asked[0])["properties"]["steps"]["items"]
    assert re.fullmatch(prose["pattern"], "I look at the start again.")
    assert re.fullmatch(prose["pattern"], "1. The first step") is None
    rejected = list(run.file("rejected.jsonl").read())
    assert rejected[0]["reason"] == "invalid_converter_reply" and agents.calls["converter"] == 2
