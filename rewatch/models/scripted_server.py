"""FOR TESTS AND BENCHMARKS ONLY: a scripted OpenAI-compatible server on 127.0.0.1.

It is not a model. It answers from a table or a function, with configurable latency, error
rate and malformed-reply rate, and counts every request it receives, so tests can check
retries, resume ("no call repeated") and throughput against a real HTTP server.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

Responder = Callable[[dict[str, Any]], str]


def messages_key(messages: list[dict[str, Any]]) -> str:
    """A stable hash of a request's messages (to count repeated calls)."""
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the last user message of a chat request."""
    for m in reversed(body.get("messages", [])):
        if m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else " ".join(p.get("text", "") for p in c)
    return ""


class ScriptedTestServer:
    """A scripted (not a model) OpenAI-compatible chat server for tests and benchmarks.

    reply: a string, a dict {last user text: reply}, or a function(request body) -> reply text.
    latency_s: delay per request. error_rate / malformed_rate: fractions of requests that get
    an HTTP `error_status` or a reply that is not JSON. fail_first: the first N requests fail.
    """

    def __init__(
        self,
        reply: str | dict[str, str] | Responder = "ok",
        *,
        latency_s: float = 0.0,
        error_rate: float = 0.0,
        malformed_rate: float = 0.0,
        fail_first: int = 0,
        error_status: int = 500,
        seed: int = 0,
        model: str = "scripted",
    ):
        self.reply = reply
        self.latency_s = latency_s
        self.error_rate = error_rate
        self.malformed_rate = malformed_rate
        self.fail_first = fail_first
        self.error_status = error_status
        self.model = model
        self._rng = random.Random(seed)
        self.requests: list[dict[str, Any]] = []
        self.by_messages: Counter[str] = Counter()
        self.served = 0
        self.failed = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- what the server answers -------------------------------------------------------
    def _answer(self, body: dict[str, Any]) -> str:
        if callable(self.reply):
            return self.reply(body)
        if isinstance(self.reply, dict):
            return self.reply.get(last_user_text(body), "")
        return self.reply

    async def _chat(self, request: Request) -> JSONResponse:
        body = await request.json()
        n = len(self.requests)
        self.requests.append(body)
        self.by_messages[messages_key(body.get("messages", []))] += 1
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        roll = self._rng.random()
        if n < self.fail_first or roll < self.error_rate:
            self.failed += 1
            return JSONResponse({"error": {"message": "scripted failure", "type": "server_error"}},
                                status_code=self.error_status)
        # a responder function may be slow (e.g. a real model): keep the server's loop free
        # meanwhile; a string or a table is answered inline (a thread hop costs more than it)
        text = (await asyncio.to_thread(self._answer, body) if callable(self.reply)
                else self._answer(body))
        if self._rng.random() < self.malformed_rate:
            text = "{not json" + text[:10]
        self.served += 1
        return JSONResponse({
            "id": f"scripted-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": len(json.dumps(body.get("messages", []))) // 4,
                      "completion_tokens": max(1, len(text) // 4),
                      "total_tokens": 0},
        })

    async def _models(self, request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    # --- lifecycle ----------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ScriptedTestServer:
        app = Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
        ])
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # accepted connections inherit this: without it Nagle + delayed ACK add ~40 ms a reply
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", backlog=2048)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        daemon=True, name="scripted-server")
        self._thread.start()
        deadline = time.time() + 10
        while not self._server.started:
            if time.time() > deadline:
                raise RuntimeError("scripted test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> ScriptedTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """Run a scripted test server in its own process (benchmarks: keeps it off the client's
    GIL). Prints `PORT <n>` once listening; stops on SIGTERM."""
    import argparse
    import signal

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--reply", default="ok")
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--error-rate", type=float, default=0.0)
    p.add_argument("--malformed-rate", type=float, default=0.0)
    a = p.parse_args()
    srv = ScriptedTestServer(a.reply, latency_s=a.latency, error_rate=a.error_rate,
                             malformed_rate=a.malformed_rate).start()
    print(f"PORT {srv.port}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    srv.stop()


if __name__ == "__main__":
    main()
