"""segment_query / segment_retrieval on captions written from a synthetic video's ground truth."""

from __future__ import annotations

import time

import pytest
from cot_truth import SPEC, caption_from_truth, many_events_spec, truth_of

from rewatch.schema import mmss
from rewatch.synth.tools import (
    ArgumentError,
    CaptionIndex,
    parse_action,
    parse_timestamp,
)


@pytest.fixture(scope="module")
def index() -> CaptionIndex:
    return CaptionIndex(caption_from_truth(truth_of(SPEC)))


@pytest.mark.parametrize("text,expected", [
    ("00:05", (5.0, 5.0)), ("0:05", (5.0, 5.0)), ("01:02:03", (3723.0, 3723.0)),
    ("65", (65.0, 65.0)), ("65.5", (65.5, 65.5)), ("12s", (12.0, 12.0)),
    ("00:04-00:06", (4.0, 6.0)), ("[00:04 - 00:06]", (4.0, 6.0)), ("00:04 to 00:06", (4.0, 6.0)),
    ("'00:09'", (9.0, 9.0)),
])
def test_timestamp_formats(text, expected):
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize("text,says", [
    ("", "needs a timestamp"), ("00:75", "60 or more"), ("noon", "cannot read"),
    ("00:06-00:04", "ends before it starts"), ("1:2:3:4", "cannot read"),
    ("00:01-00:02-00:03", "one timestamp or one span"),
])
def test_malformed_timestamps_say_what_is_wrong(text, says):
    with pytest.raises(ArgumentError, match=says):
        parse_timestamp(text)


def test_segment_query_returns_the_exact_lines(index):
    r = index.segment_query("00:05")
    assert r.ok and [(c.start, c.end) for c in r.lines] == [(5.0, 6.0)]
    assert r.text.startswith("[00:05-00:06] a yellow square appears")
    span = index.segment_query("00:04-00:07")
    assert [(c.start, c.end) for c in span.lines] == [(4.0, 5.0), (5.0, 6.0), (6.0, 7.0)]
    assert "the red circle leaves" in span.text and "cut to a gray scene" in span.text
    assert index.segment_query("9").lines[0].text.startswith("a white circle appears")
    assert index.segment_query("00:00:09").text == index.segment_query("00:09").text


def test_segment_query_on_bad_arguments_answers_instead_of_raising(index):
    for arg in ("", "soon", "00:99", "05:00", "00:08-00:02"):
        r = index.segment_query(arg)
        assert not r.ok and r.text.startswith("Tool error:") and r.lines == []
    assert "past the end of the video" in index.segment_query("05:00").text
    assert "00:00-00:12" in index.segment_query("05:00").text


def test_run_with_unknown_tool_and_parse_action(index):
    r = index.run("zoom_in", "00:01")
    assert not r.ok and "segment_retrieval" in r.text
    assert parse_action('segment_query("00:12")') == ("segment_query", "00:12")
    assert parse_action("segment_retrieval('red ball' )") == ("segment_retrieval", "red ball")
    with pytest.raises(ArgumentError):
        parse_action("look at 00:12")


def test_retrieval_finds_the_event_line(index):
    r = index.segment_retrieval("the yellow square appears", top_k=1)
    assert r.ok and len(r.spans) == 1
    s, e = r.spans[0]
    assert s <= 5.0 < e  # the line [00:05-00:06] the query was written from
    miss = index.segment_retrieval("   ")
    assert not miss.ok and "needs a description" in miss.text
    stamp = index.segment_retrieval("00:05")
    assert not stamp.ok and "use segment_query" in stamp.text


def test_retrieval_merges_neighbouring_lines_into_spans(index):
    r = index.segment_retrieval("red circle moving right", top_k=3)
    # lines 00:01-00:02, 00:02-00:04 and 00:04-00:05 all describe it: one span, not three
    assert any(s <= 1.0 and e >= 4.0 for s, e in r.spans)
    assert len(r.spans) == len(set(r.spans))


def test_retrieval_recall_at_k_on_generated_events():
    """Queries written from the events of a 10-minute synthetic video (>= 50 cases)."""
    truth = truth_of(many_events_spec())
    idx = CaptionIndex(caption_from_truth(truth))
    cases = [(t, ev.replace("appears", "appear").replace("leaves", "leave"))
             for t, ev in truth.events() if not ev.startswith("cut")]
    assert len(cases) >= 50
    hits = {1: 0, 3: 0}
    t0 = time.perf_counter()
    for t, ev in cases:
        query = f"when does {ev.replace('a ', 'the ', 1)}"
        for k in hits:
            spans = idx.segment_retrieval(query, top_k=k).spans
            hits[k] += any(s <= t < e or s == t for s, e in spans)
    per_query = (time.perf_counter() - t0) / (2 * len(cases))
    recall = {k: v / len(cases) for k, v in hits.items()}
    print(f"recall@1={recall[1]:.3f} recall@3={recall[3]:.3f} n={len(cases)} "
          f"{per_query * 1000:.1f} ms/query")
    assert recall[3] >= 0.9 and recall[1] >= 0.6
    assert mmss(truth.spec.duration) == "10:00"


def test_retrieval_naming_a_time_finds_the_line_at_that_time():
    # the object captioner's count lines all read alike: only the time tells them apart
    from rewatch.schema import CaptionLine, CaptionRecord

    lines = [CaptionLine(start=t, end=t, text=f"{w} objects are on screen now.")
             for t, w in ((2, "Four"), (8, "Four"), (15, "Three"), (21, "Two"))]
    lines += [CaptionLine(start=0, end=30, text="The dark gray blob moves down slowly.")]
    cap = CaptionRecord(id="c", video_id="v", video_path="v.mp4", captioner="test", duration=30,
                        detail=lines, summary="")
    index = CaptionIndex(cap)
    got = index.segment_retrieval("objects on screen just after 00:15", top_k=1)
    texts = [c.text for c in got.lines]
    assert "Three objects are on screen now." in texts
    assert "Four objects are on screen now." not in texts
    # without a time, the same words find the look-alike lines by words alone
    plain = index.segment_retrieval("objects on screen", top_k=4)
    assert {c.text for c in plain.lines} >= {"Four objects are on screen now.",
                                             "Three objects are on screen now."}


def test_a_point_query_returns_the_instant_lines_at_that_second():
    from rewatch.schema import CaptionLine, CaptionRecord

    lines = [CaptionLine(start=1, end=6, text="The orange triangle moves right slowly."),
             CaptionLine(start=3, end=3, text="A cyan rectangle appears at the top right."),
             CaptionLine(start=3, end=3, text="Two objects are on screen now."),
             CaptionLine(start=5, end=5, text="Three objects are on screen now.")]
    cap = CaptionRecord(id="c", video_id="v", video_path="v.mp4", captioner="test", duration=8,
                        detail=lines, summary="")
    got = CaptionIndex(cap).segment_query("00:03")
    assert [c.text for c in got.lines] == [lines[0].text, lines[1].text, lines[2].text]
