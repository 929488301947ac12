"""Decode steps with several sequences in one llama.cpp batch: tokens/s for 1, 2, 3 and 4
sequences, each at the same position after its own prompt, on the embedded model. No sampling:
this bounds what concurrent requests over one multi-sequence context could gain (the in-process
backend decodes one sequence at a time)."""

from __future__ import annotations

import time

import llama_cpp
from llama_cpp._utils import suppress_stdout_stderr

from rewatch.bench import model_args
from rewatch.models.packaged import model_file

PROMPT, SEQS = 400, 4


def main(model: str, quick: bool) -> None:
    steps = 8 if quick else 20
    with suppress_stdout_stderr(disable=False):  # llama.cpp's load log, as Llama(verbose=False)
        llama_cpp.llama_backend_init()
        lm = llama_cpp.llama_model_load_from_file(str(model_file(model)).encode(),
                                                  llama_cpp.llama_model_default_params())
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_seq_max = 4096, 512, SEQS
        cp.n_threads = cp.n_threads_batch = 2
        ctx = llama_cpp.llama_init_from_model(lm, cp)
    batch = llama_cpp.llama_batch_init(512, 0, SEQS)

    def decode(items: list[tuple[int, int, int, bool]]) -> None:  # (token, pos, seq, logits)
        batch.n_tokens = len(items)
        for i, (tok, pos, seq, logits) in enumerate(items):
            batch.token[i], batch.pos[i], batch.logits[i] = tok, pos, logits
            batch.n_seq_id[i], batch.seq_id[i][0] = 1, seq
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")

    try:
        for seq in range(SEQS):  # each sequence its own prompt of PROMPT tokens
            for start in range(0, PROMPT, 200):
                decode([(100 + (start + j + 37 * seq) % 1000, start + j, seq, False)
                        for j in range(200)])
        mem = llama_cpp.llama_get_memory(ctx)
        rates = {}
        for n in range(1, SEQS + 1):
            t = time.perf_counter()
            for step in range(steps):
                decode([(200 + step, PROMPT + step, seq, True) for seq in range(n)])
            rates[n] = n * steps / (time.perf_counter() - t)
            for seq in range(SEQS):  # back to the prompts for the next n
                llama_cpp.llama_memory_seq_rm(mem, seq, PROMPT, -1)
    finally:
        with suppress_stdout_stderr(disable=False):
            llama_cpp.llama_batch_free(batch)
            llama_cpp.llama_free(ctx)
            llama_cpp.llama_model_free(lm)
    print(f"embedded {model}: {steps} decode steps after a {PROMPT}-token prompt per sequence")
    for n, r in rates.items():
        print(f"  {n} sequence(s) per batch: {r:6.1f} tokens/s   ratio to 1 = {r / rates[1]:.2f}")


if __name__ == "__main__":
    args = model_args(__doc__)
    main(args.model, args.quick)
