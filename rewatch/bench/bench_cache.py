"""Cache: the same 400 requests run twice; the rerun must make zero server calls."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from rewatch.models.cache import ResponseCache
from rewatch.models.openai_compat import OpenAIChatModel
from rewatch.models.scripted_server import ScriptedTestServer


async def main(quick: bool) -> None:
    n = 100 if quick else 400
    with tempfile.TemporaryDirectory() as d, ScriptedTestServer("ok", latency_s=0.05) as srv:
        msgs = [[{"role": "user", "content": f"request {i}"}] for i in range(n)]
        times = []
        for _ in range(2):
            model = OpenAIChatModel("scripted", srv.base_url, concurrency=32,
                                    cache=ResponseCache(Path(d) / "cache.sqlite"))
            before = len(srv.requests)
            t = time.perf_counter()
            await asyncio.gather(*(model.chat(m) for m in msgs))
            times.append((time.perf_counter() - t, len(srv.requests) - before,
                          model.stats["cache_hits"]))
            await model.aclose()
    (t1, calls1, _), (t2, calls2, hits2) = times
    print(f"response cache, {n} requests run twice")
    print(f"  first run:  {calls1} server calls, {t1:.2f} s")
    print(f"  rerun:      {calls2} server calls, {hits2} cache hits, {t2:.2f} s")
    print(f"  ratio rerun/first time = {t2 / t1:.3f}; rerun server calls = {calls2} (target 0)")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    asyncio.run(main(p.parse_args().quick))
