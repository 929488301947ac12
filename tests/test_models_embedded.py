"""The real embedded model (SmolLM2-135M in llama.cpp): it generates tokens, fits schemas,
does not block the event loop, refuses images and overlong prompts clearly."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import BaseModel, Field

from rewatch.models.base import ContextLengthError, ModelError
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


@pytest.mark.parametrize("mb", [0, 64])
async def test_a_prompt_starts_from_the_saved_state_sharing_its_prefix(mb, monkeypatch):
    """A, then an unrelated B, then A extended (the Reasoner's next step after an Observer
    call): with `prefix_cache_mb` the third call evaluates only what A' adds; without it, the
    whole of A' but the chat template's default system prompt, which B shares."""
    model = EmbeddedChatModel("smollm2-135m", prefix_cache_mb=mb)
    llama = model.llama
    evaluated: list[int] = []
    real_eval = type(llama).eval

    def counting_eval(self, tokens):  # type: ignore[no-untyped-def]
        evaluated.append(len(tokens))
        return real_eval(self, tokens)

    monkeypatch.setattr(type(llama), "eval", counting_eval)
    story = "A red ball rolls left. A blue cube stays still. " * 12
    a = [{"role": "user", "content": f"{story}\nWhat rolls?"}]
    b = [{"role": "user", "content": "Name three colours."}]
    first = await model.chat(a, max_tokens=8)
    await model.chat(b, max_tokens=8)
    evaluated.clear()
    again = [*a, {"role": "assistant", "content": first.text},
             {"role": "user", "content": "And what stays still?"}]
    reply = await model.chat(again, max_tokens=8)
    prompt_tokens = reply.usage.prompt_tokens
    fresh = sum(evaluated) - reply.usage.completion_tokens  # prompt tokens evaluated
    assert reply.usage.completion_tokens > 0 and prompt_tokens > 150
    if mb:
        assert fresh < 40, (fresh, prompt_tokens)
    else:
        assert fresh > 0.8 * prompt_tokens, (fresh, prompt_tokens)


class Pick(BaseModel):
    animal: str = Field(pattern="^(aardvark|zebu|quokka)$")  # words the model would not pick
    colour: str
    count: int = Field(ge=0, le=100)


@pytest.mark.parametrize("schema", [Count, Pick])
async def test_the_fast_grammar_sampler_picks_what_llama_cpps_chain_picks(schema):
    """Greedy under a grammar: checking the argmax token alone first (`GreedyGrammarSampler`)
    must give the reply llama_cpp's chain (the grammar over the whole vocabulary) gives, also
    when the grammar refuses the model's first choice (Pick's enum-like pattern)."""
    from rewatch.models.local import GreedyGrammarSampler

    model = EmbeddedChatModel("smollm2-135m")
    llama = model.llama
    asks = [ASK, [{"role": "user", "content": "Two blue cubes and a bird. Colour and count?"}]]
    replies: dict[bool, list[str]] = {}
    try:
        for fast in (False, True):
            llama.fast_grammar = fast
            replies[fast] = [(await model.chat(a, schema=schema, max_tokens=48)).text
                             for a in asks]
            assert isinstance(llama._sampler, GreedyGrammarSampler) is fast
            if fast and schema is Pick:  # the refused argmax took the full pass
                assert llama._sampler.full_passes > 0
    finally:
        llama.fast_grammar = True
    assert all(replies[True]) and replies[True] == replies[False]
    assert all(schema.model_validate_json(r) for r in replies[True])
