"""Official extraction mode: every rule of the benchmarks' own scoring code, written here from
reading that code, checked on fixture replies that exercise it. Each test names the upstream
repository, file, commit and lines the rule comes from (docs/eval.md has the same table).

Upstream snapshots read (commit = the last one touching the file):
- lmms-eval  EvolvingLMMs-Lab/lmms-eval  lmms_eval/tasks/minerva/utils.py         bec4e649
- lmms-eval  lmms_eval/tasks/videomathqa/utils.py                                  c7eaef37
- lmms-eval  lmms_eval/tasks/videomathqa/cot_postprocess.py                        d8fcb9c3
- lmms-eval  lmms_eval/tasks/videomathqa/cot_step_evaluation.py                    d8fcb9c3
- lmms-eval  lmms_eval/tasks/cgav_counting/utils.py                                cb9d7f76
- VLMEvalKit open-compass/VLMEvalKit vlmeval/dataset/CGAVCounting/utils.py         401916c0
- Video-Holmes TencentARC/Video-Holmes evaluate.py                                 a360ad63
- VCR-Bench  zhishuifeiqian/VCR-Bench eval_code/eval.py, prompt.py (4e564b77), cau_acc.py
  (5821d784); line numbers are those of each file at that commit
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from pathlib import Path
from typing import Any

import eval_fixtures as fx
import pytest

from rewatch.eval.benchmarks import ScoreOptions, get_benchmark
from rewatch.eval.benchmarks.cg_av_counting import official_error, official_number
from rewatch.eval.benchmarks.minerva import official_fallback
from rewatch.eval.benchmarks.minerva import official_letter as minerva_letter
from rewatch.eval.benchmarks.vcr_bench import (
    official_box,
    official_rule_match,
    official_time_interval,
)
from rewatch.eval.benchmarks.video_holmes import official_letter as holmes_letter
from rewatch.eval.benchmarks.videomathqa import (
    official_cot_choice,
    official_wrong_letter,
)
from rewatch.eval.benchmarks.videomathqa import official_letter as vmqa_letter
from rewatch.eval.benchmarks.videomathqa_steps import (
    official_options_text,
    official_step_metrics,
    official_step_score,
)
from rewatch.eval.run import Judgments, run_judges, score_modes
from rewatch.models.openai_compat import OpenAIChatModel
from rewatch.models.scripted_server import ScriptedTestServer, last_user_text


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    tmp = tmp_path_factory.mktemp("official")
    return tmp, fx.make_videos(tmp / "videos")


# --- MINERVA: lmms-eval lmms_eval/tasks/minerva/utils.py @ bec4e649 --------------------------

@pytest.mark.parametrize(("reply", "letter", "rule"), [
    ("The answer is B", "B", "official_explicit"),  # line 54: (answer|option)\s*(is|:)\s*X
    ("the answer is c", "C", "official_explicit"),  # re.IGNORECASE, upper-cased (line 57)
    ("I doubt (A). Option: D", "D", "official_explicit"),
    ("answer: A ... final answer is E", "E", "official_explicit"),  # the last match wins
    ("B or C, probably C", "C", "official_last_capital"),  # lines 70-73: last capital
    ("A man walks in", "A", "official_last_capital"),  # an article reads as a letter
    ("The correct answer is (B).", "B", "official_last_capital"),  # "(" breaks line 54
    ("Answer: (D)", "D", "official_last_capital"),  # prefix removed (lines 59-68)
    ("no idea", "", "none"),
])
def test_minerva_rule(reply: str, letter: str, rule: str) -> None:
    assert minerva_letter(reply) == (letter, rule)


def test_minerva_random_fallback_is_seeded_and_counted(bench_dir: tuple[Path, list[str]]
                                                       ) -> None:
    """utils.py lines 110-111: no letter -> random.choice(OPTIONS); here seeded by run seed
    and item id, counted as guessed, and the same on every rescore."""
    tmp, vids = bench_dir
    b = get_benchmark("minerva")
    items = b.load(fx.minerva(tmp, vids), tmp / "videos")
    replies = {it.id: "I cannot tell" for it in items}
    s0 = b.score(items, replies, ScoreOptions(mode="official", seed=0))
    assert s0.guessed == len(items) == 6 and s0.no_answer == 0 and s0.seed == 0
    guesses = {o.id: o.predicted for o in s0.outcomes}
    assert guesses == {it.id: official_fallback(0, it.id) for it in items}
    assert set(guesses.values()) <= set("ABCDE")
    again = b.score(list(reversed(items)), replies, ScoreOptions(mode="official", seed=0))
    assert {o.id: o.predicted for o in again.outcomes} == guesses  # order does not matter
    seeds = {tuple(o.predicted for o in b.score(items, replies, ScoreOptions(
        mode="official", seed=k)).outcomes) for k in range(8)}
    assert len(seeds) > 1  # the seed is really used
    strict = b.score(items, replies)
    assert strict.correct == 0 and strict.no_answer == 6 and strict.guessed == 0


# --- Video-Holmes: TencentARC/Video-Holmes evaluate.py @ a360ad63 -------------------------------

@pytest.mark.parametrize(("reply", "letter"), [
    ("<think>hm</think><answer>C</answer>", "C"),  # last <answer> block (line 455), any C
    ("<answer>B: the butler</answer>", "B"),  # "B:" (line 467)
    ("[D] because of the letter", "D"),  # "[D" (line 471)
    ("It is E, not A really", "A"),  # "A " is tested before any E form (lines 465-476)
    ("Answer: C", "A"),  # no "X "/"X:"/"[X" form; then any A-F: the A of "Answer"
    ("<answer>x</answer> F", ""),  # only the block counts: no letter, "WRONG"
    ("I cannot tell", ""),  # WRONG (line 490)
])
def test_video_holmes_rule(reply: str, letter: str) -> None:
    assert holmes_letter(reply)[0] == letter


# --- VideoMathQA: lmms-eval lmms_eval/tasks/videomathqa/utils.py @ c7eaef37 -------------------

@pytest.mark.parametrize(("reply", "letter"), [
    ("Answer: E", "A"),  # the first capital A-E anywhere (lines 216-219): Answer's A
    ("The best answer is C", "C"),  # prefix removed (lines 202-211)
    ("(B) 15", "B"),
    ("The correct option is D", "D"),  # that prefix is fused with another upstream: kept
    ("Best option: E", "B"),  # "Best answer:Best option:" is one string upstream: B of Best
    ("i think it is probably the fourth one of the five given options here", ""),  # > 10 words
    ("i am not sure", ""),
])
def test_videomathqa_rule(reply: str, letter: str) -> None:
    assert vmqa_letter(reply)[0] == letter


def test_videomathqa_cot_step() -> None:
    """cot_postprocess.py @ d8fcb9c3 lines 41-48: strip + upper, exactly one letter; else
    (lines 67-75) a random letter other than the answer."""
    assert official_cot_choice(" c\n", "ABCDE") == "C"
    assert official_cot_choice("C.", "ABCDE") is None
    assert official_cot_choice("None", "ABCDE") is None
    assert official_cot_choice("E", "AB") is None  # multi-binary: A or B only
    wrong = {official_wrong_letter(s, "q1", "B", "ABCDE") for s in range(30)}
    assert "B" not in wrong and len(wrong) > 1
    assert {official_wrong_letter(s, "q1#0", "A", "AB") for s in range(5)} == {"B"}


def test_videomathqa_cot_judge_end_to_end(bench_dir: tuple[Path, list[str]],
                                          tmp_path: Path) -> None:
    """Think mode, official: every reply goes to the judge with cot_postprocess.py's prompt
    (lines 17-38, 62); a judge output that is no single letter becomes a wrong letter."""
    tmp, vids = bench_dir
    b = get_benchmark("videomathqa")
    items = b.load(fx.videomathqa(tmp, vids), tmp / "videos")  # answers A, B, C, D
    replies = {"vm0": "Adding gives 0, so (A).", "vm1": "So it is 11.",
               "vm2": "I give up.", "vm3": "Answer: D"}
    outputs = {"vm0": "A", "vm1": "b", "vm2": "None", "vm3": "D"}

    def judge_reply(body: dict[str, Any]) -> str:
        text = last_user_text(body)
        return next(outputs[k] for k, r in replies.items() if r in text)

    with ScriptedTestServer(judge_reply) as srv:
        async def go() -> dict[str, str]:
            judge = OpenAIChatModel("judge", srv.base_url)
            judgments: dict[str, str] = {}
            try:
                await run_judges(b, items, replies, judgments, seed=0, think=True, judge=judge,
                                 store=Judgments(tmp_path))
            finally:
                await judge.aclose()
            return judgments

        judgments = asyncio.run(go())
    assert len(srv.requests) == 4  # one per reply, no strict-mode calls for mcq
    sent = next(b_ for b_ in srv.requests if "So it is 11." in last_user_text(b_))
    assert last_user_text(sent) == (
        "Given the original multiple-choice options and a model-generated answer containing "
        "reasoning and a final answer, identify the option that best matches the final answer "
        "and return only the corresponding letter (A, B, C, D, or E).:\n\nText:\nThe options "
        "are: ['(A) 10', '(B) 11', '(C) 12', '(D) 13', '(E) 14']\n\n The model response is: "
        "So it is 11.\n\nOnly return the letter A, B, C, D, or E. If none is found, return "
        '"None".')
    assert sent["temperature"] == 0.7 and sent["max_tokens"] == 16
    scores = score_modes(b, items, replies, judgments, seed=0, think=True)
    off = {o.id: o for o in scores["official"].outcomes}
    assert off["vm0"].correct and off["vm1"].correct and off["vm3"].correct
    assert off["vm2"].guessed and not off["vm2"].correct  # a random *wrong* letter
    assert scores["official"].guessed == 1 and scores["official"].needs_judge == 0
    # strict: vm1 has no letter, vm2 none, vm0 "(A)" and vm3 D are right
    assert scores["strict"].correct == 2 and scores["strict"].no_answer == 2
    # without the judge the official column is the CoT task's own score, flagged
    nojudge = score_modes(b, items, replies, {}, think=True)["official"]
    assert nojudge.needs_judge == 4
    # the first-capital rule on raw reasoning: vm0 "Adding" -> A (right by luck)
    assert {o.id: o.predicted for o in nojudge.outcomes}["vm0"] == "A"


# --- VideoMathQA step score: lmms-eval lmms_eval/tasks/videomathqa/cot_step_evaluation.py
# @ d8fcb9c3 ---------------------------------------------------------------------------------

_CARD = '{"matched_steps": "3/4", "final_answer_correct": 1, "critique": "Sound.", "score": 8}'


@pytest.mark.parametrize(("output", "score", "parsed"), [
    ("SCORE_CARD: " + _CARD, 8, True),  # lines 132-136
    ("  \n<think>\nmaybe SCORE_CARD: {\"score\": 2}\n</think>\n\nSCORE_CARD: "
     + _CARD + "\n", 8, True),  # stripped, then the text after the *last* marker (133)
    ('{"score": 6}', 6, True),  # no marker: the whole output (split gives it back)
    ("SCORE_CARD: {'score': 7, 'critique': 'fine', 'final_answer_correct': True}", 7,
     True),  # not JSON: ast.literal_eval, then through JSON (lines 83-85)
    ('SCORE_CARD: {"score": "7"}', 7, True),  # int() of the value (line 136)
    ('SCORE_CARD: {"score": " 9 "}', 9, True),  # int() strips spaces
    ('SCORE_CARD: {"score": "1_0"}', 10, True),  # and reads underscores
    ('SCORE_CARD: {"score": 7.9}', 7, True),  # int() truncates
    ('SCORE_CARD: {"score": true}', 1, True),
    ('SCORE_CARD: {"score": 12}', 12, True),  # no clamping to 0-10
    ('SCORE_CARD: {"score": 3, "score": 5}', 5, True),  # the last duplicate key
    ('SCORE_CARD: {"matched_steps": "2/4"}', 0, True),  # no score: .get default 0
    ('SCORE_CARD: {"score": "7.5"}', 0, False),  # int("7.5") raises: default card (129)
    ('SCORE_CARD: {"score": null}', 0, False),
    ('SCORE_CARD: {"score": NaN}', 0, False),  # json reads NaN, int() refuses it
    ('SCORE_CARD: {"score": 8, "critique": null}', 0, False),  # None.strip() raises
    ('SCORE_CARD: {"score": 8, "critique": 3}', 0, False),
    ('SCORE_CARD: {"score": 9}\nThat is my grade.', 0, False),  # trailing text: no parse
    ('```json\n{"score": 9}\n```', 0, False),  # a fenced block is not JSON
    ('**SCORE_CARD:** {"score": 9}', 0, False),  # no "SCORE_CARD: " with its one space
    ('SCORE_CARD:{"score": 9}', 0, False),
    ('score_card: {"score": 9}', 0, False),  # the marker is case-sensitive
    ('SCORE_CARD: {"score": 9} SCORE_CARD: ', 0, False),  # after the last marker: ""
    ("SCORE_CARD: [8]", 0, False),  # a list has no .get
    ("SCORE_CARD: 8", 0, False),
    ("SCORE_CARD: {'score': 8, 'seen': {1, 2}}", 0, False),  # a set: json.dumps raises
    ("", 0, False),
    ("I cannot grade this.", 0, False),
])
def test_videomathqa_step_score_rule(output: str, score: int, parsed: bool) -> None:
    assert official_step_score(output) == (score, parsed)


def test_videomathqa_step_options_as_numpy_prints_them() -> None:
    """prepare_input (lines 91-99) takes the options from the parquet through pandas, which
    gives a numpy array; the f-string prints it without commas, wrapped at 75 characters
    (checked once against pandas.read_parquet on a parquet file of these options)."""
    assert official_options_text(["(A) 10", "(B) 11", "(C) 12", "(D) 13", "(E) 14"]) == (
        "['(A) 10' '(B) 11' '(C) 12' '(D) 13' '(E) 14']")
    assert official_options_text(["(A) it's 3 cm long and quite long text here",
                                  "(B) 11 centimetres squared", "(C) 12", "(D) 13",
                                  "(E) 14"]) == (
        "[\"(A) it's 3 cm long and quite long text here\"\n"
        " '(B) 11 centimetres squared' '(C) 12' '(D) 13' '(E) 14']")


def test_videomathqa_step_mean_full_batches_only(bench_dir: tuple[Path, list[str]]) -> None:
    """compute_score (lines 110-159) with bs=8 (line 193): only full batches are scored, so
    of 10 questions with a reply the last 2 never enter the mean; rows without a result are
    skipped (lines 116-118); an unparsed grade is 0 inside the mean."""
    tmp, vids = bench_dir
    items = get_benchmark("videomathqa").load(fx.videomathqa(tmp, vids, n=11), tmp / "videos")
    replies = {it.id: "r" for it in items if it.id != "vm3"}  # vm3: no reply at all
    grades = [5, 6, 7, 8, None, 9, 10, 3, 4, 2]  # None: no score card
    judged = {f"videomathqa_step:{i}": ("no card" if g is None else
                                         f'SCORE_CARD: {{"score": {g}}}')
              for i, g in zip(replies, grades, strict=True)}
    m = official_step_metrics(items, replies, judged)
    assert m["cot_step_score"] == pytest.approx((5 + 6 + 7 + 8 + 0 + 9 + 10 + 3) / 8)
    assert m["cot_step_score_all"] == pytest.approx(54 / 10)
    assert (m["cot_step_in_mean"], m["cot_step_judged"], m["cot_step_unparsed"],
            m["cot_step_unjudged"]) == (8, 10, 1, 0)
    short = official_step_metrics(items[:7], replies, judged)  # fewer than 8: no mean
    assert "cot_step_score" not in short and short["cot_step_score_all"] == pytest.approx(
        (5 + 6 + 7 + 8 + 0 + 9) / 6)  # vm0-vm6 less vm3
    del judged["videomathqa_step:vm0"]
    assert official_step_metrics(items, replies, judged)["cot_step_unjudged"] == 1


def test_videomathqa_step_score_end_to_end(bench_dir: tuple[Path, list[str]],
                                           tmp_path: Path) -> None:
    """The official prompt (get_user_prompt, lines 56-76: one user message, the annotation's
    question, options, `json.dumps(steps, indent=2)` and answer, then the raw reply), upstream's
    temperature and token limit (line 173), grades kept in judgments.jsonl and reused, and the
    step score in the official metrics only when `cot_score` is on."""
    tmp, vids = bench_dir
    b = get_benchmark("videomathqa")
    items = b.load(fx.videomathqa(tmp, vids, n=9), tmp / "videos")
    replies = {it.id: f"Reading the board, x is {i}; adding gives (B)." for i, it in
               enumerate(items)}
    grades = dict(zip([it.id for it in items], [8, 6, 10, 4, 0, 7, 9, 5, 3],
                      strict=True))

    def judge_reply(body: dict[str, Any]) -> str:
        text = last_user_text(body)
        if not text.startswith("\nINSTRUCTIONS: "):
            return "B"  # the CoT answer extraction (cot_postprocess.py)
        rid = next(k for k, r in replies.items() if r in text)
        return ("<think>\nThe steps match.\n</think>\n\nSCORE_CARD: {\"matched_steps\": "
                f'"2/2", "final_answer_correct": 1, "critique": "ok", "score": {grades[rid]}}}')

    store = Judgments(tmp_path)
    with ScriptedTestServer(judge_reply) as srv:
        async def go(judgments: dict[str, str]) -> int:
            judge = OpenAIChatModel("scripted", srv.base_url)
            try:
                return await run_judges(b, items, replies, judgments, seed=0, think=True,
                                        judge=judge, store=store, cot_score=True)
            finally:
                await judge.aclose()

        judgments: dict[str, str] = {}
        assert asyncio.run(go(judgments)) == 18  # a CoT extraction and a grade per reply
        steps = [r for r in srv.requests if last_user_text(r).startswith("\nINSTRUCTIONS: ")]
        assert len(steps) == 9
        reused = store.valid(replies)
        assert asyncio.run(go(reused)) == 0  # every grade is reused from judgments.jsonl
        assert len(srv.requests) == 18
    sent = next(r for r in steps if replies["vm1"] in last_user_text(r))
    assert [m["role"] for m in sent["messages"]] == ["user"]
    assert sent["temperature"] == 0.6 and sent["max_tokens"] == 32768
    text = last_user_text(sent)
    assert text.startswith("\nINSTRUCTIONS: \nYou are a intelligent assistant for grading math "
                           "question solutions. You will be given:\n- A mathematical question")
    assert "- Score = (matching steps / N) × 10, rounded to nearest whole number. \n" in text
    assert text.endswith(
        "\n\nQUESTION: What is x in problem 1?\n\n"
        "OPTIONS: ['(A) 10' '(B) 11' '(C) 12' '(D) 13' '(E) 14']\n\n"
        'GROUND TRUTH STEPS:\n"1. Read x from the board in problem 1.\\n2. Add 10 \\u00d7 1."'
        "\n\nCORRECT FINAL ANSWER:\nB\n\nPREDICTION:\n" + replies["vm1"] + "\n\n"
        "Now evaluate this prediction and return the response in the specified format: "
        'SCORE_CARD: {"matched_steps": "X/N", "final_answer_correct": <0 or 1>, "critique": '
        '"<2–3 sentence summary>", "score": <0–10>}\n\n')
    assert {k for k in reused if k.startswith("videomathqa_step:")} == {
        f"videomathqa_step:{i}" for i in replies}
    scores = score_modes(b, items, replies, reused, seed=0, think=True, cot_score=True)
    m = scores["official"].metrics
    assert m["cot_step_score"] == pytest.approx((8 + 6 + 10 + 4 + 0 + 7 + 9 + 5) / 8)
    assert m["cot_step_score_all"] == pytest.approx(52 / 9)
    assert "cot_step_score" not in scores["strict"].metrics
    plain = score_modes(b, items, replies, reused, seed=0, think=True)["official"].metrics
    assert "cot_step_score" not in plain


_STEP_OPTIONS = re.compile(r"\n\nOPTIONS: (.*)\n\nGROUND TRUTH STEPS:\n")
_STEP_ANSWER = re.compile(r"\n\nCORRECT FINAL ANSWER:\n(.*)\n\nPREDICTION:\n(.*)\n\nNow evaluate",
                          re.S)


def test_videomathqa_mbin_step_score(bench_dir: tuple[Path, list[str]], tmp_path: Path) -> None:
    """cot_step_evaluation.py @ d8fcb9c3 run on the multi_binary parquet: every pair row is a
    sample (compute_score, lines 113-120), `matched` holds all the results of the row's
    question_id (line 115) and prepare_input(sample, matched[0]) (lines 91-99, 119) takes the
    question, options, steps and answer from the pair row but the prediction from the
    question's first pair; the mean runs over pair rows in full batches of 8 (line 193)."""
    tmp, vids = bench_dir
    b = get_benchmark("videomathqa-mbin")
    items = b.load(fx.videomathqa(tmp, vids, binary=True, n=4), tmp / "videos")
    assert len(items) == 16  # 4 questions x 4 pairs
    # vm1's first pair failed (no reply): its first *result* is vm1#1's; vm2 has none at all
    replies = {it.id: f"Pair {it.id}: the reasoning ends in (A)." for it in items
               if it.id != "vm1#0" and it.group != "vm2"}
    graded: list[tuple[str, str, str]] = []  # (options, answer letter, prediction) per call

    def judge_reply(body: dict[str, Any]) -> str:
        text = last_user_text(body)
        if not text.startswith("\nINSTRUCTIONS: "):
            return "A"  # the CoT answer extraction (cot_postprocess.py)
        options = _STEP_OPTIONS.search(text)
        answer = _STEP_ANSWER.search(text)
        assert options and answer
        graded.append((options.group(1), answer.group(1), answer.group(2)))
        # the grade names the pair whose options were sent: 10 * distractor number + question
        pair = next(it for it in items if official_options_text(it.extra["options_raw"])
                    == options.group(1) and it.question in text)
        return f'SCORE_CARD: {{"score": {int(pair.id[-1]) + int(pair.group[2:])}}}'

    store = Judgments(tmp_path)
    with ScriptedTestServer(judge_reply) as srv:
        async def go(judgments: dict[str, str], current: dict[str, str]) -> int:
            judge = OpenAIChatModel("scripted", srv.base_url)
            try:
                return await run_judges(b, items, current, judgments, seed=0, think=True,
                                        judge=judge, store=store, cot_score=True)
            finally:
                await judge.aclose()

        judgments: dict[str, str] = {}
        assert asyncio.run(go(judgments, replies)) == 11 + 12  # 11 extractions, 12 pair rows
        assert asyncio.run(go(store.valid(replies), replies)) == 0  # all reused
        # a changed reply of vm1#1 invalidates the four grades made with it (vm1#0's too)
        changed = {**replies, "vm1#1": "A new reply: (B)."}
        assert asyncio.run(go(store.valid(changed), changed)) == 1 + 4
    rows = {it.id: it for it in items}
    assert len(graded) == 16
    first_round = graded[:12]
    expected = sorted(
        (official_options_text(rows[pid].extra["options_raw"]), rows[pid].answer,
         replies[first]) for pid, first in
        [(f"vm0#{k}", "vm0#0") for k in range(4)] + [(f"vm1#{k}", "vm1#1") for k in range(4)]
        + [(f"vm3#{k}", "vm3#0") for k in range(4)])
    assert sorted(first_round) == expected  # each pair's own options and answer, first reply
    assert ("['(A) 12' '(B) 11']", "B", "A new reply: (B).") in graded[12:]
    scores = score_modes(b, items, changed, store.valid(changed), seed=0, think=True,
                         cot_score=True)
    m = scores["official"].metrics
    # rows in file order: vm0#0-3, vm1#0-3 fill the one full batch; vm3's four are left out
    assert m["cot_step_score"] == pytest.approx(((0 + 1 + 2 + 3) + (1 + 2 + 3 + 4)) / 8)
    assert m["cot_step_score_all"] == pytest.approx(((0 + 1 + 2 + 3) + (1 + 2 + 3 + 4)
                                                     + (3 + 4 + 5 + 6)) / 12)
    assert (m["cot_step_in_mean"], m["cot_step_judged"], m["cot_step_unjudged"]) == (8, 12, 0)
    assert "cot_step_score" not in scores["strict"].metrics
    assert m["pairs"] == 16  # the multi-binary accuracy is unchanged beside it
    # an mcq file expanded into pairs here: each pair's prompt states its own answer letter
    expanded = b.load(fx.videomathqa(tmp, vids, n=2), tmp / "videos")
    reqs = b.judge_requests(expanded, {it.id: "r" for it in expanded},
                            ScoreOptions(mode="official", cot_score=True))
    stated = [m.group(1) for r in reqs if (m := _STEP_ANSWER.search(r.prompt))]
    assert stated == [it.answer for it in expanded] == ["A", "B", "A", "B"] * 2


