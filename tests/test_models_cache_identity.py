"""The response cache keys on what answers, not on the model's name: the embedded model by its
GGUF file's sha256, a server by base URL + served model (tests/test_models_server.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from rewatch.models.cache import ResponseCache, file_digest
from rewatch.models.local import EmbeddedChatModel, smollm2_path

ASK = [{"role": "user", "content": "Name one colour."}]


def relabelled_copy(src: Path, dest: Path) -> Path:
    """Another valid GGUF: SmolLM2 with a different `general.name` (same length, so the file
    stays well formed) - what a re-export or a fine-tune under the same config name looks like
    to the cache."""
    data = bytearray(src.read_bytes())
    i = data.find(b"Smollm2 135M 8k Lc100K Mix1 Ep2", 0, 4096)
    assert i > 0, "general.name not found in the GGUF header"
    data[i + 30: i + 31] = b"9"
    dest.write_bytes(bytes(data))
    return dest


async def test_another_gguf_under_the_same_name_is_not_replayed(tmp_path: Path) -> None:
    a = shutil.copy(smollm2_path(), tmp_path / "a.gguf")
    b = relabelled_copy(smollm2_path(), tmp_path / "b.gguf")
    cache = ResponseCache(tmp_path / "cache.sqlite")
    first = EmbeddedChatModel("llm", model_path=str(a), n_ctx=512, cache=cache)
    r1 = await first.chat(ASK, max_tokens=4)
    assert not r1.cached and first.stats["calls"] == 1
    # same config name, same request, another file: a real call, not the old reply
    other = EmbeddedChatModel("llm", model_path=str(b), n_ctx=512, cache=cache)
    assert other.name == first.name
    r2 = await other.chat(ASK, max_tokens=4)
    assert not r2.cached and other.stats["calls"] == 1 and other.stats["cache_hits"] == 0
    assert len(cache) == 2
    # the same file again, in a "new process" (new model and cache objects): replayed
    again = EmbeddedChatModel("llm", model_path=str(a), n_ctx=512,
                              cache=ResponseCache(tmp_path / "cache.sqlite"))
    r3 = await again.chat(ASK, max_tokens=4)
    assert r3.cached and r3.text == r1.text and again.stats["calls"] == 0


def test_the_digest_follows_the_content(tmp_path: Path) -> None:
    f = tmp_path / "w.gguf"
    f.write_bytes(b"GGUF" + b"\0" * 1000)
    cache = ResponseCache(tmp_path / "c.sqlite")
    d1 = file_digest(f, cache)
    assert cache.known_digest(str(f.resolve()), 1004, f.stat().st_mtime_ns) == d1
    st = f.stat()
    f.write_bytes(b"GGUF" + b"\1" * 1000)  # overwritten in place: a later mtime, new digest
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert file_digest(f, cache) != d1
