"""One retry policy per layer: the transport retries within one budget per chat() call, the
schema layer re-asks, the reward judge adds nothing. Against a scripted loopback server (not a
model) that plays a fixed sequence of outcomes and counts every request it receives."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse

from rewatch.models.base import ModelError, SchemaError
from rewatch.models.http import PreEncodedList
from rewatch.models.openai_compat import OpenAIChatModel
from rewatch.models.scripted_server import ScriptedTestServer
from rewatch.reward.judges import JudgeError, RewardJudge, Verdict

GOOD = json.dumps({"supported": True, "reason": "scripted"})
Q = [{"role": "user", "content": "Is the red cup at 00:05?"}]


class OutcomeServer(ScriptedTestServer):
    """Request n gets outcomes[n]: "500" (a server error), "bad" (a reply outside the schema)
    or "good"; past the end, the last outcome repeats."""

    def __init__(self, outcomes: list[str], latency_s: float = 0.0):
        super().__init__(GOOD, latency_s=latency_s)
        self.outcomes = outcomes

    async def _chat(self, request: Request) -> JSONResponse:
        n = len(self.requests)
        outcome = self.outcomes[min(n, len(self.outcomes) - 1)]
        if outcome == "500":
            self.requests.append(await request.json())
            return JSONResponse({"error": {"message": "scripted failure"}}, status_code=500)
        self.reply = GOOD if outcome == "good" else '{"verdict": "maybe"}'
        return await super()._chat(request)


def model(srv: ScriptedTestServer, **kw) -> OpenAIChatModel:
    return OpenAIChatModel("scripted", srv.base_url, retry_backoff_s=0.01, **kw)


async def test_a_judge_verdict_costs_at_most_one_plus_both_budgets() -> None:
    # defaults: 4 transport retries, 2 schema re-asks. Before, the judge's own retry x 3 schema
    # attempts x 5 transport attempts allowed 30 requests for one verdict.
    with OutcomeServer(["500"] * 4 + ["bad"] * 3) as srv:
        m = model(srv)
        judge = RewardJudge(m)
        with pytest.raises(JudgeError, match="SchemaError"):
            await judge.observation_verdict("[00:05-00:06] a red cup", "segment_query(00:05)",
                                            "a red cup")
    assert m.max_retries == 4 and m.schema_retries == 2
    assert len(srv.requests) == 7 == 1 + m.schema_retries + m.max_retries
    assert m.stats["requests"] == 7
    assert (m.stats["transport_retries"], m.stats["schema_retries"], m.stats["errors"]) == (4, 2, 1)
    assert judge.stats["observation_calls"] == 1 and judge.stats["failures"] == 1


async def test_the_transport_budget_is_shared_by_the_schema_reasks() -> None:
    # 500, bad reply, 500, 500: the third transport failure exceeds max_retries=2 for the call,
    # although each request alone retried at most twice
    with OutcomeServer(["500", "bad", "500", "500", "good"]) as srv:
        m = model(srv, max_retries=2)
        with pytest.raises(ModelError, match="after 2 attempts"):
            await m.chat(Q, schema=Verdict)
    assert len(srv.requests) == 4 == m.stats["requests"]
    assert (m.stats["transport_retries"], m.stats["schema_retries"]) == (2, 1)


async def test_mixed_faults_within_the_budgets_succeed_and_are_counted() -> None:
    with OutcomeServer(["500", "bad", "500", "good"]) as srv:
        m = model(srv, max_retries=2)
        reply = await m.chat(Q, schema=Verdict)
    assert reply.parsed.supported and len(srv.requests) == 4 == m.stats["requests"]
    assert m.stats["transport_retries"] == 2 and m.stats["schema_failures"] == 1
    assert m.stats["calls"] == 2 and m.stats["errors"] == 0  # calls = schema attempts


@pytest.mark.parametrize(("outcomes", "expected", "error"), [
    (["500"], 1 + 3, ModelError), (["bad"], 1 + 2, SchemaError)])
async def test_one_layer_failing_uses_only_its_own_budget(outcomes, expected, error) -> None:
    with OutcomeServer(outcomes) as srv:
        m = model(srv, max_retries=3, schema_retries=2)
        with pytest.raises(error):
            await m.chat(Q, schema=Verdict)
    assert len(srv.requests) == expected == m.stats["requests"]


async def test_identical_requests_in_flight_are_sent_once() -> None:
    with OutcomeServer(["good"], latency_s=0.2) as srv:
        m = model(srv)
        replies = await asyncio.gather(*(m.chat(Q, schema=Verdict) for _ in range(8)))
        other = await m.chat([{"role": "user", "content": "another question"}])
    assert len(srv.requests) == 2 and m.stats["coalesced"] == 7
    assert all(r.parsed == replies[0].parsed for r in replies) and other.text == GOOD
    assert sum(not r.cached for r in replies) == 1  # the others were not paid for


async def test_a_shared_failure_reaches_every_waiter_once() -> None:
    with OutcomeServer(["500"], latency_s=0.1) as srv:
        m = model(srv, max_retries=1)
        out = await asyncio.gather(*(m.chat(Q) for _ in range(4)), return_exceptions=True)
    assert all(isinstance(e, ModelError) for e in out)
    assert len(srv.requests) == 2  # one request and its retry, for all four callers


async def test_a_cancelled_sender_does_not_cancel_the_waiters() -> None:
    with OutcomeServer(["good"], latency_s=0.3) as srv:
        m = model(srv)
        first = asyncio.ensure_future(m.chat(Q))
        await asyncio.sleep(0.05)
        waiter = asyncio.ensure_future(m.chat(Q))
        await asyncio.sleep(0.05)
        first.cancel()
        reply = await waiter
    assert first.cancelled() and reply.text == GOOD and len(srv.requests) == 2


async def test_frame_requests_without_a_cache_coalesce_by_their_shared_frames() -> None:
    # no cache: the in-flight key names a video's pre-encoded frames by identity (no ~1 MB
    # encoding and hash per request), and still tells different prompts or videos apart
    def frames(tag: str) -> tuple[tuple[dict, ...], bytes]:
        head = tuple({"type": "image_url", "image_url": {"url": f"data:,{tag}" + "x" * 5000}}
                     for _ in range(3))
        return head, json.dumps(list(head)).encode()

    video, other_video = frames("a"), frames("b")

    def ask(head: tuple[tuple[dict, ...], bytes], prompt: str) -> list[dict]:
        return [{"role": "user", "content": PreEncodedList(*head, [{"type": "text",
                                                                   "text": prompt}])}]

    with OutcomeServer(["good"], latency_s=0.2) as srv:
        m = model(srv)
        assert m.cache is None
        await asyncio.gather(*(m.chat(ask(video, "same question")) for _ in range(4)),
                             m.chat(ask(video, "another question")),
                             m.chat(ask(other_video, "same question")))
    assert len(srv.requests) == 3 and m.stats["coalesced"] == 3
    sent = [r["messages"][0]["content"] for r in srv.requests]
    assert sorted(c[-1]["text"] for c in sent) == ["another question", "same question",
                                                   "same question"]
    assert all(len(c) == 4 and c[0]["image_url"]["url"].startswith("data:,") for c in sent)


async def test_long_strings_count_by_content_in_the_cache_key(tmp_path) -> None:
    # the in-flight shortcut (identity) never reaches the response cache: equal content in
    # another object is a hit, different content of the same length is not
    from rewatch.models.cache import ResponseCache

    long_a, long_b = "a" * 5000, "b" * 5000
    with OutcomeServer(["good"]) as srv:
        m = model(srv, cache=ResponseCache(tmp_path / "c.db"))
        await m.chat([{"role": "user", "content": long_a}])
        await m.chat([{"role": "user", "content": "".join(["a"] * 5000)}])
        await m.chat([{"role": "user", "content": long_b}])
    assert len(srv.requests) == 2 and m.stats["cache_hits"] == 1


async def test_replicas_share_the_load_and_a_dead_one_is_routed_around() -> None:
    """`replicas`: 40 requests, 4 in flight per endpoint, over two scripted servers at 50 ms:
    both serve about half. With the second server gone (a closed port), every
    request still gets its reply, each failed attempt retried on the live one. The cache
    identity is the primary's alone."""
    asks = [[{"role": "user", "content": f"question {i}"}] for i in range(40)]
    with ScriptedTestServer(GOOD, latency_s=0.05) as a, \
            ScriptedTestServer(GOOD, latency_s=0.05) as b:
        m = OpenAIChatModel("scripted", a.base_url, replicas=[b.base_url], concurrency=4,
                            retry_backoff_s=0.01)
        replies = await asyncio.gather(*(m.chat(q) for q in asks))
        await m.aclose()
        assert all(r.text == GOOD for r in replies)
        assert len(a.requests) + len(b.requests) == 40
        assert 15 <= len(a.requests) <= 25, (len(a.requests), len(b.requests))
        dead = b.base_url
        assert await m.cache_identity() == await OpenAIChatModel(
            "scripted", a.base_url).cache_identity()
    with ScriptedTestServer(GOOD) as a:
        m = OpenAIChatModel("scripted", a.base_url, replicas=[dead], concurrency=4,
                            retry_backoff_s=0.01)
        replies = await asyncio.gather(*(m.chat(q) for q in asks))
        await m.aclose()
    assert all(r.text == GOOD for r in replies) and len(a.requests) == 40
    assert m.stats["transport_retries"] > 0 and m.stats["errors"] == 0