def test_multi_binary_official(bench_dir: tuple[Path, list[str]]) -> None:
    """videomathqa_multi_binary_aggregate_results (utils.py lines 299-347): grouped by
    question_id, a question counts only if all its pairs are right."""
    tmp, vids = bench_dir
    b = get_benchmark("videomathqa-mbin")
    items = b.load(fx.videomathqa(tmp, vids, binary=True), tmp / "videos")
    replies = {it.id: it.answer for it in items}
    assert items[1].id == "vm0#1" and items[1].answer == "B"
    replies["vm0#1"] = "Answer: B"  # official: A (first capital), which sinks vm0; strict: B
    s = score_modes(b, items, replies, {})
    assert (s["official"].correct, s["strict"].correct) == (3, 4)
    assert s["official"].metrics["pairs"] == 16


# --- CG-AV-Counting: lmms-eval lmms_eval/tasks/cgav_counting/utils.py @ cb9d7f76 ---------------

@pytest.mark.parametrize(("reply", "pred", "rule"), [
    ("<answer>7</answer>", 7.0, "official_first_number"),  # lines 220-222
    ("In 2 scenes I count 5 birds", 2.0, "official_first_number"),  # the first number
    ("1,024 frames", 1024.0, "official_first_number"),  # commas removed (line 217)
    ("-2", -2.0, "official_first_number"),
    ("2.5", 2.5, "official_first_number"),
    ("<think>maybe 3</think>There are 4", 4.0, "official_first_number"),  # after </think>
    ("I count seven.", 7.0, "official_number_words_sum"),  # lines 223-227
    ("one or two", 3.0, "official_number_words_sum"),  # the *sum* of the words
    ("twenty-one", 21.0, "official_number_words_sum"),
    ("one hundred and five", 6.0, "official_number_words_sum"),  # no "hundred" upstream
    ("none at all", 0.0, "official_no_number_is_0"),  # line 226: no number is 0
    ("", 0.0, "official_no_number_is_0"),
])
def test_counting_number_rule(reply: str, pred: float, rule: str) -> None:
    assert official_number(reply) == (pred, rule)


