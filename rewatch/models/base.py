"""The ChatModel protocol and the part every backend shares: cache, schema validation, re-asks.

Retries have one owner per layer (docs/models.md): the backend retries transport failures within
a per-call budget, `BaseChatModel.chat` re-asks replies that do not fit the schema, and callers
(the reward judge, the stages) do not retry a call that raised.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ValidationError

from rewatch.models.cache import ResponseCache, request_key
from rewatch.models.http import PreEncodedList

log = logging.getLogger(__name__)

Message = dict[str, Any]
T = TypeVar("T", bound=BaseModel)


class ModelError(RuntimeError):
    """A model call failed for good (after retries); the message says what to do."""


class SchemaError(ModelError):
    """The reply did not fit the requested schema after every re-ask."""


class ContextLengthError(ModelError):
    """The request does not fit the model's context window (not retried)."""


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class Reply:
    """A model's answer: raw text, the parsed object when a schema was given, token usage."""

    text: str
    parsed: Any = None
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    cached: bool = False


@runtime_checkable
class ChatModel(Protocol):
    name: str
    stats: Counter[str]

    async def chat(
        self,
        messages: list[Message],
        *,
        schema: type[BaseModel] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
    ) -> Reply: ...


# Strings longer than this (base64 frames, long captions) are named by object identity in an
# in-flight key instead of by content.
_INFLIGHT_INLINE = 512


