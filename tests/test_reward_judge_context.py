"""The O&R observation judge sees what a step retrieved: on a 1-hour caption, a
`segment_retrieval(query)` step about minute 50 is judged against the minute-50 line (the lines
the Observer's own index returns), a `segment_query(time)` step against the lines near that time.
The judge is the scripted one (tests/reward_scripted.py) on a loopback server; it records every
request, so the test reads exactly what the judge was shown."""

from __future__ import annotations

import pytest
from reward_scripted import data_of, judge_reply

from rewatch.models.openai_compat import OpenAIChatModel
from rewatch.models.scripted_server import ScriptedTestServer
from rewatch.reward.judges import RewardJudge, caption_window
from rewatch.reward.orr import score
from rewatch.schema import mmss

COLOURS = ["red", "blue", "green", "yellow", "white", "black", "orange", "grey"]
THINGS = ["car", "bus", "bicycle", "van", "truck", "scooter", "taxi", "tram"]
ACTS = ["drives past the bakery", "stops at the crossing", "turns left at the corner",
        "waits by the bus stop", "parks near the fountain", "speeds along the avenue"]
KITE = "A purple kite lands on the roof of the old library."
SCOOTER = "A white scooter parks near the fountain."  # the line at 50:00-50:10


def hour_caption() -> str:
    """One line every 10 s for an hour of street scenes; minute 50 has the kite."""
    lines = []
    for i in range(360):
        start, end = i * 10, i * 10 + 10
        text = (KITE if start == 3010 else
                f"A {COLOURS[i % 8]} {THINGS[(i // 8) % 8]} {ACTS[(i // 64) % 6]}.")
        lines.append(f"[{mmss(start)}-{mmss(end)}] {text}")
    return "\n".join(lines)


CAPTION = hour_caption()
KITE_LINE = "[50:10-50:20] " + KITE
QUESTION = "What lands on the roof of the library?"
OPTIONS = {"A": "a pigeon", "B": "a purple kite", "C": "a red ball", "D": "a drone"}


def response(action: str, observation: str = "A purple kite lands on the library roof.") -> str:
    # not the caption's clause word for word: a verbatim quote is scored without the judge
    return (f"I look for the roof.\n<action>{action}</action>\n<observation>{observation}"
            f"</observation>\nSo it is the kite.\n<answer>B</answer>")


@pytest.mark.parametrize("action", [
    'segment_retrieval("a kite landing on the library roof")',
    "segment_retrieval(query='kite on the roof')",
    'segment_query("50:12")',
    'segment_retrieval("what lands on the roof around 50:00")',
])
async def test_judge_is_shown_the_line_the_step_retrieved(action: str) -> None:
    assert CAPTION.count("\n") == 359 and KITE_LINE in CAPTION
    assert CAPTION.index(KITE_LINE) > 6000  # far past the head a judge used to see
    with ScriptedTestServer(judge_reply) as srv:
        judge = RewardJudge(OpenAIChatModel("scripted", srv.base_url, max_retries=0))
        b = await score(response(action), answer="B", caption=CAPTION, question=QUESTION,
                        judge=judge, options=OPTIONS)
    obs_requests = [data_of(r) for r in srv.requests if "observation" in data_of(r)]
    assert len(obs_requests) == 1
    shown = obs_requests[0]["caption_lines"]
    assert KITE_LINE in shown.splitlines(), shown[:300]
    assert len(shown) < 2000  # the lines that matter, not the whole hour
    assert b.obs == 1.0 and b.overall == 4.0


@pytest.mark.parametrize(("action", "observation", "calls"), [
    ('segment_query("50:12")', "At 50:10-50:20: " + KITE, 0),  # the caption's clause, its time
    ('segment_query("50:12")', KITE, 0),  # no stamp of its own: the action's time
    ('segment_query("20:00")', "At 50:10-50:20: " + KITE, 1),  # another moment than re-watched
    ('segment_query("50:12")', "A purple kite lands on the roof.", 1),  # part of the clause
    ('segment_retrieval("kite on the roof")', KITE, 1),  # no time named: the judge decides
    # a moment observed whole (`query_verbatim`): each line after its own stamp
    ('segment_query("50:05-50:15")', f"At 50:00-50:10: {SCOOTER} At 50:10-50:20: {KITE}", 0),
    ('segment_query("50:05-50:15")',
     f"At 50:00-50:10: {SCOOTER} At 50:10-50:20: A purple kite lands on the roof.", 1),
    ('segment_query("50:05-50:15")', f"At 50:00-50:10: {SCOOTER} At 40:00-40:10: {KITE}", 1),
])
async def test_a_verbatim_quote_at_the_step_s_time_needs_no_judge(
        action: str, observation: str, calls: int) -> None:
    with ScriptedTestServer(judge_reply) as srv:
        judge = RewardJudge(OpenAIChatModel("scripted", srv.base_url, max_retries=0))
        b = await score(response(action, observation), answer="B", caption=CAPTION,
                        question=QUESTION, judge=judge, options=OPTIONS)
    asked = [r for r in srv.requests if "observation" in data_of(r)]
    assert len(asked) == calls and judge.stats["observation_quoted"] == 1 - calls
    if calls == 0:
        assert b.obs == 1.0
    if action == 'segment_query("20:00")':  # the judge, shown minute 20, finds no kite
        assert b.obs == 0.0


def test_retrieved_and_time_named_lines_together() -> None:
    shown = caption_window(CAPTION, 'segment_retrieval("purple kite near 10:00")',
                           window_s=10).splitlines()
    assert KITE_LINE in shown
    assert any(line.startswith("[10:00-10:10]") for line in shown)
    # an action that retrieves nothing and names no time: the whole caption, cut
    whole = caption_window(CAPTION, "I re-watch the whole video", max_chars=3000)
    assert whole.startswith("[00:00-00:10]") and whole.endswith("[… caption cut]")


def test_the_judge_sees_what_the_observer_tool_returns() -> None:
    # the same index as Stage 3's Observer: the lines shown are the tool's lines, whatever
    # they are (here a query with no matching word still has MiniLM neighbours)
    from rewatch.reward.judges import caption_lines
    from rewatch.schema import CaptionRecord
    from rewatch.synth.tools import CaptionIndex

    record = CaptionRecord(id="hour", video_id="hour", video_path="", duration=3600.0,
                           detail=[c for c, _raw in caption_lines(CAPTION)], summary="",
                           captioner="test")
    index = CaptionIndex(record)
    for query in ("zebra crossing", "a taxi turning left", "kite"):
        tool = index.segment_retrieval(query)
        shown = caption_window(CAPTION, f'segment_retrieval("{query}")').splitlines()
        assert tool.lines, query
        assert sorted(shown) == sorted(f"[{mmss(c.start)}-{mmss(c.end)}] {c.text}"
                                       for c in tool.lines), query
