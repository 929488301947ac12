"""Any OpenAI-compatible server (vLLM, SGLang, llama.cpp server, a hosted API) as a ChatModel."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from contextvars import ContextVar
from typing import Any

import openai
from openai.types.chat import ChatCompletion
from pydantic import BaseModel

from rewatch.models.base import (
    BaseChatModel,
    ContextLengthError,
    Message,
    ModelError,
    Reply,
    Usage,
)
from rewatch.models.cache import ResponseCache
from rewatch.models.http import HTTPStatusError, JSONClient, TransportError

log = logging.getLogger(__name__)

RETRYABLE = (
    openai.APITimeoutError,
    openai.APIConnectionError,
    openai.RateLimitError,
    openai.InternalServerError,
)


# "auto": json_schema (vLLM, SGLang, OpenAI) -> json_object + schema (llama-cpp-python server)
# -> parse, validate and re-ask (any server).
FALLBACK = {"json_schema": "json_object", "json_object": "parse"}


# The transport retries left to the chat() call in progress: one budget per call, shared by its
# schema re-asks, so the two layers add up (1 + schema_retries + max_retries requests at most)
# instead of multiplying.
_RETRY_BUDGET: ContextVar[list[int] | None] = ContextVar("transport_retry_budget", default=None)


def backoff_s(retry: int, base: float = 0.25, cap: float = 20.0) -> float:
    """Full-jitter exponential backoff before transport retry number `retry` (1, 2, ...)."""
    return random.uniform(0, min(cap, base * 2 ** retry))


def _proxied(url: str) -> bool:
    """Whether the environment sends plain-http requests to this URL's host through a proxy
    (the SDK honours that; the lean client does not speak to proxies)."""
    import urllib.request
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    if host in ("127.0.0.1", "localhost", "::1"):
        return False  # loopback is never proxied
    return "http" in urllib.request.getproxies() and not urllib.request.proxy_bypass(host)


def _retryable(e: BaseException) -> bool:
    # A server that rejects response_format answers 400, 422 or even 500 (llama.cpp server):
    # that is not transient, so it goes to the fallback below instead of the retry loop.
    if _mentions_response_format(e):
        return False
    if isinstance(e, HTTPStatusError):
        return e.status_code in (408, 429) or e.status_code >= 500
    return isinstance(e, (*RETRYABLE, TransportError))


def _is_context_error(e: openai.APIStatusError | HTTPStatusError) -> bool:
    msg = str(e).lower()
    return "context" in msg and ("length" in msg or "window" in msg or "exceed" in msg)


def _mentions_response_format(e: BaseException) -> bool:
    msg = str(e).lower()
    return any(w in msg for w in ("response_format", "json_schema", "guided", "grammar"))


class OpenAIChatModel(BaseChatModel):
    """Bounded concurrency; transport retries (timeouts, connection errors, 429, 5xx) with
    jittered exponential backoff, at most `max_retries` per chat() call; structured output by
    `response_format` JSON schema, or by parse-validate-reask.

    `transport`: "auto" sends plain-http requests with the lean `JSONClient` (unless an
    http proxy applies to the host) and https ones with the openai SDK (TLS, proxies); "sdk"
    always uses the SDK.

    `replicas`: more base URLs serving the same model (one vLLM server per GPU node). Each
    endpoint takes `concurrency` requests at once; a request goes to the endpoint with the
    fewest in flight, and a retry after a transport failure to another one. The replies are
    the same model's, so the cache identity is `base_url`'s alone."""

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        retry_backoff_s: float = 0.25,
        structured: str = "auto",
        transport: str = "auto",
        replicas: list[str] | tuple[str, ...] = (),
        cache: ResponseCache | None = None,
        **kw: Any,
    ):
        super().__init__(f"openai:{model}", cache=cache, **kw)
        self.model = model
        self.base_url = base_url
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s  # base of the jittered exponential backoff
        self.structured = structured
        # the structured-output mode in use; "auto" starts with json_schema and falls back
        self.mode = "json_schema" if structured == "auto" else structured
        # The key is read here and handed to the client; it is never logged or stored.
        api_key = os.environ.get(api_key_env) or "EMPTY"
        if transport not in ("auto", "sdk"):
            raise ValueError(f"transport must be auto or sdk, not {transport!r}")
        self.endpoints = [_Endpoint(i, url, api_key, timeout_s, transport)
                          for i, url in enumerate(dict.fromkeys([base_url, *replicas]))]

    async def cache_identity(self) -> str:
        """The server and the model it serves: the same name on another server is another
        model."""
        return f"openai:{self.base_url.rstrip('/')}#{self.model}"

    async def chat(self, messages: list[Message], *, schema: type[BaseModel] | None = None,
                   temperature: float | None = None, max_tokens: int | None = None,
                   seed: int | None = None) -> Reply:
        """As `BaseChatModel.chat`, with one transport retry budget for the whole call."""
        token = _RETRY_BUDGET.set([self.max_retries])
        try:
            return await super().chat(messages, schema=schema, temperature=temperature,
                                      max_tokens=max_tokens, seed=seed)
        finally:
            _RETRY_BUDGET.reset(token)

    async def _complete(
        self,
        messages: list[Message],
        schema_json: dict[str, Any] | None,
        temperature: float,
        max_tokens: int,
        seed: int,
    ) -> tuple[str, Usage]:
        params: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "seed": seed,
        }
        mode = self.mode if schema_json is not None else "none"
        if mode == "parse":
            params["messages"] = _with_schema_instruction(messages, schema_json or {})
        elif mode == "json_object":  # llama.cpp server's grammar extension
            params["response_format"] = {"type": "json_object", "schema": schema_json}
        elif mode == "json_schema":
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": (schema_json or {}).get("title", "reply"),
                                "schema": schema_json},
            }
        try:
            return await self._send(params)
        except (openai.APIStatusError, HTTPStatusError) as e:
            if _is_context_error(e):
                raise ContextLengthError(
                    f"{self.name}: request exceeds the model's context window; shorten the "
                    f"input (fewer frames or caption lines) or raise max_model_len: {e}"
                ) from e
            refused = _mentions_response_format(e) or e.status_code in (400, 422)
            if self.structured == "auto" and mode in FALLBACK and refused:
                self.stats["structured_fallbacks"] += 1
                self.mode = FALLBACK[mode]
                log.warning("%s: server refused response_format %s; falling back to %s",
                            self.name, mode, self.mode)
                return await self._complete(messages, schema_json, temperature, max_tokens, seed)
            raise ModelError(f"{self.name}: server rejected the request: {e}") from e

    async def _send(self, params: dict[str, Any]) -> tuple[str, Usage]:
        budget = _RETRY_BUDGET.get() or [self.max_retries]
        attempts = 0
        while True:
            attempts += 1
            self.stats["requests"] += 1
            # the least busy endpoint that is not resting after a failure; of equal ones,
            # each attempt starts at the next
            now = time.monotonic()
            ep = min(self.endpoints, key=lambda x: (x.rest_until > now, x.inflight,
                                                    (x.index - attempts) % len(self.endpoints)))
            ep.inflight += 1
            try:
                async with ep.semaphore(self.concurrency):
                    out = await self._post(ep, params)
                ep.failures = 0
                return out
            except Exception as e:
                if _retryable(e):  # rests 1, 2, 4 ... up to 30 s; a success ends it
                    ep.failures += 1
                    ep.rest_until = time.monotonic() + min(30.0, 2.0 ** (ep.failures - 1))
                if isinstance(e, openai.AuthenticationError) or (
                        isinstance(e, HTTPStatusError) and e.status_code == 401):
                    self.stats["errors"] += 1
                    raise ModelError(f"{self.name}: the server refused the API key: "
                                     f"{str(e)[:300]}") from e
                if not _retryable(e):
                    raise
                if budget[0] <= 0:
                    self.stats["errors"] += 1
                    raise ModelError(
                        f"{self.name}: no good reply from {ep.url} after {attempts} "
                        f"attempts ({type(e).__name__}: {e}); is the server running and "
                        "reachable?") from e
                budget[0] -= 1
                self.stats["transport_retries"] += 1
                await asyncio.sleep(backoff_s(attempts, self.retry_backoff_s))
            finally:
                ep.inflight -= 1

    async def _post(self, ep: _Endpoint, params: dict[str, Any]) -> tuple[str, Usage]:
        """One request to one endpoint: the reply's text and token usage."""
        if ep.http is not None:
            data = await ep.http.post_json("/chat/completions", params)
            choices = data.get("choices") if isinstance(data, dict) else None
            if not choices:
                raise ModelError(f"{self.name}: reply without choices: {str(data)[:200]}")
            text = (choices[0].get("message") or {}).get("content") or ""
            u = data.get("usage") or {}
            return text, Usage(u.get("prompt_tokens") or 0, u.get("completion_tokens") or 0)
        assert ep.client is not None
        # the client's generic post: same errors and transport, without the SDK's per-call
        # TypedDict transform (~0.7 ms a request)
        resp = await ep.client.post("/chat/completions", body=params, cast_to=ChatCompletion)
        if not resp.choices:
            raise ModelError(f"{self.name}: reply without choices")
        usage = Usage()
        if resp.usage is not None:
            usage = Usage(resp.usage.prompt_tokens or 0, resp.usage.completion_tokens or 0)
        return resp.choices[0].message.content or "", usage

    async def aclose(self) -> None:
        for ep in self.endpoints:
            if ep.http is not None:
                await ep.http.aclose()
            if ep.client is not None:
                await ep.client.close()


