"""Stage 2 with the real embedded model (SmolLM2-135M in llama.cpp) on a caption written from a
synthetic video's known events: the mechanics hold whatever the small model writes, and the
acceptance rate is printed, not asserted."""

from __future__ import annotations

import asyncio

import pytest
from qa_scripted import make_run, rows, shapes_caption

from rewatch.config import Config
from rewatch.models import Models
from rewatch.models.cache import ResponseCache
from rewatch.schema import MCQRecord, QARecord
from rewatch.synth.audit import audit
from rewatch.synth.mcq import validate_mcq
from rewatch.synth.qa import generate_qa


def _stage(run, cfg) -> tuple[dict, dict]:
    models = Models(cfg, ResponseCache(run.cache_path))

    async def go() -> dict:
        try:
            return await generate_qa(run, cfg, models)
        finally:
            await models.aclose()

    counts = asyncio.run(go())
    return counts, dict(models.stats().get("llm", {}))


@pytest.mark.slow
def test_embedded_stage2_end_to_end(tmp_path):
    cfg = Config()
    cfg.synth.qa.questions_per_video = 2
    cfg.synth.qa.probe_prompts = 2
    run = make_run(tmp_path / "run", [shapes_caption("shapes")])
    counts, stats = _stage(run, cfg)
    assert stats["calls"] > 0 and counts["errors"] == 0
    accepted = [QARecord.model_validate(r) for r in rows(run, "qa.jsonl")]
    rejected = [r for r in rows(run, "rejected.jsonl") if r["stage"] == "qa"]
    # every candidate is decided, and every rejection says which filter and why
    assert len(accepted) + len(rejected) == counts["candidates"] == 2
    assert all(r["filter"] in ("generation", "F1", "F2", "F3") and r["reason"]
               for r in rejected)
    for r in accepted:
        assert {"F1", "F2", "F3"} <= set(r.filters) and r.evidence
        assert "one model" in r.filters["panel"]["note"]  # type: ignore[index]
    for m in (MCQRecord.model_validate(x) for x in rows(run, "mcq.jsonl")):
        assert validate_mcq(m.options, m.answer, cfg.synth.qa.num_options) is None
        assert m.options[m.answer] == next(a.answer for a in accepted if a.id == m.qa_id)
    report = audit(run.root, embedder=None)
    assert report["accepted"] == len(accepted)
    print(f"\nembedded Stage 2: {len(accepted)}/{counts['candidates']} accepted; "
          f"rejected {counts['rejected']}; {counts['mcq']} MCQ items; calls {counts['calls']}")
    # a rerun asks the model nothing
    again, stats2 = _stage(run, cfg)
    assert again["videos_skipped"] == 1 and stats2.get("calls", 0) == 0
