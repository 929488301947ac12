"""The real embedded model (SmolLM2-135M in llama.cpp): it generates tokens, fits schemas,
does not block the event loop, refuses images and overlong prompts clearly."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from pydantic import BaseModel, Field

from rewatch.models.base import ContextLengthError, ModelError, json_schema_of
from rewatch.models.local import EmbeddedChatModel
from rewatch.models.openai_compat import OpenAIChatModel


class Count(BaseModel):
    colour: str
    count: int = Field(ge=0, le=100)


ASK = [{"role": "user", "content": "Three red balls roll past. Give the colour and the count."}]


async def test_real_model_answers_a_schema_constrained_request(embedded_llm):
    reply = await embedded_llm.chat(ASK, schema=Count, max_tokens=48)
    assert isinstance(reply.parsed, Count)
    assert reply.usage.completion_tokens > 3  # tokens were generated, not only loaded
    assert reply.text.strip().startswith("{")


async def test_generation_does_not_block_the_event_loop(embedded_llm):
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    t = asyncio.create_task(ticker())
    start = time.perf_counter()
    await embedded_llm.chat([{"role": "user", "content": "Count from one to fifty in words."}],
                            max_tokens=64)
    elapsed = time.perf_counter() - start
    t.cancel()
    # a blocked loop would tick at most once; the machine is shared, so ask for a few only
    assert elapsed > 0.1 and ticks >= 5


async def test_images_are_refused_with_a_clear_message(embedded_llm):
    msgs = [{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
    ]}]
    with pytest.raises(ModelError, match="text model"):
        await embedded_llm.chat(msgs)


async def test_prompt_longer_than_the_context_is_a_clear_error():
    small = EmbeddedChatModel(n_ctx=256)
    long = [{"role": "user", "content": "the red ball rolls. " * 400}]
    with pytest.raises(ContextLengthError, match="context window"):
        await small.chat(long, max_tokens=8)


@pytest.mark.slow
async def test_rewatch_serve_exposes_the_embedded_model_over_http(embedded_server_url):
    m = OpenAIChatModel("smollm2-135m", embedded_server_url, max_retries=1)
    reply = await m.chat(ASK, schema=Count, max_tokens=48)
    assert isinstance(reply.parsed, Count)
    # llama-cpp-python's server refuses json_schema; "auto" settles on its grammar mode
    assert m.mode == "json_object"
    assert reply.usage.completion_tokens > 3
    await m.aclose()


def test_the_model_is_closed_before_interpreter_shutdown(tmp_path):
    # llama_cpp's Llama.__del__ during interpreter shutdown prints "TypeError: 'NoneType' object
    # is not callable"; rewatch closes loaded models at exit, before shutdown begins
    script = tmp_path / "use_model.py"
    script.write_text(
        "import asyncio, sys\n"
        "from rewatch.models import local\n"
        "m = local.EmbeddedChatModel('smollm2-135m', n_ctx=256)\n"
        "asyncio.run(m.chat([{'role': 'user', 'content': 'Say hi'}], max_tokens=2))\n"
        "llama = next(iter(local._LOADED.values()))\n"
        "close = llama.close\n"
        "def closing():\n"
        "    print('closed, finalizing=%s' % sys.is_finalizing(), file=sys.stderr)\n"
        "    close()\n"
        "llama.close = closing\n"
        "del llama\n")
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "closed, finalizing=False" in out.stderr
    assert "Exception ignored" not in out.stderr and "TypeError" not in out.stderr


async def test_a_prompt_starts_from_the_cached_cells_sharing_its_prefix():
    """A, then an unrelated B, then A extended (the Reasoner's next step after an Observer
    call): B takes another sequence, so A's cells survive and A' evaluates only what it adds."""
    model = EmbeddedChatModel("smollm2-135m", parallel=1)
    story = "A red ball rolls left. A blue cube stays still. " * 12
    a = [{"role": "user", "content": f"{story}\nWhat rolls?"}]
    b = [{"role": "user", "content": "Name three colours."}]
    first = await model.chat(a, max_tokens=8)
    await model.chat(b, max_tokens=8)
    before = model.stats["prompt_evaluated"]
    again = [*a, {"role": "assistant", "content": first.text},
             {"role": "user", "content": "And what stays still?"}]
    reply = await model.chat(again, max_tokens=8)
    fresh = model.stats["prompt_evaluated"] - before
    assert reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 150
    assert 0 < fresh < 40, (fresh, reply.usage.prompt_tokens)


SHAPES = [("Three", "red", "tree"), ("Two", "blue", "house"), ("Five", "green", "dog"),
          ("Seven", "yellow", "car"), ("One", "white", "boat")]
ASKS = [[{"role": "user", "content": f"{n} {c} balls roll past a {o}. Give the colour and "
          "the count."}] for n, c, o in SHAPES]


def _first_logits(llama, asks):  # type: ignore[no-untyped-def]
    futures = [llama.submit(a, None, 0.0, 24, 0, keep_logits=True) for a in asks]
    return [f.result() for f in futures]


@pytest.mark.parametrize("n_cells", [4096, 256])
def test_requests_decoded_together_see_only_their_own_cells(n_cells):
    """Five requests at once over one context (four in a batch, the fifth joining when one
    finishes; with 256 cells idle prefixes are dropped and the newest request waits for room)
    see what each sees alone. The logits after each prompt differ from those of the request run
    by itself only by the noise of another evaluation order (measured on prompts like these:
    mean 0.06-0.24, max 0.4-0.9), far less than another prompt moves them (mean 0.41-0.87,
    max 2.7-4.9; checked here too): a cell of another sequence, or a wrong position, fails."""
    story = "A red ball rolls left and a blue cube stays still beside it. " * 4
    # each prompt its own from the first words: four need more than 256 cells
    asks = [[{"role": "user", "content": f"Scene {i}. {story}\n{a[0]['content']}"}]
            for i, a in enumerate(ASKS)]
    alone = EmbeddedChatModel("smollm2-135m", n_ctx=256, parallel=1).llama
    one = [_first_logits(alone, [a])[0].first_logits for a in asks]
    together = EmbeddedChatModel("smollm2-135m", n_ctx=256, parallel=4, n_cells=n_cells).llama
    many = _first_logits(together, asks)
    assert len(many) == len(asks) and all(m.completion_tokens > 0 for m in many)

    def same(a: np.ndarray, b: np.ndarray) -> bool:
        return float(np.abs(a - b).mean()) < 0.3 and float(np.abs(a - b).max()) < 1.5

    assert not any(same(one[i], one[i - 1]) for i in range(len(one)))  # the test can tell
    assert all(same(a, m.first_logits) for a, m in zip(one, many, strict=True))
    stats = together.stats
    assert stats["requests"] == len(asks)
    if n_cells == 256:
        assert stats["preempted"] + stats["evicted"] > 0, stats
    else:
        assert stats["decode_calls"] < 0.6 * alone.stats["decode_calls"], stats


async def test_sampled_replies_follow_their_seed():
    """At a temperature above 0 the reply is drawn (llama.cpp's chain, seeded): the same seed
    on the same prompt, each evaluated afresh (two contexts), gives the same reply; other
    seeds give others, and every reply fits the schema."""
    ask = [{"role": "user", "content": "Name an animal and a colour, and give a count."}]
    a, b = EmbeddedChatModel("smollm2-135m", n_ctx=320), EmbeddedChatModel("smollm2-135m",
                                                                           n_ctx=352)
    first = await a.chat(ask, schema=Count, temperature=1.0, seed=1, max_tokens=48)
    again = await b.chat(ask, schema=Count, temperature=1.0, seed=1, max_tokens=48)
    others = [await a.chat(ask, schema=Count, temperature=1.0, seed=s, max_tokens=48)
              for s in (2, 3, 4)]
    assert all(isinstance(r.parsed, Count) for r in [first, again, *others])
    assert first.text == again.text
    assert len({r.text for r in [first, *others]}) > 1  # drawn, not greedy


class Pick(BaseModel):
    animal: str = Field(pattern="^(aardvark|zebu|quokka)$")  # words the model would not pick
    colour: str
    count: int = Field(ge=0, le=100)


@pytest.mark.parametrize("schema", [Count, Pick])
async def test_the_fast_grammar_sampler_picks_what_llama_cpps_chain_picks(schema):
    """Greedy under a grammar: checking the argmax token alone first (`GreedyGrammarSampler`)
    must give the reply llama.cpp's chain (the grammar over the whole vocabulary) gives, also
    when the grammar refuses the model's first choice (Pick's enum-like pattern)."""
    model = EmbeddedChatModel("smollm2-135m")
    llama = model.llama
    asks = [ASK, [{"role": "user", "content": "Two blue cubes and a bird. Colour and count?"}]]
    replies: dict[bool, list[str]] = {}
    try:
        for fast in (False, True):
            llama.fast_grammar = fast
            passes = llama.stats["grammar_full_passes"]
            replies[fast] = [llama.complete(a, json_schema_of(schema), 0.0, 48).text
                             for a in asks]
            if fast and schema is Pick:  # the refused argmax took the full pass
                assert llama.stats["grammar_full_passes"] > passes
    finally:
        llama.fast_grammar = True
    assert all(replies[True]) and replies[True] == replies[False]
    assert all(schema.model_validate_json(r) for r in replies[True])


def test_a_failed_decode_fails_its_requests_and_the_engine_goes_on():
    """llama_decode failing (a real error, not a full cache) fails the requests in that step
    with a clear error; the next request is served."""
    llama = EmbeddedChatModel("smollm2-135m", n_ctx=288).llama
    real, calls = llama._decode, [0]

    def failing_once(items):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("llama_decode returned -3")
        return real(items)

    llama._decode = failing_once  # type: ignore[method-assign]
    with pytest.raises(ModelError, match="decode failed"):
        llama.complete(ASK, None, 0.0, 8)
    assert llama.complete(ASK, None, 0.0, 8).completion_tokens > 0
