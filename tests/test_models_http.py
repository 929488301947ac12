"""The lean HTTP/1.1 client of the chat path, against a raw scripted loopback server (not a
model) that writes exact bytes: keep-alive reuse, a kept-alive connection the server closed,
chunked, close-delimited and gzip replies, error statuses, timeouts."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import time

import pytest

from rewatch.models.http import (
    HTTPStatusError,
    JSONClient,
    PreEncodedList,
    TransportError,
    encode_json,
)

REPLY = {"choices": [{"message": {"role": "assistant", "content": "ok"}}]}


class RawServer:
    """Answers each request on a connection with the next of `replies` (raw bytes, or a
    function of the request number); counts connections and requests."""

    def __init__(self, *replies, close_after: int | None = None, delay_s: float = 0.0,
                 idle_s: float | None = None):
        self.replies = replies
        self.close_after = close_after  # close each connection after this many requests
        self.delay_s = delay_s
        self.idle_s = idle_s  # close a connection idle this long (a server's keep-alive timeout)
        self.connections = 0
        self.requests: list[bytes] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.idle_s)
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                self.requests.append(head + await reader.readexactly(length))
                await asyncio.sleep(self.delay_s)
                reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
                writer.write(reply)
                await writer.drain()
                served += 1
                if (self.close_after is not None and served >= self.close_after) or \
                        b"connection: close" in reply.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        writer.close()

    async def __aenter__(self) -> str:
        # its own loop in its own thread: a client blocking its loop does not block the server
        started = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            self._srv = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            started.set()

        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(serve(), self._loop)
        assert started.wait(10)
        port = self._srv.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def __aexit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._srv.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def http(body: bytes, status: str = "200 OK", *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", *headers]
    if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


BODY = json.dumps(REPLY).encode()


async def test_requests_reuse_one_kept_alive_connection() -> None:
    server = RawServer(http(BODY))
    async with server as url:
        client = JSONClient(url)
        for _ in range(5):
            assert await client.post_json("/chat/completions", {"n": 1}) == REPLY
        await client.aclose()
    assert len(server.requests) == 5 and server.connections == 1
    first = server.requests[0].decode()
    assert first.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
    assert "Content-Type: application/json" in first and first.endswith('{"n": 1}')


async def test_a_connection_the_server_closed_is_replaced_without_error() -> None:
    server = RawServer(http(BODY), close_after=1)  # the server drops every connection
    async with server as url:
        client = JSONClient(url)
        for _ in range(3):
            assert await client.post_json("/chat/completions", {}) == REPLY
            await asyncio.sleep(0.05)  # the close reaches the client's idle connection
    assert len(server.requests) == 3 and server.connections == 3


async def test_idle_connections_the_server_timed_out_are_not_used_twice() -> None:
    # three pooled connections go idle; the server closes all three (its keep-alive timeout)
    # while the client's loop is busy, so the client has not yet seen the FINs: the request
    # takes a dead connection, and its one resend must go on a new connection, not another
    # dead one from the pool
    server = RawServer(http(BODY, "200 OK"), delay_s=0.05, idle_s=0.2)
    async with server as url:
        client = JSONClient(url)
        await asyncio.gather(*(client.post_json("/chat/completions", {}) for _ in range(3)))
        assert server.connections == 3 and len(client._idle) == 3
        time.sleep(0.5)  # blocks the loop: the closes arrive unseen
        assert await client.post_json("/chat/completions", {}) == REPLY
    assert server.connections == 4 and len(server.requests) == 4


@pytest.mark.parametrize("reply", [
    http(b"", "200 OK", "Transfer-Encoding: chunked")
    + b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, BODY[:10], len(BODY) - 10, BODY[10:]),
    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + BODY,
    http(gzip.compress(BODY), "200 OK", "Content-Encoding: gzip"),
    b"HTTP/1.1 100 Continue\r\n\r\n" + http(BODY),
], ids=["chunked", "close-delimited", "gzip", "interim-100"])
async def test_reply_framings(reply: bytes) -> None:
    async with RawServer(reply) as url:
        assert await JSONClient(url).post_json("/chat/completions", {}) == REPLY


async def test_error_status_carries_the_body() -> None:
    err = json.dumps({"error": {"message": "maximum context length is 4096"}}).encode()
    async with RawServer(http(err, "400 Bad Request")) as url:
        with pytest.raises(HTTPStatusError, match="maximum context length") as e:
            await JSONClient(url).post_json("/chat/completions", {})
    assert e.value.status_code == 400


async def test_no_reply_in_time_is_a_transport_error() -> None:
    async with RawServer(http(BODY), delay_s=2.0) as url:
        with pytest.raises(TransportError, match="within 0.2 s"):
            await JSONClient(url, timeout_s=0.2).post_json("/chat/completions", {})


async def test_refused_connection_and_non_json_are_transport_errors() -> None:
    async with RawServer(http(b"<html>gateway</html>")) as url:
        with pytest.raises(TransportError, match="not JSON"):
            await JSONClient(url).post_json("/chat/completions", {})
    with pytest.raises(TransportError, match="cannot connect"):
        await JSONClient(url).post_json("/chat/completions", {})  # the server is gone


def test_only_plain_http() -> None:
    with pytest.raises(ValueError, match="plain http"):
        JSONClient("https://api.example.com/v1")


def test_a_proxied_host_goes_through_the_sdk(monkeypatch) -> None:
    from rewatch.models.openai_compat import OpenAIChatModel

    monkeypatch.setenv("http_proxy", "http://127.0.0.1:3128")
    monkeypatch.setenv("no_proxy", "localhost")
    # the SDK where the proxy applies
    assert OpenAIChatModel("m", "http://10.1.2.3:8000/v1").endpoints[0].http is None
    assert OpenAIChatModel("m", "http://localhost:8000/v1").endpoints[0].http is not None
    assert OpenAIChatModel("m", "http://127.0.0.1:8000/v1").endpoints[0].http is not None
    monkeypatch.setenv("no_proxy", "10.1.2.3")
    assert OpenAIChatModel("m", "http://10.1.2.3:8000/v1").endpoints[0].http is not None
    monkeypatch.delenv("http_proxy")
    assert OpenAIChatModel("m", "http://10.1.2.3:8000/v1").endpoints[0].http is not None
    assert OpenAIChatModel("m", "https://api.example.com/v1").endpoints[0].http is None


def test_pre_encoded_head_is_spliced_into_the_body_not_encoded_again() -> None:
    head = ({"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + "A" * 4000}},
            {"type": "text", "text": "[00:01] café"})
    # compact separators, unlike json.dumps' default: seeing them in the body proves the bytes
    # were spliced in rather than encoded again
    compact = json.dumps(list(head), ensure_ascii=False, separators=(",", ":")).encode()
    tail = [{"type": "text", "text": "Which option? \x00 \"quoted\""}]
    content = PreEncodedList(head, compact, tail)
    assert content == [*head, *tail]  # an ordinary list to every other reader
    payload = {"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                          {"role": "user", "content": content}], "seed": 0}
    body = encode_json(payload)
    assert compact[:-1] in body and json.loads(body) == json.loads(json.dumps(payload))
    assert json.loads(encode_json({"messages": [{"content": PreEncodedList(head, compact, [])}]})
                      ) == {"messages": [{"content": list(head)}]}
    empty = PreEncodedList((), b"[]", tail)
    assert json.loads(encode_json({"messages": [{"content": empty}]}))["messages"][0][
        "content"] == tail
    content[0] = {"type": "text", "text": "replaced"}  # the head changed: encoded afresh
    assert not content.head_intact() and compact[:-1] not in encode_json(payload)
    assert json.loads(encode_json(payload)) == json.loads(json.dumps(payload))


async def test_pre_encoded_request_reaches_the_server_intact() -> None:
    head = ({"type": "text", "text": "frame " * 300},)
    content = PreEncodedList(head, json.dumps(list(head)).encode(), [{"type": "text",
                                                                      "text": "prompt"}])
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head_bytes = await reader.readuntil(b"\r\n\r\n")
        size = int(next(line.split(b":")[1] for line in head_bytes.split(b"\r\n")
                        if line.lower().startswith(b"content-length")))
        seen.append(await reader.readexactly(size))
        writer.write(http(json.dumps(REPLY).encode()))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = JSONClient(f"http://127.0.0.1:{port}/v1")
    try:
        assert await client.post_json("/chat/completions", {"messages": [
            {"role": "user", "content": content}]}) == REPLY
    finally:
        await client.aclose()
        server.close()
    assert json.loads(seen[0]) == {"messages": [{"role": "user", "content": list(content)}]}