@pytest.mark.parametrize(("pred", "gt", "err"), [
    (7, 5, 2),
    (300, 5, 10),  # 295 > max(10, 100): replaced by 2*gt (line 235)
    (105, 5, 100),  # exactly max(2*gt, 100): kept
    (250, 80, 160),  # 170 > max(160, 100): 160
    (150, 0, 0),  # gt 0: an error over 100 becomes 0
    (0, 120, 120),
])
def test_counting_clipping(pred: float, gt: float, err: float) -> None:
    assert official_error(pred, gt) == err


def test_counting_metrics_official_vs_strict(bench_dir: tuple[Path, list[str]]) -> None:
    """Acc |err| <= 1e-5, OBOA |err| <= 1, MAE/RMSE over all questions with clipping
    (lines 236-278); strict: MAE/RMSE over parsed replies, unclipped."""
    tmp, vids = bench_dir
    b = get_benchmark("cg-av-counting")
    items = b.load(fx.counting(tmp, vids), tmp / "videos")  # answers 1..5
    replies = {"0": "1", "1": "I see 3, maybe 4", "2": "no idea", "3": "999", "4": "5.5"}
    s = score_modes(b, items, replies, {})
    off, st = s["official"].metrics, s["strict"].metrics
    # official preds 1, 3, 0, 999, 5.5: errors 0, 1, 3, 995->8, 0.5
    assert off["acc"] == 20.0 and off["oboa"] == 60.0
    assert off["mae"] == pytest.approx((0 + 1 + 3 + 8 + 0.5) / 5)
    assert off["rmse"] == pytest.approx(math.sqrt((0 + 1 + 9 + 64 + 0.25) / 5))
    # strict: "I see 3, maybe 4" is ambiguous and "5.5" no integer: 3 parsed (0, 3 no, 999)
    assert st["parsed"] == 2 and st["mae"] == pytest.approx((0 + 995) / 2)
    assert s["official"].no_answer == 1 and s["strict"].no_answer == 3


