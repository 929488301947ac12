"""The parser is strict and total: every input gives a result with problems, never an exception."""

from __future__ import annotations

import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rewatch.reward.answers import answer_kind, parse_count, rule_accuracy
from rewatch.reward.orr import score, score_rules
from rewatch.reward.parse import ParsedResponse, parse_response

GOOD = ("<think>I should look at the start.</think>First I re-watch the opening.\n"
        '<action>segment_query("00:00-00:05")</action>\n'
        "<observation>A man walks in.</observation>\nThen the table.\n"
        '<action>segment_retrieval("red cup")</action>\n'
        "<observation>He picks up a red cup.</observation>\nSo B.\n<answer>B</answer>")
PIECES = ["<think>", "</think>", "<action>", "</action>", "<observation>", "</observation>",
          "<answer>", "</answer>", "<ANSWER>", "<answer id=2>", "</ answer>", "< action >",
          "<", ">", "</", "B", "A or B", "seven", " ", "\n", "text", "\x00", "é", "Ｂ", "<<>>",
          "<answer<answer>", "</observation></observation>", '"', "\\"]


def check(p: ParsedResponse) -> None:
    """Invariants every parse result keeps."""
    assert isinstance(p.problems, list) and all(isinstance(x, str) for x in p.problems)
    assert p.fmt in (0.0, 1.0)
    assert (p.fmt == 1.0) == (not p.problems)
    if p.fmt == 1.0:
        assert p.answer is not None and p.answer_tags == 1
    for s in p.steps:
        assert isinstance(s.action, str) and isinstance(s.observation, str)


def test_good_response_parses_clean() -> None:
    p = parse_response(GOOD)
    assert p.problems == [] and p.fmt == 1.0
    assert p.answer == "B" and p.n_steps == 2
    assert p.think == "I should look at the start."
    assert [s.action for s in p.steps] == ['segment_query("00:00-00:05")',
                                           'segment_retrieval("red cup")']
    assert p.steps[1].observation == "He picks up a red cup."


def test_steps_inside_think_count() -> None:
    p = parse_response("<think><action>a 00:01</action><observation>o</observation></think>"
                       "<answer>C</answer>")
    assert p.fmt == 1.0 and p.n_steps == 1 and p.steps[0].in_think


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_total_on_any_text(text: str) -> None:
    check(parse_response(text))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40))
def test_total_on_tag_soup(pieces: list[str]) -> None:
    check(parse_response("".join(pieces)))


@pytest.mark.parametrize("value", [None, 0, 3.5, b"<answer>B</answer>", ["<answer>B</answer>"],
                                   {"answer": "B"}])
def test_non_text_is_a_problem_not_an_error(value: object) -> None:
    p = parse_response(value)
    assert p.fmt == 0.0 and p.problems[0].startswith("not_text")


def test_mutated_good_responses() -> None:
    """Cut, duplicate and swap characters of a good response 3,000 times."""
    rng = random.Random(7)
    for _ in range(3000):
        s = list(GOOD)
        for _ in range(rng.randint(1, 6)):
            i, j = rng.randrange(len(s)), rng.randrange(len(s))
            op = rng.randrange(3)
            if op == 0:
                del s[i]
            elif op == 1:
                s.insert(i, s[j])
            else:
                s[i], s[j] = s[j], s[i]
        check(parse_response("".join(s)))


@pytest.mark.parametrize("text", [
    "<" * (1 << 20),
    "<answer" * 150_000,
    "<answer>" * 100_000,
    "</observation>" * 70_000,
    "<action>" + "x" * (1 << 20),
    "<think>" * 50_000 + "<answer>B</answer>",
    ("<action>a</action><observation>o</observation>" * 20_000) + "<answer>B</answer>",
    "".join(random.Random(1).choice(PIECES) for _ in range(100_000)),
], ids=["lt", "open-no-gt", "answers", "closings", "unclosed-action", "thinks", "pairs", "soup"])
def test_one_megabyte_inputs_are_fast_and_total(text: str) -> None:
    t0 = time.perf_counter()
    p = parse_response(text)
    assert time.perf_counter() - t0 < 5.0  # linear time: a quadratic scan would take minutes
    check(p)
    assert p.fmt == 0.0


def test_problem_list_is_capped() -> None:
    p = parse_response("<ANSWER>" * 1000)
    # 1000 malformed tags + multiple_answers = 1001 problems
    assert len(p.problems) == 21 and p.problems[-1] == "more: 981 further problems"


def test_answer_kinds() -> None:
    assert answer_kind("B") == "choice"
    assert answer_kind("7") == "count" and answer_kind("seven") == "count"
    assert answer_kind("a red cup") == "free"
    assert answer_kind("anything", {"A": "x"}) == "choice"


@pytest.mark.parametrize("text,value", [("7", 7), ("seven", 7), ("Seven people", 7),
                                        ("twenty-one", 21), ("one hundred and five", 105),
                                        ("12 (twelve)", 12), ("1,000", 1000), ("zero", 0)])
def test_counts(text: str, value: int) -> None:
    assert parse_count(text) == (value, "")


@pytest.mark.parametrize("text", ["7 or 8", "between six and eight", "7.5", "many", ""])
def test_counts_rejected(text: str) -> None:
    assert parse_count(text)[0] is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.sampled_from(["B", "7", "a red cup", "(C)", "zero"]),
       st.one_of(st.none(), st.just({"A": "x", "B": "y"}), st.just(["x", "y", "z"])))
def test_rule_scoring_is_total(answer: str, truth: str, options: object) -> None:
    b = score_rules(f"<answer>{answer}</answer>", truth, options)
    assert b.acc in (0.0, 1.0, None) and b.fmt in (0.0, 1.0)
    if b.acc == 0.0:
        assert b.overall == b.fmt  # w_fmt · r_fmt when the answer is wrong


async def test_missing_ground_truth_is_a_failure_not_a_zero() -> None:
    b = await score(GOOD, answer="", caption="", question="", judge=None)
    assert b.failed and b.overall is None and "no_ground_truth" in b.problems


def test_free_form_needs_a_judge() -> None:
    assert rule_accuracy("the red cup", "a red cup") == (None, "")


def test_rules_speed_on_10k_responses() -> None:
    """Parsing + r_acc + r_fmt; the benchmark (rewatch/bench/bench_reward.py) reports the rate."""
    rng = random.Random(0)
    rows = [(GOOD.replace("<answer>B", f"<answer>{rng.choice('ABCD')}"), "B")
            for _ in range(10_000)]
    t0 = time.perf_counter()
    out = [score_rules(r, a, {"A": "x", "B": "y", "C": "z", "D": "w"}) for r, a in rows]
    dt = time.perf_counter() - t0
    assert sum(b.acc == 1.0 for b in out) == sum("<answer>B" in r for r, _ in rows)
    assert dt < 10.0, f"{len(rows) / dt:.0f} responses/s"
