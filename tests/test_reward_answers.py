"""r_acc for option letters: a letter with its own option's text is that option; a letter with
another option's text, a second letter or other text is wrong (rewatch/reward/answers.py)."""

from __future__ import annotations

import pytest

from rewatch.reward.answers import choice_letter, rule_accuracy
from rewatch.reward.orr import score_rules

OPTIONS = {"A": "once", "B": "never", "C": "twice", "D": "three times"}
# Video-R1-style options carry their own letter in the text
LETTERED = [f"{k}. {v}" for k, v in OPTIONS.items()]


@pytest.mark.parametrize("answer", [
    "C", "(C)", "C.", "C. twice", "C: twice", "C) twice", "(C) twice", "C - twice",
    "C. Twice.", "C twice", "twice", "C.\ntwice",
])
def test_letter_with_its_own_option_text_is_correct(answer: str) -> None:
    b = score_rules(f"<answer>{answer}</answer>", "C", OPTIONS)
    assert b.acc == 1.0, b.problems
    assert b.overall == 2.0 and b.problems == []


@pytest.mark.parametrize(("answer", "problem"), [
    ("C. once", "other_option_text"),
    ("C. three times", "other_option_text"),
    ("C. A", "multiple_options"),
    ("C D", "multiple_options"),
    ("C or D", "multiple_options"),
    ("C. twice or D", "multiple_options"),
    ("C. twice, because he nods", "extra_text"),
    ("C because it happens twice", "extra_text"),
    ("C. thrice", "extra_text"),
])
def test_letter_with_other_text_stays_wrong(answer: str, problem: str) -> None:
    b = score_rules(f"<answer>{answer}</answer>", "C", OPTIONS)
    assert b.acc == 0.0
    assert any(p.startswith(problem) for p in b.problems), b.problems


def test_options_written_with_their_letters() -> None:
    # a list of "C. twice" strings is lettered A.. by the reward; the letter copy is not text
    for answer in ("C. twice", "C", "twice"):
        assert score_rules(f"<answer>{answer}</answer>", "C", LETTERED).acc == 1.0, answer
    assert score_rules("<answer>C. once</answer>", "C", LETTERED).acc == 0.0


def test_ground_truth_given_as_option_text() -> None:
    assert rule_accuracy("C. twice", "twice", OPTIONS) == (1.0, "")
    assert rule_accuracy("C", "C. twice", OPTIONS) == (1.0, "")
    assert rule_accuracy("A", "twice", OPTIONS) == (0.0, "")
    # an option text that starts like a letter ("A dog") is matched as text first
    animals = {"A": "A cat", "B": "A dog"}
    assert rule_accuracy("B", "A dog", animals) == (1.0, "")
    assert rule_accuracy("A dog", "A dog", animals) == (1.0, "")


def test_without_options_text_after_a_letter_cannot_be_checked() -> None:
    letter, why = choice_letter("C. twice", None)
    assert letter is None and why.startswith("extra_text") and "no options" in why
    assert choice_letter("C", None) == ("C", "")
