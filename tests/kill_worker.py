"""A stage-like worker for the SIGKILL test: asks a server about N items, one record each."""

from __future__ import annotations

import asyncio
import sys

from rewatch.models.cache import ResponseCache
from rewatch.models.openai_compat import OpenAIChatModel
from rewatch.store import JsonlFile, stable_id


async def main(base_url: str, out: str, cache: str, n: int) -> None:
    records = JsonlFile(out)
    model = OpenAIChatModel("scripted", base_url, cache=ResponseCache(cache))
    for i in range(n):
        item_id = stable_id("item", i)
        if item_id in records:
            continue
        reply = await model.chat([{"role": "user", "content": f"describe item {i}"}])
        records.append({"id": item_id, "i": i, "text": reply.text * 50})


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