# --- VCR-Bench: zhishuifeiqian/VCR-Bench eval_code/eval.py @ 4e564b77 --------------------------

@pytest.mark.parametrize(("text", "value"), [
    ("[12, 30]", (12.0, 30.0)),  # lines 60-69: literal list of two numbers
    ("[12.5, 30]", (12.5, 30.0)),
    ("[True, 2]", (1.0, 2.0)),  # bool is an int to Python, so upstream accepts it
    ("12-30", None), ("(12, 30)", None), ("[1, 2, 3]", None), ("['1', 2]", None),
    ("__import__('os')", None),  # literal_eval evaluates no code
])
def test_vcr_time_interval(text: str, value: tuple[float, float] | None) -> None:
    assert official_time_interval(text) == value


@pytest.mark.parametrize(("text", "ok"), [
    ("[10, 20, 30, 40]", True), ("[ 1,2,3,4]", True),  # lines 71-83
    ("[10.5, 20, 30, 40]", False),  # int() only
    ("[1,2,3,4] ", False),  # must end with "]"
    ("[1,2,3]", False),
])
def test_vcr_box(text: str, ok: bool) -> None:
    assert (official_box(text) is not None) == ok


def test_vcr_match_rules() -> None:
    """match_answer (lines 165-198): IoU only when *both* sides parse; else the LLM grade."""
    assert official_rule_match("[10, 20]", "[11, 20]") is True  # tIoU 0.9 > 0.7
    assert official_rule_match("[0, 10]", "[5, 15]") is False  # 1/3
    assert official_rule_match("[0, 0, 10, 10]", "[0, 0, 10, 9]") is True  # IoU 0.9 > 0.5
    assert official_rule_match("[10, 10, 0, 0]", "[10, 10, 0, 0]") is False  # no reordering
    assert official_rule_match("[10, 20]", "from 10 to 20") is None
    # the bug issue 14 names: a score "2-1" vs "lost 1-2" is no span on either side
    assert official_rule_match("2-1", "lost 1-2") is None


