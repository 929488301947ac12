"""Strict answer extraction: the reply styles models produce, and the traps."""

from __future__ import annotations

import pytest

from rewatch.eval.extract import (
    extract_box,
    extract_choice,
    extract_number,
    extract_span,
    iou_1d,
    iou_box,
    numbers_in,
)
from rewatch.text import clock_seconds

OPTS5 = {L: f"option text {L.lower()}" for L in "ABCDE"}
OPTS6 = {L: f"reason {L}" for L in "ABCDEF"}

CHOICE_CASES = [
    # answer tags (the last block wins, and only it is read)
    ("<think>A or C?</think><answer>C</answer>", "C"),
    ("<answer>B</answer>", "B"),
    ("<answer> (D) </answer>", "D"),
    ("<answer>b</answer>", "B"),
    ("<answer>A</answer> wait <answer>E</answer>", "E"),
    ("<answer>Option C</answer>", "C"),
    ("<answer>C. option text c</answer>", "C"),
    ("<answer>option text d</answer>", "D"),
    ("<answer>The answer is B</answer>", "B"),
    ("<answer>**A**</answer>", "A"),
    ("reasoning... <answer>E", "E"),  # unclosed final tag
    ("<action>re-watch 00:10-00:20</action><observation>A red ball, then B.</observation>"
     "<answer>D</answer>", "D"),
    ("<answer></answer> The answer is B", None),  # an empty tag is no answer
    ("<answer>I am not sure</answer>", None),
    ("<answer>A or B</answer>", None),
    # explicit statements
    ("The answer is (B).", "B"),
    ("The answer is B", "B"),
    ("the answer is b", "B"),
    ("The answer is: C", "C"),
    ("Answer: E", "E"),
    ("answer: (a)", "A"),
    ("Final answer: D", "D"),
    ("The correct answer is **C**.", "C"),
    ("The best option is A.", "A"),
    ("Best option: C", "C"),
    ("correct option is D.", "D"),
    ("option: B", "B"),
    ("I choose D", "D"),
    ("I would pick (E).", "E"),
    ("Option C is correct.", "C"),
    ("First I thought the answer is A, but looking again the answer is C.", "C"),
    ("<think>the answer is A</think>\nThe answer is B.", "B"),
    ("Answer: [C]", "C"),
    ("ANSWER: D", "D"),
    ("The answer is \"B\".", "B"),
    # leading letter
    ("B) because the car turns left", "B"),
    ("(C) the man leaves", "C"),
    ("D. He opens the door.", "D"),
    ("E", "E"),
    ("A", "A"),
    ("**B**", "B"),
    ("C: the third one", "C"),
    ("  (A)", "A"),
    ("a.", "A"),
    # option text
    ("option text c", "C"),
    ("Option text B.", "B"),
    # a single standalone letter
    ("I think it is B given the ending.", "B"),
    ("The ball is red, so B.", "B"),
    ("A man walks in. Then D happens, so D.", "D"),
    # traps: letters inside words, articles, several letters, no letter
    ("A man walks into the room and sits down.", None),
    ("Because of the BIG Explosion", None),
    ("Option B or C", None),
    ("B and D both fit.", None),
    ("ABCD", None),
    ("", None),
    ("I cannot tell from the video.", None),
    ("the answer is a bit unclear", None),
    ("It's a DVD about CDs", None),
    ("The answer is F", None),  # not an option of a 5-way question
    ("E-mail from Alice", None),
    ("answer is x", None),
]


@pytest.mark.parametrize(("reply", "expected"), CHOICE_CASES)
def test_extract_choice(reply: str, expected: str | None) -> None:
    assert extract_choice(reply, OPTS5).value == expected


def test_there_are_at_least_60_reply_styles() -> None:
    assert len(CHOICE_CASES) + len(NUMBER_CASES) >= 60


def test_six_options_and_reason_codes() -> None:
    assert extract_choice("<answer>F</answer>", OPTS6).value == "F"
    assert extract_choice("The answer is F", OPTS5).how == "none"
    assert extract_choice("B and D both fit.", OPTS5).how == "ambiguous"
    assert extract_choice("<answer>A or B</answer>", OPTS5).how == "answer_tag_ambiguous"
    assert extract_choice("The answer is (B).", OPTS5).how == "explicit"
    # two-option (multi-binary) questions only know A and B
    assert extract_choice("C", {"A": "1", "B": "2"}).value is None


NUMBER_CASES = [
    ("<answer>7</answer>", "7"),
    ("<answer>seven</answer>", "7"),
    ("<answer>3 (three)</answer>", "3"),
    ("<think>1, 2, 3 ... 9</think><answer>9</answer>", "9"),
    ("There are 12 cars.", "12"),
    ("I count 3 red and 4 blue, so the total is 7.", "7"),
    ("The answer is 5.0", "5"),
    ("twenty-one", "21"),
    ("Twenty one", "21"),
    ("The count is eleven.", "11"),
    ("Answer: 1,200", "1200"),
    ("zero", "0"),
    ("a hundred", "100"),
    ("no idea", None),
    ("I see 2.5 things", None),
    ("<answer>3 or 4</answer>", None),
    ("Maybe 3, maybe 4.", None),
    ("<answer>many</answer>", None),
]


@pytest.mark.parametrize(("reply", "expected"), NUMBER_CASES)
def test_extract_number(reply: str, expected: str | None) -> None:
    assert extract_number(reply).value == expected


def test_numbers_in_words_and_digits() -> None:
    assert numbers_in("one, 2, three and forty-two but not 2.5") == [1, 2, 3, 42]


def test_spans_boxes_and_iou() -> None:
    assert clock_seconds("01:05") == 65.0 and clock_seconds("1:02:03") == 3723.0
    assert extract_span("It happens from 00:12 to 00:20.") == (12.0, 20.0)
    assert extract_span("<answer>[12.5, 20]</answer>") == (12.5, 20.0)
    assert extract_span("between 7 and 3 seconds") is None
    assert extract_span("3 to 7 seconds") == (3.0, 7.0)
    assert extract_box("the box [10, 20, 110, 220]") == (10.0, 20.0, 110.0, 220.0)
    assert extract_box("no box") is None
    assert iou_1d((0, 10), (5, 15)) == pytest.approx(5 / 15)
    assert iou_1d((0, 1), (2, 3)) == 0.0
    assert iou_box((0, 0, 10, 10), (5, 5, 15, 15)) == pytest.approx(25 / 175)