def _named(value: Any) -> Any:
    if isinstance(value, PreEncodedList) and value.head_intact():  # a video's frames: by identity
        return ("<head>", id(value.head), len(value.head), _named(value[len(value.head):]))
    if isinstance(value, str):
        return value if len(value) <= _INFLIGHT_INLINE else ("<str>", id(value), len(value))
    if isinstance(value, dict):
        return tuple(sorted((k, _named(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_named(v) for v in value)
    return value


def inflight_key(messages: list[Message], schema: dict[str, Any] | None, temperature: float,
                 max_tokens: int, seed: int) -> str:
    """A key for coalescing identical requests in flight, without encoding the whole request.

    Short strings count by content, long ones by identity: while the first request is in
    flight its messages are alive, so another live string with the same id is the same object
    (equal content in another object is simply not coalesced). Valid only while in flight;
    never store it (the response cache uses `request_key`)."""
    return repr((_named(messages), None if schema is None else json.dumps(schema,
                 sort_keys=True), temperature, max_tokens, seed))


@functools.lru_cache(maxsize=512)
def json_schema_of(schema: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of a reply model (computed once per class; callers must not mutate)."""
    return schema.model_json_schema()


def parse_reply(text: str, schema: type[T]) -> T:
    """Validate a reply against `schema`, tolerating a fenced ```json block around it."""
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`")
        body = body[body.find("{") :] if "{" in body else body
    start, end = body.find("{"), body.rfind("}")
    if start > 0 or (end != -1 and end < len(body) - 1):
        body = body[start : end + 1] if start != -1 and end > start else body
    return schema.model_validate_json(body)


class BaseChatModel:
    """Shared behaviour: response cache, schema validation with re-ask, counters.

    Backends implement `_complete(messages, schema_json, temperature, max_tokens, seed)`
    returning `(text, Usage)`; they constrain output to `schema_json` where they can.
    """

    def __init__(
        self,
        name: str,
        *,
        temperature: float = 0.0,
        max_tokens: int = 512,
        seed: int = 0,
        schema_retries: int = 2,
        cache: ResponseCache | None = None,
    ):
        self.name = name
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self.schema_retries = schema_retries
        self.cache = cache
        self.stats: Counter[str] = Counter()
        # identical requests in flight at once are sent once (a GRPO group repeats steps)
        self._inflight: dict[str, asyncio.Future[Reply]] = {}

    async def cache_identity(self) -> str:
        """What the response cache keys this model's replies on. `name` is only a label; a
        backend names what actually answers (the weights file, the server and its model)."""
        return self.name

    async def _complete(
        self,
        messages: list[Message],
        schema_json: dict[str, Any] | None,
        temperature: float,
        max_tokens: int,
        seed: int,
    ) -> tuple[str, Usage]:
        raise NotImplementedError

    async def chat(
        self,
        messages: list[Message],
        *,
        schema: type[BaseModel] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
    ) -> Reply:
        """Ask the model; with `schema`, return a validated object or raise SchemaError."""
        temperature = self.temperature if temperature is None else temperature
        max_tokens = self.max_tokens if max_tokens is None else max_tokens
        seed = self.seed if seed is None else seed
        schema_json = json_schema_of(schema) if schema is not None else None
        if self.cache is not None:
            key = request_key(await self.cache_identity(), messages, schema_json, temperature,
                              max_tokens, seed)
            hit = self.cache.get(key)
            if hit is not None:
                self.stats["cache_hits"] += 1
                text, cached_usage = hit
                parsed = parse_reply(text, schema) if schema is not None else None
                return Reply(text, parsed, Usage(**cached_usage), self.name, cached=True)
        else:  # no cache: a key good only for finding identical requests in flight right now
            key = inflight_key(messages, schema_json, temperature, max_tokens, seed)
        while (pending := self._inflight.get(key)) is not None:
            try:
                first = await asyncio.shield(pending)  # its error, if any, is ours too
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if not pending.cancelled() or (me is not None and me.cancelling()):
                    raise
                continue  # the caller that sent it was cancelled, not this one: look again
            self.stats["coalesced"] += 1
            return Reply(first.text, first.parsed, first.usage, self.name, cached=True)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            reply = await self._ask(messages, schema, schema_json, temperature, max_tokens, seed)
        except BaseException as e:
            if not isinstance(e, asyncio.CancelledError):
                future.set_exception(e)
                future.exception()  # retrieved here: no "never retrieved" warning if unshared
            else:
                future.cancel()
            raise
        else:
            future.set_result(reply)
        finally:
            del self._inflight[key]
        if self.cache is not None:
            self.cache.put(key, self.name, reply.text, reply.usage.__dict__)
        return reply

    async def _ask(self, messages: list[Message], schema: type[BaseModel] | None,
                   schema_json: dict[str, Any] | None, temperature: float, max_tokens: int,
                   seed: int) -> Reply:
        """One request, then a re-ask with the validation error while the reply does not fit
        (`schema_retries` times): the schema layer's only retry."""
        convo = list(messages)
        total = Usage()
        parsed: Any = None
        for attempt in range(self.schema_retries + 1):
            self.stats["calls"] += 1
            text, usage = await self._complete(convo, schema_json, temperature, max_tokens, seed)
            total.prompt_tokens += usage.prompt_tokens
            total.completion_tokens += usage.completion_tokens
            if schema is None:
                break
            try:
                parsed = parse_reply(text, schema)
                break
            except (ValidationError, ValueError) as e:
                self.stats["schema_failures"] += 1
                log.info("%s: reply does not fit %s (attempt %d): %s", self.name,
                         schema.__name__, attempt + 1, str(e)[:200])
                if attempt == self.schema_retries:
                    self.stats["errors"] += 1
                    raise SchemaError(
                        f"{self.name}: reply did not fit schema {schema.__name__} after "
                        f"{attempt + 1} attempts; last reply {text[:200]!r}; error: {str(e)[:300]}"
                    ) from e
                self.stats["schema_retries"] += 1
                convo = [
                    *messages,
                    {"role": "assistant", "content": text},
                    {
                        "role": "user",
                        "content": "That reply was not valid. Error: "
                        + str(e)[:500]
                        + "\nReply again with only a JSON object that fits this schema: "
                        + json.dumps(schema_json),
                    },
                ]
        return Reply(text, parsed, total, self.name)

    async def aclose(self) -> None:
        """Release resources (HTTP clients, model memory)."""
