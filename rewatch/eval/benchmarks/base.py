"""What every benchmark shares: the item schema, safe video paths, file loading, scoring tallies.

A benchmark is one file under `rewatch/eval/benchmarks/`: a `Benchmark` subclass decorated with
`@register` that turns the official rows into `EvalItem`s and scores predictions by the official
rules. Nothing else in the harness knows a benchmark's field names.

Official extraction (each benchmark's `official_*` rules) is deliberately not the shared
option-letter reading (`rewatch.text.option_letter`, used by strict mode, the reward and Stage
3): it reproduces the upstream code's quirks item for item (VideoMathQA's first capital anywhere,
Video-Holmes' "X " / "X:" / "[X" order, MINERVA's random letter), so that its numbers can be
compared with published tables; fixing a quirk there would make those columns wrong.
"""

from __future__ import annotations

import inspect
import json
import math
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from rewatch.eval.extract import Extraction, extract_choice

Kind = Literal["mcq", "count", "open"]
LETTERS = "ABCDEFGHIJ"


class BenchmarkFormatError(ValueError):
    """A benchmark file is not in the format its loader expects; the message names the row."""


class UnsafePathError(BenchmarkFormatError):
    """A video path in a benchmark file points outside the videos directory."""


class EvalItem(BaseModel):
    """One question of one benchmark, in the one schema every loader yields."""

    id: str
    bench: str
    video: str  # absolute path, checked to lie under the videos directory
    question: str
    options: dict[str, str] = Field(default_factory=dict)  # letter -> text; empty for open/count
    answer: str  # a letter (mcq), an integer as text (count), or free text (open)
    kind: Kind = "mcq"
    categories: dict[str, str] = Field(default_factory=dict)  # breakdown key -> value
    group: str | None = None  # items scored together (VideoMathQA multi-binary)
    duration: float | None = None  # seconds, when the file states it
    extra: dict[str, Any] = Field(default_factory=dict)  # e.g. VCR-Bench answer type, clues


def safe_video_path(videos: str | Path, rel: str, *, row: str = "") -> Path:
    """`rel` inside `videos`, resolved (symlinks too); refuses anything that escapes it."""
    base = Path(videos).expanduser().resolve()
    if not rel or "\x00" in rel:
        raise UnsafePathError(f"{row}: empty or invalid video path {rel!r}")
    p = Path(rel)
    if p.is_absolute() or p.drive:
        raise UnsafePathError(f"{row}: absolute video path {rel!r} refused; benchmark files must "
                              f"name videos relative to --videos {base}")
    resolved = (base / p).resolve()
    if not resolved.is_relative_to(base):
        raise UnsafePathError(f"{row}: video path {rel!r} resolves to {resolved}, outside the "
                              f"videos directory {base}; refused")
    return resolved


def find_video(videos: str | Path, stem: str, *, row: str = "",
               exts: tuple[str, ...] = (".mp4", ".MP4", ".mkv", ".webm", ".avi", ".mov")) -> Path:
    """The file `stem` + the first existing extension (`.mp4` when none exists yet)."""
    if Path(stem).suffix.lower() in {e.lower() for e in exts}:
        return safe_video_path(videos, stem, row=row)
    for ext in exts:
        p = safe_video_path(videos, stem + ext, row=row)
        if p.exists():
            return p
    return safe_video_path(videos, stem + exts[0], row=row)


def load_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a benchmark file: a JSON list (or {"data": [...]}), JSON Lines, or parquet."""
    p = Path(path)
    if not p.exists():
        raise BenchmarkFormatError(f"benchmark file not found: {p}")
    if p.is_dir():  # the shards of one split (test-00000-of-00002.parquet, ...)
        shards = sorted(x for x in p.iterdir() if x.suffix in (".parquet", ".json", ".jsonl"))
        if not shards:
            raise BenchmarkFormatError(f"{p}: no parquet/JSON files in this folder")
        return [row for shard in shards for row in load_rows(shard)]
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq  # a declared dependency; imported only for parquet

        return [_plain(r) for r in pq.read_table(p).to_pylist()]
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise BenchmarkFormatError(f"{p}: not valid JSON ({e})") from None
        rows = data.get("data", data) if isinstance(data, dict) else data
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise BenchmarkFormatError(f"{p}: expected a list of objects")
    return rows


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A parquet row as JSON would give it (numpy arrays, if any, as lists)."""
    return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in row.items()}


