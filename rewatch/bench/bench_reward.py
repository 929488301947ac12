"""O&R reward throughput: rules-only scoring per core, and full O&R against a scripted judge.

1. Parsing + r_acc + r_fmt on 10,000 responses, one core (goal: over 20,000 responses/s).
2. Full O&R on 1,000 responses against the scripted judge server at 200 ms latency with 32
   judge calls in flight: elapsed time vs the ideal bound (calls × latency / 32), goal >= 90%,
   and the judge calls the r_acc = 0 short-circuit saved.
3. GRPO groups: 125 prompts × n = 8 rollouts whose steps repeat within a group, scored as one
   batch: judge calls needed vs HTTP requests sent (identical requests in flight are sent once,
   identical completions scored once).
Run: rewatch bench reward [--quick]. The machine is shared: numbers are measured side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from typing import Any

from rewatch.models.openai_compat import OpenAIChatModel
from rewatch.reward.judges import RewardJudge, Verdict
from rewatch.reward.orr import score_many, score_rules

OPTIONS = {"A": "a blue plate", "B": "a red cup", "C": "a green bottle", "D": "a knife"}
CAPTION = "\n".join(f"[00:{i:02d}-00:{i + 1:02d}] event {i} with a red cup" for i in range(50))
# one reply that fits both schemas: the verdict {supported, reason} and M_infer's {answer, reason}
REPLY = json.dumps({"supported": True, "answer": "B", "reason": "scripted"})


def responses(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """A mix like a GRPO batch: right and wrong letters, 0-4 steps, some hacks."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        steps = "\n".join(f'I check.\n<action>segment_query("00:{rng.randrange(50):02d}")</action>'
                          f"\n<observation>Item {i}-{k}: a red cup on the table.</observation>"
                          for k in range(rng.randrange(5)))
        letter = rng.choice("BBBACD")  # half right, as in a GRPO group mid-training
        tail = rng.choice(["", "", "", " or C", "</answer><answer>A"])
        out.append({"response": f"<think>Let me re-watch.</think>{steps}\nSo the answer is "
                                f"{letter}.\n<answer>{letter}{tail}</answer>",
                    "answer": "B", "question": "What is picked up?", "caption": CAPTION,
                    "options": OPTIONS})
    return out


def bench_rules(n: int) -> None:
    items = responses(n)
    score_rules(str(items[0]["response"]), "B", OPTIONS)  # warm-up (regex compile)
    t0 = time.perf_counter()
    for it in items:
        score_rules(str(it["response"]), "B", OPTIONS)
    dt = time.perf_counter() - t0
    print(f"rules (parse + r_acc + r_fmt), {n} responses, one core: {n / dt:,.0f} responses/s "
          f"(goal > 20,000/s; {dt * 1e6 / n:.1f} us each; {load()})")


def load() -> str:
    """The 1-minute load average, quoted beside every figure (the machine is shared)."""
    return f"load average {os.getloadavg()[0]:.2f}"


async def bench_full(n: int, latency: float, concurrency: int) -> None:
    srv = subprocess.Popen([sys.executable, "-m", "rewatch.models.scripted_server",
                            "--latency", str(latency), "--reply", REPLY],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout is not None
        port = int(srv.stdout.readline().split()[1])
        model = OpenAIChatModel("scripted", f"http://127.0.0.1:{port}/v1",
                                concurrency=concurrency)
        judge = RewardJudge(model)
        # warm-up opens the connection pool, so the timed part is the steady state
        await asyncio.gather(*(model.chat([{"role": "user", "content": f"warm-up {i}"}])
                               for i in range(concurrency)))
        load0 = load()
        before = model.stats["requests"]
        t0 = time.perf_counter()
        out = await score_many(responses(n), judge=judge, concurrency=n)
        dt = time.perf_counter() - t0
        calls = model.stats["requests"] - before
        # the same number of bare chat calls, side by side: what the machine allows right now
        t1 = time.perf_counter()
        await asyncio.gather(*(model.chat([{"role": "user", "content": f"raw {i}"}],
                                          schema=Verdict) for i in range(calls)))
        raw = time.perf_counter() - t1
        groups = grpo_groups(125, 8)
        before, coalesced0 = model.stats["requests"], model.stats["coalesced"]
        t2 = time.perf_counter()
        grouped = await score_many(groups, judge=judge, concurrency=len(groups))
        dt_groups = time.perf_counter() - t2
        sent = model.stats["requests"] - before
        coalesced = model.stats["coalesced"] - coalesced0
        load1 = load()
        await model.aclose()
    finally:
        srv.terminate()
        srv.wait()
    ideal = calls * latency / concurrency
    saved = sum(b.judge_calls_saved for b in out)
    failed = sum(b.failed for b in out)
    print(f"full O&R, {n} responses, scripted judge at {latency * 1000:.0f} ms, "
          f"{concurrency} calls in flight ({load0} before, {load1} after):")
    print(f"  judge calls {calls}; elapsed {dt:.2f} s; ideal bound {ideal:.2f} s; "
          f"ratio ideal/elapsed = {ideal / dt:.3f} (goal >= 0.90); failed {failed}")
    print(f"  the same {calls} calls as bare schema chats: {raw:.2f} s (ratio ideal/elapsed "
          f"{ideal / raw:.3f}); ratio O&R/bare = {raw / dt:.3f} (the reward's own overhead; "
          "1.0 = none)")
    print(f"  r_acc = 0 short-circuit: {sum(b.judge_skipped for b in out)} of {n} samples "
          f"skipped, {saved} judge calls saved ({saved / max(1, saved + calls):.0%} of all)")
    unique = {id(b): b for b in grouped}.values()
    needed = sum(b.judge_calls for b in unique)
    print(f"GRPO groups, {len(groups)} completions (125 prompts x 8 rollouts, {len(unique)} "
          f"distinct): {needed} judge calls needed, {sent} requests sent "
          f"({coalesced} identical in-flight requests shared), "
          f"{sum(b.judge_calls_saved for b in unique)} saved by the short-circuit; "
          f"{dt_groups:.2f} s")


def grpo_groups(prompts: int, n: int, seed: int = 1) -> list[dict[str, Any]]:
    """n rollouts per prompt drawing their steps from a few per prompt, as a policy's samples of
    one question do: the same (action, observation) recurs within a group."""
    rng = random.Random(seed)
    out = []
    for p in range(prompts):
        pool = [f'<action>segment_query("00:{(p + 7 * k) % 50:02d}")</action>\n<observation>'
                f"Prompt {p}: a red cup on table {k}.</observation>" for k in range(4)]
        for _ in range(n):
            steps = "\nI check.\n".join(rng.sample(pool, rng.randint(1, 3)))
            letter = rng.choice("BBBACD")
            out.append({"response": f"<think>Re-watch.</think>{steps}\n<answer>{letter}</answer>",
                        "answer": "B", "question": "What is picked up?", "caption": CAPTION,
                        "options": OPTIONS})
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    quick = p.parse_args().quick
    bench_rules(2_000 if quick else 10_000)
    asyncio.run(bench_full(200 if quick else 1_000, 0.2, 32))
