"""Requests decoded together: the same Reasoner-like JSON requests (a caption, a question, a
schema) sent at once to the embedded model with `concurrency` 1 (one sequence per decode step)
and 4 (`BatchedLlama` decoding four sequences in one llama.cpp batch), side by side in one
process. Prints the wall time of each, the ratio, and how many replies are identical (another
batch shape changes the float noise, which can flip a near tie)."""

from __future__ import annotations

import time

from rewatch.bench import model_args
from rewatch.bench.bench_grammar import CAPTION, QUESTIONS, SCHEMA
from rewatch.models.local import BatchedLlama
from rewatch.models.packaged import model_file

MORE = ["Which object appears last?", "What colour is the circle?",
        "When does the triangle leave?", "Where does the rectangle end up?"]


def main(model: str, quick: bool) -> None:
    questions = (QUESTIONS + MORE)[: 4 if quick else 8]
    asks = [[{"role": "user", "content": f"Caption:\n{CAPTION}\n\nQuestion: {q} Think in two "
              "sentences, then choose an action. Reply in JSON."}] for q in questions]
    seconds, replies, tokens = {}, {}, {}
    for parallel in (1, 4):
        llama = BatchedLlama(model_file(model), 8192, None, parallel, 16384)
        try:
            llama.complete(asks[0][:1], SCHEMA, 0.0, 4)  # the caption's cells, for both
            t = time.perf_counter()
            futures = [llama.submit(a, SCHEMA, 0.0, 120, 0) for a in asks]
            outs = [f.result() for f in futures]
            seconds[parallel] = time.perf_counter() - t
        finally:
            llama.close()
        replies[parallel] = [o.text for o in outs]
        tokens[parallel] = sum(o.completion_tokens for o in outs)
    same = sum(a == b for a, b in zip(replies[1], replies[4], strict=True))
    print(f"embedded {model}: {len(asks)} JSON-schema requests x <= 120 tokens, sent at once")
    for p in (1, 4):
        print(f"  concurrency {p}: {seconds[p]:6.1f} s  {tokens[p]} tokens  "
              f"{tokens[p] / seconds[p]:5.1f} tokens/s")
    print(f"  ratio 1/4 = {seconds[1] / seconds[4]:.2f}   identical replies {same}/{len(asks)}")


if __name__ == "__main__":
    args = model_args(__doc__)
    main(args.model, args.quick)
