"""`rewatch export RUN`: multi-task SFT data (caption, direct answer, thinking) and RL data.

The paper's SFT loss is L_Cap + L_QA + L_CoT: the same video with three instructions. Formats:
- `sft.jsonl`: TRL conversational records (`messages`, the video as a `{"type": "video"}` part).
- `sft_llamafactory.json`: LLaMA-Factory sharegpt style (`<video>` token + `videos`).
- `rl.jsonl`: verl-style records (`data_source`, `prompt`, `videos`, `reward_model.ground_truth`,
  `extra_info` with the question and C_detail, which the O&R reward needs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rewatch.schema import CaptionRecord, CoTRecord, MCQRecord, mmss
from rewatch.store import JsonlFile
from rewatch.text import load_prompt


def _sft_prompt(name: str) -> str:
    return load_prompt(f"{name}.txt", "rewatch.data", strip=True)


def format_options(options: dict[str, str]) -> str:
    return "\n".join(f"({k}) {v}" for k, v in options.items())


def _user(video: str, text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "video", "video": video},
                                        {"type": "text", "text": text}]}


def sft_samples(captions: list[CaptionRecord], mcqs: list[MCQRecord],
                chains: list[CoTRecord]) -> list[dict[str, Any]]:
    """Caption, direct-answer and thinking samples (one task field each)."""
    by_video = {c.video_id: c for c in captions}
    out: list[dict[str, Any]] = []
    for c in captions:
        out.append({"id": f"cap-{c.id}", "task": "caption", "video": c.video_path, "messages": [
            _user(c.video_path, _sft_prompt("sft_caption")),
            {"role": "assistant", "content": c.detail_text()}]})
    for kind, items in (("direct", mcqs), ("think", chains)):
        for m in items:
            cap = by_video.get(m.video_id)
            if cap is None:
                continue
            text = _sft_prompt(f"sft_{kind}").format(duration=f"00:00-{mmss(cap.duration)}",
                                                 question=m.question,
                                                 options=format_options(m.options))
            answer = m.answer if kind == "direct" else m.cot  # type: ignore[union-attr]
            out.append({"id": f"{kind}-{m.id}", "task": kind, "video": cap.video_path,
                        "messages": [_user(cap.video_path, text),
                                     {"role": "assistant", "content": answer}]})
    return out


def to_llamafactory(sample: dict[str, Any]) -> dict[str, Any]:
    user, assistant = sample["messages"]
    text = next(p["text"] for p in user["content"] if p["type"] == "text")
    return {"messages": [{"role": "user", "content": "<video>" + text},
                         {"role": "assistant", "content": assistant["content"]}],
            "videos": [sample["video"]]}


def rl_records(captions: list[CaptionRecord], mcqs: list[MCQRecord]) -> list[dict[str, Any]]:
    """ReWatch-QA for GRPO: the think prompt, the ground-truth letter, and what O&R needs."""
    by_video = {c.video_id: c for c in captions}
    out = []
    for m in mcqs:
        cap = by_video.get(m.video_id)
        if cap is None:
            continue
        text = _sft_prompt("sft_think").format(duration=f"00:00-{mmss(cap.duration)}",
                                           question=m.question, options=format_options(m.options))
        out.append({"id": m.id, "data_source": "rewatch", "ability": "video_reasoning",
                    "prompt": [{"role": "user", "content": "<video>" + text}],
                    "videos": [cap.video_path],
                    "reward_model": {"style": "rule", "ground_truth": m.answer},
                    "extra_info": {"question": m.question, "options": m.options,
                                   "caption": cap.detail_text(), "qtype": m.qtype}})
    return out


def export_run(run_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, int]:
    """Write the SFT and RL exports of a run; returns the number of records per file."""
    run = Path(run_dir)
    out = Path(out_dir) if out_dir else run / "export"
    out.mkdir(parents=True, exist_ok=True)
    captions = [CaptionRecord.model_validate(r) for r in JsonlFile(run / "captions.jsonl").read()]
    mcqs = [MCQRecord.model_validate(r) for r in JsonlFile(run / "mcq.jsonl").read()]
    chains = [CoTRecord.model_validate(r) for r in JsonlFile(run / "cot.jsonl").read()]
    sft = sft_samples(captions, mcqs, chains)
    rl = rl_records(captions, mcqs)
    with open(out / "sft.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(s, ensure_ascii=False) + "\n" for s in sft)
    (out / "sft_llamafactory.json").write_text(
        json.dumps([to_llamafactory(s) for s in sft], ensure_ascii=False, indent=1))
    with open(out / "rl.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rl)
    counts = {f"sft_{t}": sum(s["task"] == t for s in sft) for t in ("caption", "direct", "think")}
    counts["rl"] = len(rl)
    return counts
