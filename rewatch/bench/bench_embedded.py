"""Embedded model: tokens/s through ChatModel vs calling llama_cpp.Llama directly on the same
prompts, interleaved in one run. Target ratio >= 0.9."""

from __future__ import annotations

import argparse
import asyncio
import time

from rewatch.models.local import EmbeddedChatModel

PROMPTS = [
    "Describe a red ball rolling across a table.",
    "List three things a cyclist might do at a crossing.",
    "Explain what a scene cut is in a film.",
    "Write two sentences about a bunny in a forest.",
]


async def main(quick: bool) -> None:
    rounds = 1 if quick else 3
    max_tokens = 64
    model = EmbeddedChatModel()  # no cache: every call generates
    llama = model.llama
    direct_tok = direct_s = wrapped_tok = wrapped_s = 0.0
    for r in range(rounds):
        for i, p in enumerate(PROMPTS):
            msgs = [{"role": "user", "content": p}]
            seed = r * 100 + i
            t = time.perf_counter()
            out = llama.complete(msgs, None, 0.0, max_tokens, seed)
            direct_s += time.perf_counter() - t
            direct_tok += out.completion_tokens
            t = time.perf_counter()
            reply = await model.chat(msgs, max_tokens=max_tokens, temperature=0.0, seed=seed)
            wrapped_s += time.perf_counter() - t
            wrapped_tok += reply.usage.completion_tokens
    d, w = direct_tok / direct_s, wrapped_tok / wrapped_s
    print(f"embedded SmolLM2-135M, {rounds * len(PROMPTS)} prompts x {max_tokens} tokens")
    print(f"  BatchedLlama direct:    {d:6.1f} tokens/s")
    print(f"  through ChatModel:      {w:6.1f} tokens/s")
    print(f"  ratio ChatModel/direct = {w / d:.3f}   (target >= 0.90)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    asyncio.run(main(p.parse_args().quick))
