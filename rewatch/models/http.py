"""A lean keep-alive HTTP/1.1 JSON client for plain-http OpenAI-compatible servers.

The chat path's cost per request was mostly the client stack (openai SDK request building and
response models over httpx/httpcore/anyio, ~1.5-2 ms of CPU a request on these cores); GRPO
scores thousands of judge calls a step against a vLLM server on the local network, so
`OpenAIChatModel` sends plain `http://` requests with this instead (~0.2 ms), and keeps the SDK
for `https://` (hosted APIs: TLS, proxies). It speaks just what those servers need: POST a JSON
body, read a JSON reply (Content-Length, chunked or close-delimited; gzip/deflate if sent),
reuse connections, and a timeout per request. No redirects, no proxies.
"""

from __future__ import annotations

import asyncio
import json
import os
import zlib
from typing import Any
from urllib.parse import urlsplit


class TransportError(ConnectionError):
    """No HTTP reply: refused, reset, timed out or malformed (retryable)."""


class HTTPStatusError(RuntimeError):
    """The server answered with an error status; `status_code` and the reply body's text."""

    def __init__(self, status_code: int, body: str):
        super().__init__(f"Error code: {status_code} - {body[:1000]}")
        self.status_code = status_code
        self.body = body


_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class PreEncodedList(list[Any]):
    """A list whose first items (`head`) carry their JSON encoding, computed once: a video's
    ~1 MB of frame parts shared by all its questions. It is an ordinary list to every reader;
    `JSONClient` splices `head_json` into the request body instead of encoding it again."""

    __slots__ = ("head", "head_json")

    def __init__(self, head: tuple[Any, ...], head_json: bytes, tail: list[Any]):
        super().__init__([*head, *tail])
        self.head = head
        self.head_json = head_json  # json.dumps(list(head), ensure_ascii=False), UTF-8

    def head_intact(self) -> bool:
        """Whether the list still starts with exactly the objects `head_json` encodes."""
        n = len(self.head)
        return len(self) >= n and all(a is b for a, b in zip(self, self.head, strict=False))

    def encoded(self) -> bytes:
        """This list's JSON (UTF-8), the head spliced in, the rest encoded now."""
        if not self.head_intact():
            return json.dumps(list(self), ensure_ascii=False).encode()
        tail = self[len(self.head):]
        if not tail:
            return self.head_json
        rest = json.dumps(tail, ensure_ascii=False).encode()
        if not self.head:
            return rest
        return self.head_json[:-1] + b", " + rest[1:]


def encode_json(payload: Any) -> bytes:
    """`payload` as UTF-8 JSON, with any `PreEncodedList` among the values of the dicts in a
    top-level list (a chat request's `messages[i]["content"]`) spliced in from its encoding."""
    raw: dict[bytes, bytes] = {}
    if isinstance(payload, dict):
        swapped: dict[str, Any] = {}
        for key, value in payload.items():
            if isinstance(value, list) and any(
                    isinstance(m, dict) and any(isinstance(v, PreEncodedList) for v in m.values())
                    for m in value):
                value = [_swap(m, raw) if isinstance(m, dict) else m for m in value]
            swapped[key] = value
        payload = swapped
    body = json.dumps(payload, ensure_ascii=False).encode()
    for token, data in raw.items():  # the body is small here: the big parts are in `raw`
        body = body.replace(token, data, 1)
    return body


def _swap(message: dict[str, Any], raw: dict[bytes, bytes]) -> dict[str, Any]:
    out = {}
    for key, value in message.items():
        if isinstance(value, PreEncodedList):
            # a NUL-delimited placeholder with a per-process nonce: JSON writes a real string's
            # NUL as \u0000, so only an identical string could collide, and none holds the nonce
            mark = f"\x00{_NONCE}:{len(raw)}\x00"
            raw[json.dumps(mark).encode()] = value.encoded()
            value = mark
        out[key] = value
    return out


_NONCE = os.urandom(8).hex()