def test_vcr_span_rule_in_strict_mode(bench_dir: tuple[Path, list[str]]) -> None:
    """Strict: a reference "2-1" is text (judged), never a span with IoU 1."""
    tmp, vids = bench_dir
    rows = json.loads(fx.vcr(tmp, vids).read_text())
    rows[3]["answer"] = "2-1"
    rows[3]["question"] = "What was the final score?"
    data = tmp / "vcr_score.json"
    data.write_text(json.dumps(rows))
    b = get_benchmark("vcr-bench")
    items = b.load(data, tmp / "videos")
    assert items[3].extra["answer_type"] == "text"
    s = b.score(items, {"4": "They lost 1-2."})
    assert s.correct == 0 and s.unjudged == 1


def test_vcr_official_end_to_end(bench_dir: tuple[Path, list[str]], tmp_path: Path) -> None:
    """Official VCR-Bench with a scripted judge: the extraction prompt is eval.py's (prompt.py
    part1 + part2, lines 159-163), IoU decides spans and boxes, the grading prompt decides the
    rest and only an output of exactly "1" counts (cau_acc.py line 18)."""
    tmp, vids = bench_dir
    b = get_benchmark("vcr-bench")
    items = b.load(fx.vcr(tmp, vids), tmp / "videos")
    replies = {"1": "It is the circle.", "2": "From 1.6 s to 3 s.", "3": "top left",
               "4": "Red, clearly."}
    extracted = {"1": "A", "2": "[1.6, 3.0]", "3": "[12, 12, 50, 50]", "4": "red"}
    grades = {"A": "1", "red": "1 "}  # "1 " is not "1": upstream counts it wrong

    def judge(body: dict[str, Any]) -> str:
        text = last_user_text(body)
        if text.startswith("You are an AI assistant who will help me to extract"):
            return next(extracted[k] for k, r in replies.items() if f"Answer: {r}\n" in text)
        if "grade answers to a question about a video" in text:  # our strict judge
            return '{"correct": true}'
        assert text.startswith("You are an AI assistant who will help me to judge")
        return next(g for k, g in grades.items() if f"[Model Answer]: {k}\n" in text)

    with ScriptedTestServer(judge) as srv:
        async def go() -> dict[str, str]:
            jm = OpenAIChatModel("judge", srv.base_url)
            out: dict[str, str] = {}
            try:
                await run_judges(b, items, replies, out, seed=0, think=False, judge=jm,
                                 store=Judgments(tmp_path))
            finally:
                await jm.aclose()
            return out

        judgments = asyncio.run(go())
    texts = [last_user_text(r) for r in srv.requests]
    official = (Path(__file__).parent.parent / "rewatch/eval/prompts/official_vcr_extract.txt"
                ).read_text()
    q1 = items[0].question
    assert (official.replace("{question}", q1).replace("{response}", replies["1"]) in texts)
    assert sum(t.startswith("You are an AI assistant who will help me to extract")
               for t in texts) == 4
    # graded by the LLM: the MC item and the text item; spans and boxes by IoU; plus our
    # strict judge once for the free-text item
    assert sum(t.startswith("You are an AI assistant who will help me to judge")
               for t in texts) == 2
    assert sum("grade answers to a question about a video" in t for t in texts) == 1
    s = score_modes(b, items, replies, judgments)["official"]
    got = {o.id: o.correct for o in s.outcomes}
    assert got == {"1": True, "2": True, "3": True, "4": False}  # "1 " != "1"
    assert s.needs_judge == 0
    # the stored judgments are reused: a rescore sends nothing
    stored = Judgments(tmp_path).valid(replies)
    assert stored == judgments


