"""One reading of an option-letter answer (rewatch.text.option_letter), shared by the reward's
r_acc, Stage 3's chain check and eval's strict mode: on the answers below the three agree.
Eval's official mode (each benchmark's own quirks) is tested in test_eval_official.py."""

from __future__ import annotations

import pytest

from rewatch.eval.extract import extract_choice
from rewatch.reward.answers import rule_accuracy
from rewatch.schema import CoTStep
from rewatch.synth.cot_convert import render_chain
from rewatch.synth.cot_validate import validate_chain
from rewatch.text import letters_named, option_letter

OPTIONS = {"A": "once", "B": "never", "C": "twice", "D": "four times"}
TRAJ = [
    CoTStep(thought="find it", action='segment_retrieval("the man nods")',
            observation="At 00:01-00:02: the man nods twice"),
    CoTStep(thought="done", final_answer="C"),
]
CONTEXT = ["How many times does the man nod?", *OPTIONS.values()]


def three_readings(answer: str) -> tuple[float | None, str | None, bool]:
    """(reward r_acc, eval strict letter, chain kept) for `<answer>{answer}</answer>`; truth C."""
    acc, _ = rule_accuracy(answer, "C", OPTIONS)
    ev = extract_choice(f"<think>counting</think><answer>{answer}</answer>", OPTIONS).value
    chain = render_chain(TRAJ[:1], ["I search for the man."], "So the man nods twice.", answer)
    kept = validate_chain(chain, TRAJ, "C", 12.0, context=CONTEXT, options=OPTIONS).ok
    return acc, ev, kept


@pytest.mark.parametrize("answer", ["C", "(C)", "C.", "C. twice", "C: twice", "(C) twice",
                                    "C) Twice.", "twice"])
def test_a_letter_with_its_own_option_text_is_correct_everywhere(answer: str) -> None:
    assert three_readings(answer) == (1.0, "C", True)


@pytest.mark.parametrize("answer", ["C. once", "C. four times", "C or D", "C D", "C. twice or D",
                                    "(C) (D)"])
def test_another_options_text_or_a_second_letter_is_wrong_everywhere(answer: str) -> None:
    assert three_readings(answer) == (0.0, None, False)


def test_a_letter_with_other_text_differs_by_design() -> None:
    # the reward and the kept chains want the letter (the policy is trained on that format);
    # eval strict reads what other models write after a letter, unless it names another option
    assert three_readings("C because he nods twice") == (0.0, "C", False)
    assert option_letter("C because he nods twice", OPTIONS)[1].startswith("extra_text")
    assert option_letter("C because he nods twice", OPTIONS, extra_text=True) == ("C", "")


def test_reasons_and_letters() -> None:
    assert option_letter("C. once", OPTIONS)[1].startswith("other_option_text: C")
    assert option_letter("C or D", OPTIONS)[1].startswith("multiple_options")
    assert option_letter("E", OPTIONS)[1].startswith("not_an_option")
    assert option_letter("c", OPTIONS)[1].startswith("lowercase_letter")
    assert option_letter("Ｃ", OPTIONS)[1].startswith("fullwidth_letter")
    # "A man" is the article; "(A)" and a final "A" are letters; "E-mail" is a word
    assert letters_named("A man waves to B", "ABCD") == {"B"}
    assert letters_named("(A) man, or A", "ABCD") == {"A"}
    assert letters_named("E-mail from C", "ABCDE") == {"C"}