def need(row: dict[str, Any], key: str, where: str) -> Any:
    """row[key], or a BenchmarkFormatError naming the row and the missing field."""
    if key not in row or row[key] is None:
        raise BenchmarkFormatError(f"{where}: missing field {key!r} (has {sorted(row)})")
    return row[key]


# --- scoring -------------------------------------------------------------------------------

Status = Literal["answered", "no_answer", "missing", "unjudged"]
Mode = Literal["official", "strict"]
MODES: tuple[Mode, ...] = ("official", "strict")


@dataclass(frozen=True)
class ScoreOptions:
    """How to score: which extraction rules (`official` reproduces the benchmark's own code,
    `strict` never guesses), the seed of the official random fallbacks, whether the replies are
    reasoning (think-mode) replies, and the judge outputs (key `step:item_id` -> raw text)."""

    mode: Mode = "strict"
    seed: int = 0
    think: bool = False
    judgments: Mapping[str, str] = field(default_factory=dict)
    # also the official reasoning score where there is one (VCR-Bench's CoT F1, VideoMathQA's
    # 0-10 step score)
    cot_score: bool = False

    def judged(self, step: str, item_id: str) -> str | None:
        """The judge's raw output for one step of one item, or None when it was not run."""
        return self.judgments.get(f"{step}:{item_id}")


@dataclass
class Outcome:
    """How one item (or one multi-binary group) was judged."""

    id: str
    correct: bool
    status: Status
    predicted: str | None
    categories: dict[str, str]
    error: float | None = None  # |pred - gt| for counting (clipped in official mode)
    how: str = ""  # which rule produced `predicted`
    guessed: bool = False  # official mode: the benchmark's own code guessed (random fallback)
    needs_judge: bool = False  # official mode: an LLM step of the official code was not run
    group: str | None = None
    within_one: bool = False  # counting: |pred - gt| <= 1 (unclipped)