class JSONClient:
    """POST JSON to one `http://host:port/prefix`, over a pool of keep-alive connections (at
    most as many as requests in flight). Bound to the event loop that first uses it; a new
    loop starts a new pool."""

    def __init__(self, base_url: str, *, headers: dict[str, str] | None = None,
                 timeout_s: float = 120.0):
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"JSONClient speaks plain http only, not {base_url!r}")
        self.host = url.hostname
        self.port = url.port or 80
        self.prefix = url.path.rstrip("/")
        self.timeout_s = timeout_s
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        # the fixed part of every request head, built once
        self._head = (f"Host: {url.netloc}\r\nContent-Type: application/json\r\n"
                      f"Accept: application/json\r\nUser-Agent: rewatch\r\n{extra}")
        self._idle: list[_Conn] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def post_json(self, path: str, payload: Any) -> Any:
        """POST `payload` as JSON to prefix + `path`; the decoded JSON reply. Raises
        HTTPStatusError for a 4xx/5xx reply, TransportError when there is no reply."""
        body = encode_json(payload)
        request = (f"POST {self.prefix}{path} HTTP/1.1\r\n{self._head}"
                   f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1") + body
        try:
            async with asyncio.timeout(self.timeout_s):
                status, data = await self._exchange(request)
        except TimeoutError as e:
            raise TransportError(f"no reply from {self.host}:{self.port} within "
                                 f"{self.timeout_s:g} s") from e
        text = data.decode("utf-8", "replace")
        if status >= 400:
            raise HTTPStatusError(status, text)
        try:
            return json.loads(text)
        except ValueError as e:
            raise TransportError(f"reply from {self.host}:{self.port} is not JSON: "
                                 f"{text[:200]!r}") from e

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # connections belong to the loop that opened them
            self._idle, self._loop = [], loop
        for attempt in (1, 2):
            conn = self._take_idle() if attempt == 1 else None
            reused = conn is not None
            reader, writer = conn if conn is not None else await self._open()
            got_reply = False
            try:
                writer.write(request)
                status, headers, version = await self._read_head(reader)
                got_reply = True
                data = await self._read_body(reader, headers)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    ValueError) as e:
                writer.close()
                # a kept-alive connection the server closed as we sent (its idle timeout):
                # send it again, once, on a new connection
                if reused and not got_reply:
                    continue
                raise TransportError(f"{self.host}:{self.port}: {type(e).__name__}: {e}") from e
            except BaseException:  # cancelled or timed out mid-reply: the connection is spent
                writer.close()
                raise
            keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            framed = "content-length" in headers or "chunked" in headers.get(
                "transfer-encoding", "").lower()
            if keep and framed:
                self._idle.append((reader, writer))
            else:
                writer.close()
            encoding = headers.get("content-encoding", "").lower()
            if encoding in ("gzip", "deflate"):
                data = zlib.decompress(data, 47 if encoding == "gzip" else 15)
            return status, data
        raise AssertionError("unreachable")

    def _take_idle(self) -> _Conn | None:
        """The most recently used idle connection the server has not closed, if any."""
        while self._idle:
            reader, writer = self._idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        return None

    async def _open(self) -> _Conn:
        try:
            return await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        except OSError as e:
            raise TransportError(f"cannot connect to {self.host}:{self.port}: {e}") from e

    @staticmethod
    async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], str]:
        while True:
            raw = await reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            version, status, *_ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                key, sep, value = line.partition(":")
                if sep:
                    headers[key.strip().lower()] = value.strip()
            if not 100 <= int(status) < 200:  # skip interim replies (100 Continue)
                return int(status), headers, version

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                        pass
                    return b"".join(parts)
                parts.append((await reader.readexactly(size + 2))[:-2])
        if "content-length" in headers:
            return await reader.readexactly(int(headers["content-length"]))
        return await reader.read()  # delimited by the server closing the connection

    async def aclose(self) -> None:
        """Close the idle connections."""
        idle, self._idle = self._idle, []
        for _reader, writer in idle:
            writer.close()
