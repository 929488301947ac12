"""The OpenAI-compatible backend against a scripted loopback server (faults we control)."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import sys

import pytest
from PIL import Image
from pydantic import BaseModel
from starlette.responses import JSONResponse

from rewatch.models.base import ContextLengthError, ModelError, SchemaError
from rewatch.models.cache import ResponseCache
from rewatch.models.openai_compat import OpenAIChatModel
from rewatch.models.scripted_server import ScriptedTestServer, last_user_text


class Verdict(BaseModel):
    supported: bool
    reason: str


GOOD = '{"supported": true, "reason": "line 00:03 says so"}'
Q = [{"role": "user", "content": "Is the red ball seen at 00:03?"}]


TRANSPORT = "auto"


@pytest.fixture(autouse=True, params=["auto", "sdk"])
def transport(request, monkeypatch):
    """Every test runs on both transports: the lean client (plain http) and the openai SDK
    (what https endpoints use)."""
    monkeypatch.setattr(sys.modules[__name__], "TRANSPORT", request.param)
    return request.param


def model_for(srv: ScriptedTestServer, **kw) -> OpenAIChatModel:
    return OpenAIChatModel("scripted", srv.base_url, transport=TRANSPORT, **kw)


async def test_structured_reply_uses_response_format_json_schema():
    with ScriptedTestServer(GOOD) as srv:
        reply = await model_for(srv).chat(Q, schema=Verdict)
    assert reply.parsed == Verdict(supported=True, reason="line 00:03 says so")
    fmt = srv.requests[0]["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["schema"]["required"] == ["supported", "reason"]


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_transient_errors_are_retried_and_counted(status):
    with ScriptedTestServer(GOOD, fail_first=2, error_status=status) as srv:
        m = model_for(srv, max_retries=3)
        reply = await m.chat(Q, schema=Verdict)
    assert reply.parsed.supported is True
    assert len(srv.requests) == 3
    assert m.stats["transport_retries"] == 2


async def test_persistent_500_gives_a_clear_error_after_the_retry_budget():
    with ScriptedTestServer(GOOD, error_rate=1.0) as srv:
        m = model_for(srv, max_retries=2)
        with pytest.raises(ModelError, match="after 3 attempts"):
            await m.chat(Q)
    assert len(srv.requests) == 3


async def test_unreachable_server_says_so():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before we call
    m = OpenAIChatModel("x", f"http://127.0.0.1:{port}/v1", max_retries=1, transport=TRANSPORT)
    with pytest.raises(ModelError, match="reachable"):
        await m.chat(Q)


async def test_malformed_reply_is_reasked_with_the_validation_error():
    def reply(body):
        # first answer is not JSON; the re-ask carries the error, then the reply is good
        return GOOD if "not valid" in last_user_text(body) else "Sure! The ball is red."

    with ScriptedTestServer(reply) as srv:
        m = model_for(srv)
        out = await m.chat(Q, schema=Verdict)
    assert out.parsed.supported is True
    assert len(srv.requests) == 2 and m.stats["schema_failures"] == 1
    assert "Error" in last_user_text(srv.requests[1])


async def test_reply_that_never_fits_raises_schema_error_and_counts():
    with ScriptedTestServer('{"supported": "maybe"}') as srv:
        m = model_for(srv, schema_retries=2)
        with pytest.raises(SchemaError, match="Verdict"):
            await m.chat(Q, schema=Verdict)
    assert len(srv.requests) == 3 and m.stats["schema_failures"] == 3


async def test_server_without_json_schema_support_falls_back_to_parse_and_validate():
    class NoSchemaServer(ScriptedTestServer):
        async def _chat(self, request):
            body = await request.json()  # starlette caches the body for the second read
            if "response_format" in body:
                self.requests.append(body)
                return JSONResponse({"error": {"message": "response_format json_schema is not "
                                                          "supported"}}, status_code=400)
            return await super()._chat(request)

    with NoSchemaServer(GOOD) as srv:
        m = model_for(srv)
        first = await m.chat(Q, schema=Verdict)
        second = await m.chat([{"role": "user", "content": "again"}], schema=Verdict)
    assert first.parsed.supported and second.parsed.supported
    assert m.mode == "parse"
    # json_schema and json_object refused once each, then plain requests with the schema in
    # the prompt
    assert [r.get("response_format", {}).get("type") for r in srv.requests] == [
        "json_schema", "json_object", None, None]
    assert '"supported"' in last_user_text(srv.requests[2])


async def test_context_overflow_is_not_retried_and_says_what_to_do():
    class TooLong(ScriptedTestServer):
        async def _chat(self, request):
            self.requests.append(await request.json())
            return JSONResponse({"error": {"message": "This model's maximum context length is "
                                                      "4096 tokens; you requested 9000"}},
                                status_code=400)

    with TooLong() as srv:
        with pytest.raises(ContextLengthError, match="shorten"):
            await model_for(srv).chat(Q)
    assert len(srv.requests) == 1


async def test_cache_answers_identical_requests_without_a_server_call(tmp_path):
    cache = ResponseCache(tmp_path / "cache.sqlite")
    with ScriptedTestServer(GOOD) as srv:
        m = model_for(srv, cache=cache)
        a = await m.chat(Q, schema=Verdict)
        b = await m.chat(Q, schema=Verdict)
        c = await m.chat(Q, schema=Verdict, temperature=0.7)  # other params: a new request
        assert a.parsed == b.parsed and b.cached and not a.cached
        assert len(srv.requests) == 2 and m.stats["cache_hits"] == 1
        # a new process (new cache object on the same file, same server) still hits
        m2 = model_for(srv, cache=ResponseCache(tmp_path / "cache.sqlite"))
        assert (await m2.chat(Q, schema=Verdict)).cached
        assert len(srv.requests) == 2
    assert c.parsed is not None


async def test_same_model_name_on_another_server_is_not_replayed(tmp_path):
    # the cache keys on base_url + served model, not on the name in the config
    with ScriptedTestServer(GOOD) as srv:
        first = await model_for(srv, cache=ResponseCache(tmp_path / "c.sqlite")).chat(Q)
    other = '{"supported": false, "reason": "another model"}'
    with ScriptedTestServer(other) as srv2:
        m = model_for(srv2, cache=ResponseCache(tmp_path / "c.sqlite"))
        again = await m.chat(Q)
        assert len(srv2.requests) == 1 and not again.cached and again.text == other
        served = OpenAIChatModel("other-served-name", srv2.base_url,
                                 cache=ResponseCache(tmp_path / "c.sqlite"))
        assert not (await served.chat(Q)).cached and len(srv2.requests) == 2
    assert first.text == GOOD and m.name == "openai:scripted"


async def test_image_parts_reach_the_server_as_base64_jpeg():
    buf = io.BytesIO()
    Image.new("RGB", (56, 28), (255, 0, 0)).save(buf, "JPEG")
    url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    msgs = [{"role": "user", "content": [{"type": "text", "text": "What colour?"},
                                         {"type": "image_url", "image_url": {"url": url}}]}]
    with ScriptedTestServer("red") as srv:
        reply = await model_for(srv).chat(msgs)
    assert reply.text == "red"
    part = srv.requests[0]["messages"][0]["content"][1]
    raw = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
    assert Image.open(io.BytesIO(raw)).size == (56, 28)


async def test_api_key_never_reaches_the_logs(monkeypatch, caplog):
    monkeypatch.setenv("REWATCH_TEST_KEY", "sk-very-secret-123")
    caplog.set_level(logging.DEBUG)
    with ScriptedTestServer(GOOD, error_rate=1.0) as srv:
        m = OpenAIChatModel("scripted", srv.base_url, api_key_env="REWATCH_TEST_KEY",
                            max_retries=1, transport=TRANSPORT)
        with pytest.raises(ModelError) as e:
            await m.chat(Q)
    assert "sk-very-secret" not in caplog.text and "sk-very-secret" not in str(e.value)
    assert "sk-very-secret" not in json.dumps(srv.requests)
