"""validate_chain: a converted chain is kept only when it says nothing its trajectory did not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rewatch.schema import CoTStep
from rewatch.synth.cot_convert import render_chain
from rewatch.synth.cot_validate import check_tags, unsupported_words, validate_chain

TRAJ = [
    CoTStep(thought="find it", action='segment_retrieval("red circle appears")',
            observation="At 00:01-00:02: a red circle appears on a navy background"),
    CoTStep(thought="look closer", action='segment_query("00:01")',
            observation="At 00:01-00:02: a red circle moving right on a navy background"),
    CoTStep(thought="done", final_answer="B"),
]
CONTEXT = ["What colour is the circle that appears at 00:01?", "blue", "red", "green", "yellow"]


def chain(answer: str = "B", obs2: str | None = None, conclusion: str = "So it is red.") -> str:
    steps = [s.model_copy() for s in TRAJ[:2]]
    if obs2 is not None:
        steps[1].observation = obs2
    return render_chain(steps, ["I search for the circle.", "I re-watch 00:01."], conclusion,
                        answer)


def check(text: str, answer: str = "B"):
    return validate_chain(text, TRAJ, answer, 12.0, context=CONTEXT)


def test_a_faithful_chain_passes():
    text = chain()
    assert text.endswith("So it is red.\n<answer>B</answer>")
    assert check(text).ok


def test_observation_with_an_added_fact_is_rejected():
    r = check(chain(obs2="At 00:01-00:02: a red circle moving right on a navy background "
                         "next to a blue square"))
    assert r.reason == "observation_not_in_trajectory" and "blue" in r.detail


def test_wrong_final_answer_is_rejected():
    r = check(chain(answer="C"))
    assert r.reason == "wrong_answer" and "truth B" in r.detail


@pytest.mark.parametrize("text,says", [
    ("<action>x</action>\n<answer>B</answer>", "no <observation>"),
    ("<action>a<observation>b</observation></action><answer>B</answer>", "opened inside"),
    ('<action>segment_query("00:01")</action><observation>b</observation>', "exactly one"),
    ("<observation>b</observation><answer>B</answer>", "does not follow"),
    ('<action>q</action><observation>b</observation><answer>B</answer> and more', "must end"),
    ("<action>q</action><observation>b</observation><answer>B</answer></answer>", "closes"),
    ("<action>q</action><observation>b<answer>B</answer>", "opened inside"),
])
def test_unbalanced_or_misordered_tags_are_rejected(text, says):
    assert says in (check_tags(text) or "")
    assert check(text).reason == "unbalanced_tags"


def test_timestamps_that_do_not_exist_in_the_video_are_rejected():
    r = check(chain(conclusion="At 03:40 it is red."))
    assert r.reason == "timestamp_not_in_video" and "03:40" in r.detail
    traj = [CoTStep(thought="t", action='segment_query("07:00")', observation="nothing"),
            *TRAJ]
    text = render_chain([traj[0]], ["I jump ahead."], "So it is red.", "B")
    assert validate_chain(text, traj, "B", 12.0).reason == "timestamp_not_in_video"


def test_an_action_the_trajectory_never_took_is_rejected():
    text = chain().replace('segment_query("00:01")', 'segment_query("00:05")')
    assert check(text).reason == "action_not_in_trajectory"


def test_prose_that_states_an_unobserved_video_fact_is_rejected():
    r = check(chain(conclusion="It is red, and later a yellow square appears."))
    assert r.reason == "prose_adds_facts" and "square" in r.detail
    # reasoning words that are not facts of the video are free
    assert check(chain(conclusion="Therefore, having verified it, it is red.")).ok
    assert check(chain(conclusion="As mentioned, note that this corresponds to red.")).ok
    # ... but a word of a change the lines never show is a fact
    r = check(chain(conclusion="As noted, it changed to a different location, so red."))
    assert r.reason == "prose_adds_facts" and {"changed", "different"} <= set(
        r.detail.removeprefix("the reasoning states ").removesuffix(", never observed")
        .split(", "))


def test_prose_that_invents_facts_the_caption_never_mentions_is_rejected():
    r = check(chain(conclusion="The angry chef smashes a green bottle and a giraffe appears."))
    assert r.reason == "prose_adds_facts"
    assert {"angry", "chef", "smashes", "bottle", "giraffe"} <= set(
        r.detail.removeprefix("the reasoning states ").removesuffix(", never observed")
        .split(", "))
    assert check(chain(conclusion="I counted it twice, so it is red.")).reason == "prose_adds_facts"


def test_nouns_and_adverbs_of_observed_words_are_no_new_facts():
    evidence = ["A red circle moves right and appears, quick"]
    said = "The movement and appearance of the circle, quickly, and its movements"
    assert unsupported_words(said, evidence) == []
    # ... but only of words the evidence holds: a derived word of something unseen is new
    assert unsupported_words("Its rotation and brightness", evidence) == ["rotation",
                                                                          "brightness"]


def test_plain_reasoning_sentences_pass():
    steps = [s.model_copy() for s in TRAJ[:2]]
    text = render_chain(steps, ["I re-watch this part to check it."] * 2,
                        "The observations settle the question.", "B")
    assert check(text).ok
    text = render_chain(steps, ["I need to find the circle.", "I check 00:01 to confirm it."],
                        "Because the circle is red, the answer is B, so it is red.", "B")
    assert check(text).ok


def test_a_real_kept_chain_passes():
    """The chain the embedded default kept on the demo (tests/data/demo_run, captured once)."""
    run = Path(__file__).parent / "data" / "demo_run"
    rec = json.loads((run / "cot.jsonl").read_text().splitlines()[0])
    duration = json.loads((run / "captions.jsonl").read_text().splitlines()[0])["duration"]
    traj = [CoTStep.model_validate(s) for s in rec["trajectory"]]
    r = validate_chain(rec["cot"], traj, rec["answer"], duration,
                       context=[rec["question"], *rec["options"].values()])
    assert r.ok, r


def test_a_chain_without_actions_is_rejected():
    assert check("It is red.\n<answer>B</answer>").reason == "no_actions"


def test_a_kept_chain_has_full_format_reward():
    from rewatch.reward.parse import parse_response

    parsed = parse_response(chain())
    assert parsed.fmt == 1.0 and parsed.answer == "B"
    assert [s.action for s in parsed.steps] == [s.action for s in TRAJ[:2]]
