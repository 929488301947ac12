"""One reader per text form: every stage that reads a timestamp or a number in words gives the
same answer, because they all call rewatch.text."""

from __future__ import annotations

import re

import pytest

from rewatch.eval.extract import extract_number, numbers_in
from rewatch.report.viewer import highlight_chain
from rewatch.reward.answers import parse_count
from rewatch.synth.qa_filters import normalize_answer
from rewatch.synth.tools import parse_time, parse_timestamp
from rewatch.text import clock_seconds, word_number
from rewatch.truth import numbers_in as truth_numbers


@pytest.mark.parametrize("text,value", [
    ("one hundred and five", 105), ("twenty-one", 21), ("a hundred", 100), ("seven", 7),
    ("two thousand three hundred", 2300),
])
def test_a_number_in_words_is_the_same_number_everywhere(text, value):
    assert word_number(text) == value
    assert parse_count(text) == (value, "")                       # reward
    assert extract_number(f"<answer>{text}</answer>").value == str(value)  # eval
    assert extract_number(f"The answer is {text}.").value == str(value)
    assert numbers_in(text) == truth_numbers(text) == [value]     # eval, ground truth
    assert normalize_answer(text) == str(value)                   # Stage 2 answer matching


@pytest.mark.parametrize("stamp,value", [("1:02:03", 3723.0), ("62:03", 3723.0), ("65.5", 65.5),
                                         ("01:05", 65.0)])
def test_a_timestamp_is_the_same_time_everywhere(stamp, value):
    from rewatch.eval.extract import extract_span

    assert clock_seconds(stamp) == parse_time(stamp) == value     # tools
    assert parse_timestamp(f"{stamp}-{stamp}") == (value, value)
    assert extract_span(f"<answer>{stamp} to {stamp}</answer>") == (value, value)  # eval


def test_the_viewer_links_a_time_to_the_caption_line_it_names():
    html = str(highlight_chain("at 1:02:03 and 62:03", "v", [0.0, 3723.0]))
    assert re.findall(r'href="#v-l(\d)"', html) == ["1", "1"]


def test_each_parser_has_one_implementation():
    import rewatch.eval.extract as extract
    import rewatch.reward.answers as answers
    import rewatch.synth.qa_filters as qa_filters
    import rewatch.synth.tools as tools
    import rewatch.text as text
    import rewatch.truth as truth

    assert extract.numbers_in is truth.numbers_in is text.numbers_in
    assert extract.word_number is text.word_number
    for module in (extract, answers, qa_filters, tools, truth):
        assert not hasattr(module, "seconds") and not hasattr(module, "_word_numbers")
        assert not hasattr(module, "_NUMBERS") and not hasattr(module, "_NUMBER_WORDS")


def test_prompt_files_have_one_loader():
    import rewatch.reward.judges as judges
    import rewatch.synth.caption as caption
    import rewatch.synth.cot_agents as cot
    import rewatch.synth.cot_convert as convert
    import rewatch.synth.qa_filters as qa_filters
    from rewatch.eval.inputs import load_prompt as eval_prompt
    from rewatch.text import load_prompt

    assert caption.load_prompt is qa_filters.load_prompt is cot.load_prompt is load_prompt
    assert convert.load_prompt is load_prompt
    assert judges.load_prompt is load_prompt and not hasattr(cot, "prompt")
    assert eval_prompt("text_proxy") == load_prompt("text_proxy.txt", "rewatch.eval").rstrip()
