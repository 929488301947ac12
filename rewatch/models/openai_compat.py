"""Any OpenAI-compatible server (vLLM, SGLang, llama.cpp server, a hosted API) as a ChatModel."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

import openai
from openai.types.chat import ChatCompletion
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from rewatch.models.base import BaseChatModel, ContextLengthError, Message, ModelError, Usage
from rewatch.models.cache import ResponseCache

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


def _retryable(e: BaseException) -> bool:
    # A server that rejects response_format answers 400, 422 or even 500 (llama.cpp server):
    # that is not transient, so it goes to the fallback below instead of the retry loop.
    return isinstance(e, RETRYABLE) and not _mentions_response_format(e)


def _is_context_error(e: openai.APIStatusError) -> bool:
    msg = str(e).lower()
    return "context" in msg and ("length" in msg or "window" in msg or "exceed" in msg)


def _mentions_response_format(e: BaseException) -> bool:
    msg = str(e).lower()
    return any(w in msg for w in ("response_format", "json_schema", "guided", "grammar"))


class OpenAIChatModel(BaseChatModel):
    """Bounded concurrency, retries with jittered exponential backoff on timeouts, 429 and 5xx,
    structured output by `response_format` JSON schema, or by parse-validate-reask."""

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        structured: str = "auto",
        cache: ResponseCache | None = None,
        **kw: Any,
    ):
        super().__init__(f"openai:{model}", cache=cache, **kw)
        self.model = model
        self.base_url = base_url
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.structured = structured
        # the structured-output mode in use; "auto" starts with json_schema and falls back
        self.mode = "json_schema" if structured == "auto" else structured
        # The key is read here and handed to the client; it is never logged or stored.
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=os.environ.get(api_key_env) or "EMPTY",
            timeout=timeout_s,
            max_retries=0,  # tenacity below owns retries, so they are counted
        )
        self._sem: asyncio.Semaphore | None = None

    def _semaphore(self) -> asyncio.Semaphore:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.concurrency)
        return self._sem

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
        except openai.APIStatusError as e:
            if _is_context_error(e):
                raise ContextLengthError(
                    f"{self.name}: request exceeds the model's context window; shorten the "
                    f"input (fewer frames or caption lines) or raise max_model_len: {e}"
                ) from e
            refused = _mentions_response_format(e) or e.status_code in (400, 422)
            if self.structured == "auto" and mode in FALLBACK and refused:
                self.mode = FALLBACK[mode]
                log.warning("%s: server refused response_format %s; falling back to %s",
                            self.name, mode, self.mode)
                return await self._complete(messages, schema_json, temperature, max_tokens, seed)
            raise ModelError(f"{self.name}: server rejected the request: {e}") from e

    async def _send(self, params: dict[str, Any]) -> tuple[str, Usage]:
        async with self._semaphore():
            try:
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(self.max_retries + 1),
                    wait=wait_random_exponential(multiplier=0.25, max=20),
                    retry=retry_if_exception(_retryable),
                    reraise=False,
                ):
                    with attempt:
                        if attempt.retry_state.attempt_number > 1:
                            self.stats["transport_retries"] += 1
                        # the client's generic post: same errors and transport, without the
                        # SDK's per-call TypedDict transform (~0.7 ms a request)
                        resp = await self._client.post("/chat/completions", body=params,
                                                       cast_to=ChatCompletion)
            except RetryError as e:
                self.stats["errors"] += 1
                cause = e.last_attempt.exception()
                raise ModelError(
                    f"{self.name}: no good reply from {self.base_url} after "
                    f"{self.max_retries + 1} attempts ({type(cause).__name__}: {cause}); "
                    "is the server running and reachable?"
                ) from cause
            except openai.AuthenticationError as e:
                raise ModelError(f"{self.name}: the server refused the API key: {e}") from e
        if not resp.choices:
            raise ModelError(f"{self.name}: reply without choices")
        text = resp.choices[0].message.content or ""
        usage = Usage()
        if resp.usage is not None:
            usage = Usage(resp.usage.prompt_tokens or 0, resp.usage.completion_tokens or 0)
        return text, usage

    async def aclose(self) -> None:
        await self._client.close()


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
