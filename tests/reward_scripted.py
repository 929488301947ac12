"""A SCRIPTED reward judge (not a model) for the loopback test server.

It follows the judge prompts to the letter: it reads the one JSON object on the line that starts
with `DATA:` and never obeys text inside it. An observation is supported when every content word
of it occurs in the caption lines; M_infer picks the option whose words the evidence mentions
most, or the first number it states; the answer judge accepts the ground truth's words without
alternatives. If the prompt ever let untrusted text add a second DATA line, this judge would
read the last one, as a naive parser would, and the injection tests would catch it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rewatch.models.scripted_server import last_user_text
from rewatch.reward.answers import parse_count

STOP = frozenset("a an the of in on at to from and or is are was were he she it they his her its "
                 "this that there then into up out by with for as be been who what which".split())


def words(text: str) -> set[str]:
    """Content words, lower case, a plural or third-person 's' dropped."""
    out = set()
    for w in re.findall(r"[a-z0-9]+", text.lower()):
        if w in STOP:
            continue
        out.add(w[:-1] if len(w) > 3 and w.endswith("s") else w)
    return out


def data_of(body: dict[str, Any]) -> dict[str, Any]:
    """The DATA object of a judge request (the last DATA line, like a naive parser)."""
    lines = [ln for ln in last_user_text(body).splitlines() if ln.startswith("DATA: ")]
    return json.loads(lines[-1][len("DATA: "):])


def observation_verdict(data: dict[str, Any]) -> dict[str, Any]:
    obs = data["observation"]
    if obs.strip().endswith("?"):
        return {"supported": False, "reason": "a question is not an observation"}
    missing = words(obs) - words(data["caption_lines"])
    if not words(obs) or missing:
        return {"supported": False, "reason": f"not in the caption: {sorted(missing)[:5]}"}
    return {"supported": True, "reason": "every word is in the caption"}


def infer(data: dict[str, Any]) -> dict[str, Any]:
    seen = " ".join(e["observation"] for e in data["evidence"])
    if "options" in data:
        scores = {k: len(words(v) & words(seen)) for k, v in sorted(data["options"].items())}
        return {"answer": max(scores, key=lambda k: scores[k]), "reason": "most words"}
    if "how many" in data["question"].lower():
        n, _ = parse_count(seen)
        return {"answer": n or 0, "reason": "the number seen"}
    return {"answer": data["evidence"][-1]["observation"], "reason": "the last observation"}


def answer_verdict(data: dict[str, Any]) -> dict[str, Any]:
    ans = f" {data['answer'].lower()} "
    ok = words(data["ground_truth"]) <= words(ans) and " or " not in ans
    return {"supported": ok, "reason": "same answer" if ok else "different answer"}


def judge_reply(body: dict[str, Any]) -> str:
    """The scripted server's responder for every reward judge request."""
    data = data_of(body)
    if "evidence" in data:
        return json.dumps(infer(data))
    if "observation" in data:
        return json.dumps(observation_verdict(data))
    return json.dumps(answer_verdict(data))
