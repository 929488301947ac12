"""Statistics of Stage 3 for the audit: kept/total, actions per chain, tokens, tool errors."""

from __future__ import annotations

import atexit
import re
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

from rewatch.store import JsonlFile


@cache
def _tokenizer() -> Any:
    """SmolLM2's tokenizer (vocabulary only, ~0.5 s to load), or None when unavailable."""
    try:
        from llama_cpp import Llama

        from rewatch.models.local import smollm2_path

        tok = Llama(model_path=str(smollm2_path()), vocab_only=True, verbose=False)
        # freed before interpreter teardown, when llama.cpp's bindings are already gone
        atexit.register(tok.close)
        return tok
    except Exception:  # no llama.cpp or no model file: fall back to a word-piece count
        return None


def count_tokens(text: str) -> tuple[int, str]:
    """(tokens in `text`, which tokenizer counted them)."""
    tok = _tokenizer()
    if tok is not None:
        return len(tok.tokenize(text.encode("utf-8"), add_bos=False)), "smollm2"
    return len(re.findall(r"\w+|[^\w\s]", text)), "regex"


def cot_stats(run_dir: str | Path) -> dict[str, Any]:
    """Stage 3 figures of a run directory (the paper: 135k of 170k kept, 3.31 actions per
    chain, 398.75 tokens per response)."""
    root = Path(run_dir)
    kept = list(JsonlFile(root / "cot.jsonl").read())
    rejected = [r for r in JsonlFile(root / "rejected.jsonl").read() if r.get("stage") == "cot"]
    trajectories = [r["trajectory"] for r in kept] + [r.get("trajectory") or [] for r in rejected]
    calls = [s for t in trajectories for s in t if s.get("action")]
    errors = sum(1 for s in calls if s.get("tool_error"))
    tokens = [count_tokens(r["cot"]) for r in kept]
    total = len(kept) + len(rejected)
    return {
        "kept": len(kept),
        "total": total,
        "kept_ratio": round(len(kept) / total, 4) if total else 0.0,
        "avg_actions_kept": round(sum(r["n_actions"] for r in kept) / len(kept), 3)
        if kept else 0.0,
        "avg_actions_all": round(len(calls) / total, 3) if total else 0.0,
        "avg_tokens_kept": round(sum(n for n, _ in tokens) / len(tokens), 2) if tokens else 0.0,
        "tokenizer": tokens[0][1] if tokens else None,
        "tool_calls": len(calls),
        "tool_errors": errors,
        "tool_error_rate": round(errors / len(calls), 4) if calls else 0.0,
        "reasons": dict(Counter(r.get("reason", "?") for r in rejected).most_common()),
    }