def test_docs_mode_table_is_current(bench_dir: tuple[Path, list[str]]) -> None:
    """docs/eval.md shows MODE_CASES scored both ways; regenerate and compare, and check the
    cells the two modes are documented to disagree on."""
    tmp, vids = bench_dir
    rows = fx.mode_table(tmp, vids)
    got = {name: (off, st) for name, off, st in rows}
    assert len(got) == 6
    # Holmes: "Answer: B" and "It is D, not A really" read as A officially, right strictly
    assert got["video-holmes"][0]["correct"] == 4 and got["video-holmes"][1]["correct"] == 6
    # VideoMathQA: "Answer: B" -> A and "Best option: D" -> B officially
    assert got["videomathqa"][0]["correct"] == 2 and got["videomathqa"][1]["correct"] == 4
    # counting: 999 for 4 is clipped to 8 officially; strict MAE over 4 parsed replies
    assert got["cg-av-counting"][0]["metrics"]["mae"] == pytest.approx((0 + 1 + 4 + 8 + 5) / 5)
    assert got["cg-av-counting"][1]["metrics"]["mae"] == pytest.approx((0 + 1 + 4 + 995) / 4)
    doc = (Path(__file__).parent.parent / "docs/eval.md").read_text()
    assert fx.mode_table_markdown(rows) in doc


