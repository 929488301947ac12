"""Chat throughput against the scripted test server: concurrent vs ideal vs sequential.

Prints ratios measured side by side in one run (the machine is shared and noisy).
Target: concurrent throughput >= 90% of the ideal concurrency / latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

from rewatch.models.openai_compat import OpenAIChatModel


async def measure(base_url: str, n: int, concurrency: int, tag: str) -> float:
    model = OpenAIChatModel("scripted", base_url, concurrency=concurrency)
    msgs = [[{"role": "user", "content": f"{tag} request {i}"}] for i in range(n)]
    # warm-up opens the connection pool, so the timed part is the steady state
    await asyncio.gather(*(model.chat([{"role": "user", "content": f"{tag} warm-up {i}"}])
                           for i in range(concurrency)))
    start = time.perf_counter()
    await asyncio.gather(*(model.chat(m) for m in msgs))
    elapsed = time.perf_counter() - start
    await model.aclose()
    return n / elapsed


async def main(quick: bool) -> None:
    latency, concurrency = 0.2, 32
    n = 96 if quick else 400
    n_seq = 10 if quick else 25
    # the scripted server runs in its own process so it does not share the client's GIL
    srv = subprocess.Popen([sys.executable, "-m", "rewatch.models.scripted_server",
                            "--latency", str(latency)], stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout is not None
        port = int(srv.stdout.readline().split()[1])
        url = f"http://127.0.0.1:{port}/v1"
        conc = await measure(url, n, concurrency, "concurrent")
        seq = await measure(url, n_seq, 1, "sequential")
    finally:
        srv.terminate()
        srv.wait()
    ideal = concurrency / latency
    print(f"chat throughput, scripted server at {latency * 1000:.0f} ms latency "
          f"(load average {os.getloadavg()[0]:.2f})")
    print(f"  concurrent ({n} requests, concurrency {concurrency}): {conc:7.1f} req/s")
    print(f"  ideal concurrency/latency:                        {ideal:7.1f} req/s")
    print(f"  sequential ({n_seq} requests):                        {seq:7.1f} req/s")
    print(f"  ratio concurrent/ideal      = {conc / ideal:.3f}   (target >= 0.90)")
    print(f"  ratio concurrent/sequential = {conc / seq:.1f}x")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    asyncio.run(main(p.parse_args().quick))
