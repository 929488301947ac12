"""Constrained greedy decoding: `GreedyGrammarSampler` (the most likely token checked alone
against the grammar) vs llama_cpp's own chain (the grammar over the whole vocabulary, then
greedy), interleaved on the same JSON-schema prompts and the same loaded model. Prints tokens/s
of each, the ratio, and whether every reply is identical (it must be: both pick the same
token)."""

from __future__ import annotations

from rewatch.bench import model_args
from rewatch.models.local import BatchedLlama
from rewatch.models.packaged import model_file

CAPTION = "\n".join(
    f"[00:{i:02d}-00:{i + 1:02d}] A {c} {s} moves {d}, on the {p}."
    for i, (c, s, d, p) in enumerate([("red", "circle", "right", "left"),
                                      ("blue", "square", "down", "top"),
                                      ("green", "triangle", "left", "right"),
                                      ("yellow", "rectangle", "up", "bottom")] * 2))
SCHEMA = {"type": "object", "required": ["thought", "action", "argument"], "properties": {
    "thought": {"type": "string"},
    "action": {"type": "string", "enum": ["segment_retrieval", "segment_query", "final_answer"]},
    "argument": {"type": "string"}}}
QUESTIONS = ["Which colour is the object that moves right?", "When does the square move down?",
             "Where is the green triangle?", "How many objects move up?"]


def main(model: str, quick: bool) -> None:
    llama = BatchedLlama(model_file(model), 4096, None, 1, 8192)
    max_tokens = 60 if quick else 120
    tokens = {True: 0, False: 0}
    seconds = {True: 0.0, False: 0.0}
    replies: dict[bool, list[str]] = {True: [], False: []}
    for q in QUESTIONS[: 2 if quick else 4]:
        msgs = [{"role": "user", "content": f"Caption:\n{CAPTION}\n\nQuestion: {q} Think in "
                 "two sentences, then choose an action. Reply in JSON."}]
        for fast in (False, True):
            llama.fast_grammar = fast
            out = llama.complete(msgs, SCHEMA, 0.0, max_tokens)
            seconds[fast] += out.decode_s  # after the prefill: the sampled tokens only
            tokens[fast] += out.completion_tokens - 1
            replies[fast].append(out.text)
    llama.close()
    chain, fast_rate = (tokens[k] / seconds[k] for k in (False, True))
    n = len(replies[True])
    same = sum(a == b for a, b in zip(replies[False], replies[True], strict=True))
    print(f"embedded {model}, {n} JSON-schema prompts x <= {max_tokens} tokens "
          "(decode speed: the tokens after the first, over their time)")
    print(f"  llama_cpp chain (grammar over the vocabulary): {chain:6.2f} tokens/s")
    print(f"  GreedyGrammarSampler (argmax checked first):  {fast_rate:6.2f} tokens/s")
    print(f"  ratio fast/chain = {fast_rate / chain:.2f}   identical replies {same}/{n}")


if __name__ == "__main__":
    args = model_args(__doc__)
    main(args.model, args.quick)