@dataclass
class BenchScore:
    """A benchmark's scores: the headline metric, honest counts and per-category breakdowns."""

    bench: str
    metric: str  # name of the headline metric, e.g. "accuracy"
    score: float  # headline, in percent
    n: int
    correct: int
    no_answer: int  # replied, but no answer could be extracted (counted wrong)
    missing: int  # no prediction at all (not run, or failed: see errors.jsonl; counted wrong)
    unjudged: int = 0  # open answers without a judge verdict (counted wrong)
    metrics: dict[str, float] = field(default_factory=dict)  # further metrics (OBOA, MAE, ...)
    breakdowns: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    mode: Mode = "strict"
    guessed: int = 0  # official mode: answers the official code picked at random
    needs_judge: int = 0  # official mode: items whose official LLM step was not run
    seed: int | None = None  # official mode: seed of the random fallbacks
    outcomes: list[Outcome] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The score as plain JSON-able data (per-item outcomes are left to scored.jsonl)."""
        d = {k: v for k, v in self.__dict__.items() if k != "outcomes"}
        return d


def tally(outcomes: list[Outcome], keys: Iterable[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Accuracy (percent) and counts per value of each breakdown key."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key in keys:
        groups: dict[str, list[Outcome]] = defaultdict(list)
        for o in outcomes:
            groups[o.categories.get(key, "(none)")].append(o)
        out[key] = {v: {"accuracy": pct(sum(o.correct for o in g), len(g)), "n": len(g),
                        "no_answer": sum(o.status == "no_answer" for o in g)}
                    for v, g in sorted(groups.items())}
    return out


def pct(k: int | float, n: int) -> float:
    """`k` of `n` in percent (0 when n is 0)."""
    return 100.0 * k / n if n else 0.0


def summarize(bench: str, outcomes: list[Outcome], keys: Iterable[str],
              metric: str = "accuracy", opts: ScoreOptions | None = None) -> BenchScore:
    """Headline accuracy, the honest counts and the breakdowns of a list of outcomes."""
    opts = opts or ScoreOptions()
    n = len(outcomes)
    correct = sum(o.correct for o in outcomes)
    return BenchScore(
        bench=bench, metric=metric, score=pct(correct, n), n=n, correct=correct,
        no_answer=sum(o.status == "no_answer" for o in outcomes),
        missing=sum(o.status == "missing" for o in outcomes),
        unjudged=sum(o.status == "unjudged" for o in outcomes),
        breakdowns=tally(outcomes, keys), mode=opts.mode,
        guessed=sum(o.guessed for o in outcomes),
        needs_judge=sum(o.needs_judge for o in outcomes),
        seed=opts.seed if opts.mode == "official" else None, outcomes=outcomes,
    )


def choice_outcome(item: EvalItem, reply: str | None) -> Outcome:
    """Multiple choice: the strict shared extraction, then letter match."""
    if reply is None:
        return Outcome(item.id, False, "missing", None, item.categories, how="missing",
                       group=item.group)
    ex: Extraction = extract_choice(reply, item.options)
    if ex.value is None:
        return Outcome(item.id, False, "no_answer", None, item.categories, how=ex.how,
                       group=item.group)
    return Outcome(item.id, ex.value == item.answer, "answered", ex.value, item.categories,
                   how=ex.how, group=item.group)


def missing_outcome(item: EvalItem) -> Outcome:
    """A question that has no reply at all (not run, or failed): wrong, counted apart."""
    return Outcome(item.id, False, "missing", None, item.categories, how="missing",
                   group=item.group)


def letter_outcome(item: EvalItem, letter: str | None, how: str, *, guessed: bool = False,
                   needs_judge: bool = False) -> Outcome:
    """An outcome for a letter some official rule produced (None or "": no letter found)."""
    if not letter:
        return Outcome(item.id, False, "no_answer", None, item.categories, how=how,
                       needs_judge=needs_judge, group=item.group)
    return Outcome(item.id, letter == item.answer, "answered", letter, item.categories,
                   how=how, guessed=guessed, needs_judge=needs_judge, group=item.group)


def fill_placeholders(template: str, **values: str) -> str:
    """Replace `{name}` placeholders only, in one pass (official prompts carry other braces
    verbatim, e.g. LaTeX `\\frac{V^2}{r}` or a JSON format line, and a value that contains
    `{name}` is not filled again, as with upstream's f-strings)."""
    return re.sub(r"\{(" + "|".join(values) + r")\}", lambda m: values[m.group(1)], template)


def item_rng(seed: int, item_id: str) -> random.Random:
    """The random generator of one item's official fallback: seeded by the run's seed and the
    item id, so a rescore gives the same guesses whatever the order or subset of items."""
    return random.Random(f"{seed}:{item_id}")


def finite(x: float) -> float:
    """`x`, or NaN when it is infinite."""
    return x if math.isfinite(x) else float("nan")


def limit_items(items: list[EvalItem], n: int | None) -> list[EvalItem]:
    """The items of the first `n` questions; a multi-binary question keeps all of its pairs
    (a group cut in two would be scored on a subset of its pairs)."""
    if not n:
        return items
    keep: list[str] = []
    for it in items:
        g = it.group or it.id
        if g not in keep:
            if len(keep) == n:
                continue
            keep.append(g)
    chosen = set(keep)
    return [it for it in items if (it.group or it.id) in chosen]


# --- the registry --------------------------------------------------------------------------

class Benchmark:
    """Base class: subclasses set `name`, `breakdown_keys` and implement `load` (and `score`
    when the official rule is not plain multiple-choice accuracy)."""

    name: ClassVar[str]
    title: ClassVar[str]  # the column header in the paper's table
    aliases: ClassVar[tuple[str, ...]] = ()
    breakdown_keys: ClassVar[tuple[str, ...]] = ()
    default_file: ClassVar[str] = ""  # the official file name, for docs and error messages
    # where the release keeps things, relative to its download folder (a HF snapshot)
    download_files: ClassVar[tuple[str, ...]] = ()  # glob patterns of the question file
    download_videos: ClassVar[tuple[str, ...]] = ("videos",)  # candidate video folders
    download_hint: ClassVar[str] = ""  # the download command

    def load(self, data: str | Path, videos: str | Path) -> list[EvalItem]:
        """The official file's rows as items (videos resolved inside `videos`)."""
        raise NotImplementedError

    def score(self, items: list[EvalItem], replies: dict[str, str],
              opts: ScoreOptions | None = None) -> BenchScore:
        """Score `replies` (item id -> raw model reply; absent ids are missing) by the rules of
        `opts.mode`: the benchmark's official code, or the strict shared extraction."""
        opts = opts or ScoreOptions()
        if opts.mode == "official":
            outcomes = [self.official_outcome(it, replies.get(it.id), opts) for it in items]
        else:
            outcomes = [choice_outcome(it, replies.get(it.id)) for it in items]
        return summarize(self.name, outcomes, self.breakdown_keys, opts=opts)

    def official_outcome(self, item: EvalItem, reply: str | None, opts: ScoreOptions
                         ) -> Outcome:
        """One item by the benchmark's own extraction rule (subclasses implement it)."""
        raise NotImplementedError(f"{self.name}: no official rule")

    def judge_requests(self, items: list[EvalItem], replies: dict[str, str],
                       opts: ScoreOptions) -> list[JudgeRequest]:
        """The LLM steps that scoring `replies` in `opts.mode` still needs (none by default)."""
        return []


REGISTRY: dict[str, type[Benchmark]] = {}


def register(cls: type[Benchmark]) -> type[Benchmark]:
    """Class decorator: make a benchmark available by its name and aliases."""
    for key in (cls.name, *cls.aliases):
        REGISTRY[key.lower()] = cls
    return cls


def names() -> list[str]:
    """The registered benchmark names (aliases left out), sorted."""
    return sorted({c.name for c in REGISTRY.values()})


def get_benchmark(name: str, **options: Any) -> Benchmark:
    """A benchmark by name or alias (case-insensitive); `options` a benchmark does not take
    (e.g. `protocol` for CG-AV-Counting only) are ignored."""
    cls = REGISTRY.get(name.lower())
    if cls is None:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(names())}")
    accepted = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in options.items() if k in accepted})


@dataclass(frozen=True)
class JudgeRequest:
    """One LLM step of a benchmark's scoring: the prompt (the official text where the official
    code has one), its sampling settings, and the reply it is about."""

    step: str  # e.g. "vcr_extract", "vcr_score", "videomathqa_cot", "open_judge"
    item_id: str
    prompt: str
    reply: str  # the model reply being judged (its hash invalidates a stale judgment)
    temperature: float = 0.0
    max_tokens: int = 2048
    # the item whose reply is judged, when it is another item's (VideoMathQA multi-binary
    # grades every pair with its question's first reply); None: item_id's own
    reply_id: str | None = None

    @property
    def key(self) -> str:
        """`step:item_id` (`step:item_id@reply_id` when another item's reply is judged), the
        key of its output in ScoreOptions.judgments."""
        if self.reply_id is not None and self.reply_id != self.item_id:
            return f"{self.step}:{self.item_id}@{self.reply_id}"
        return f"{self.step}:{self.item_id}"


Loader = Callable[[str | Path, str | Path], list[EvalItem]]