def _steps(*pairs: tuple[str, str]) -> str:
    return "```json\n" + json.dumps([{"step": "s", "step_type": t, "judgment": j}
                                     for t, j in pairs]) + "\n```"


def test_vcr_cot_score(bench_dir: tuple[Path, list[str]]) -> None:
    """VCR-Bench's CoT score: the official recall and precision prompts (eval.py lines
    200-299, formatted with str.format as upstream), step counts from the ```json block, per
    item ratios with background steps left out of "overall", then cau_total.py's means and
    F1 over the items that have a value."""
    tmp, vids = bench_dir
    b = get_benchmark("vcr-bench")
    items = b.load(fx.vcr(tmp, vids), tmp / "videos")[:2]
    replies = {"1": "The circle {appears} first.", "2": "From 1.6 s to 3 s."}
    opts = ScoreOptions(mode="official", cot_score=True)
    reqs = {r.key: r for r in b.judge_requests(items, replies, opts)}
    assert {"vcr_recall:1", "vcr_precision:1", "vcr_recall:2", "vcr_extract:2"} <= set(reqs)
    rec = reqs["vcr_recall:1"].prompt
    assert rec.startswith("You are an expert system for verifying solutions to video-based")
    assert '  {\n    "step": ground truth middle step,' in rec  # {{ }} became { }
    assert rec.endswith("[Solution]\nThe circle {appears} first.\n\n[Ground Truth Information]"
                        "\n['r1']\n")  # the prompt's own final newline
    assert "[Answer]\nA\n" in rec
    v, lg, bg = "Video Description Steps", "Logical Inference Steps", "Background Review Steps"
    judged = {
        "vcr_recall:1": _steps((v, "Matched"), (v, "Matched"), (v, "Unmatched"),
                               (lg, "Matched"), (bg, "Unmatched")),
        "vcr_precision:1": _steps((v, "Matched"), (v, "Matched"), (v, "Wrong"),
                                  (lg, "Redundant")),
        "vcr_recall:2": "I think all steps match.",  # no ```json block: upstream re-asks
        "vcr_precision:2": _steps(),
    }
    m = b.score(items, replies, ScoreOptions(mode="official", cot_score=True,
                                             judgments=judged)).metrics
    # item 1: overall recall (2 + 1) / (3 + 1), precision 2 / (2 + 1); item 2 has neither
    assert m["cot_overall_recall"] == pytest.approx(75.0)
    assert m["cot_overall_precision"] == pytest.approx(200 / 3)
    assert m["cot_overall_f1"] == pytest.approx(100 * 12 / 17)
    assert m["cot_Video_recall"] == pytest.approx(200 / 3)
    assert m["cot_logic_precision"] == 0.0  # no item has logic Matched + Wrong > 0
    assert m["cot_judged"] == 1
    assert "cot_overall_f1" not in b.score(items, replies, ScoreOptions(mode="official")).metrics