class _Endpoint:
    """One server of a model: its transport, its own bound on requests in flight."""

    def __init__(self, index: int, url: str, api_key: str, timeout_s: float, transport: str):
        self.index, self.url = index, url
        self.inflight = 0
        self.failures = 0  # transport failures in a row
        self.rest_until = 0.0  # monotonic time before which others are preferred
        self.http: JSONClient | None = None
        self.client: openai.AsyncOpenAI | None = None
        if transport == "auto" and url.startswith("http://") and not _proxied(url):
            self.http = JSONClient(url, headers={"Authorization": f"Bearer {api_key}"},
                                   timeout_s=timeout_s)
        else:
            self.client = openai.AsyncOpenAI(
                base_url=url, api_key=api_key, timeout=timeout_s,
                max_retries=0,  # _send owns transport retries, so they are counted and bounded
            )
        self._sem: asyncio.Semaphore | None = None
        self._sem_loop: asyncio.AbstractEventLoop | None = None

    def semaphore(self, concurrency: int) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()  # a semaphore belongs to one event loop
        if self._sem is None or self._sem_loop is not loop:
            self._sem, self._sem_loop = asyncio.Semaphore(concurrency), loop
        return self._sem


def _with_schema_instruction(messages: list[Message], schema_json: dict[str, Any]) -> list[Message]:
    note = ("\n\nReply with only a JSON object that fits this JSON schema, no other text:\n"
            + json.dumps(schema_json))
    out = [dict(m) for m in messages]
    last = out[-1]
    if isinstance(last.get("content"), str):
        last["content"] = last["content"] + note
    else:
        last["content"] = [*last.get("content", []), {"type": "text", "text": note}]
    return out
