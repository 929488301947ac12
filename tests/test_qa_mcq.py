"""Multiple-choice reformulation: letter balance over many items, option placement, the checks
that reject malformed items, and distractor cleaning."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from rewatch.store import JsonlFile, stable_id
from rewatch.synth.mcq import (
    LetterBalancer,
    clean_distractors,
    letters_for,
    place_options,
    validate_mcq,
)


def test_letters_balanced_over_1000_items(tmp_path):
    """1000 items in groups of 1-4 per question: every letter within one of n/5."""
    rng = random.Random(7)
    bal = LetterBalancer(5, seed=3)
    answers = []
    made = 0
    while made < 1000:
        qid = stable_id("q", made)
        for j in range(min(rng.randint(1, 4), 1000 - made)):
            iid = stable_id(qid, j)
            letter = bal.choose(iid)
            distractors = [f"wrong {k} of {made}" for k in range(4)]
            opts = place_options(f"right {made}", distractors, letter, iid)
            assert validate_mcq(opts, letter, 5) is None
            assert opts[letter] == f"right {made}"
            answers.append(letter)
            made += 1
    counts = Counter(answers)
    assert sorted(counts) == list("ABCDE")
    assert max(counts.values()) - min(counts.values()) <= 1
    # a rerun picks up the balance from mcq.jsonl (here: a file skewed towards A)
    f = JsonlFile(tmp_path / "mcq.jsonl")
    for i in range(10):
        f.append({"id": str(i), "answer": "A"})
    again = LetterBalancer.from_file(f, 5)
    picks = Counter(again.choose(str(i)) for i in range(40))
    assert picks["A"] == 0 and all(picks[x] == 10 for x in "BCDE")


def test_placement_is_seeded_and_varies():
    distractors = ["red", "blue", "green", "pink"]
    a = place_options("yellow", distractors, "C", "item-1", seed=0)
    assert a == place_options("yellow", distractors, "C", "item-1", seed=0)
    orders = {tuple(place_options("yellow", distractors, "C", f"item-{i}").values())
              for i in range(30)}
    assert len(orders) > 5 and all(o[2] == "yellow" for o in orders)


def test_malformed_items_are_named():
    assert validate_mcq({"A": "red", "B": "blue"}, "C").startswith("answer_not_among_options")
    assert validate_mcq({"A": "red", "B": "Red!"}, "A").startswith("duplicate_options")
    assert validate_mcq({"A": "red", "C": "blue"}, "A").startswith("letters_not_in_order")
    assert validate_mcq({"A": "red", "B": " "}, "A") == "empty_option"
    assert validate_mcq({"A": "red", "B": "blue"}, "A", 5).startswith("wrong_option_count")
    assert validate_mcq(dict(zip(letters_for(3), ["1", "2", "3"], strict=True)), "B") is None


def test_distractor_cleaning():
    kept, dropped = clean_distractors("two", ["2", "three", "Three", "two circles", "", "four"])
    assert kept == ["three", "four"]
    assert [d["reason"] for d in dropped] == ["equals_answer", "duplicate", "overlaps_answer",
                                               "empty"]


def test_short_pool_is_filled_from_the_caption():
    """A generator that writes "..." as distractors (what the 135M model does): the items are
    built from other lines' detail words, checked by the judge like any distractor."""
    import asyncio

    from qa_scripted import Panel, Q, models_for, scripted_config, shapes_caption

    from rewatch.models.scripted_server import ScriptedTestServer
    from rewatch.schema import QARecord
    from rewatch.synth.mcq import caption_distractors, reformulate_mcq

    # an answer of no one kind (a shape alone would be filled with other shapes)
    q = Q("What appears when the red circle leaves?", "yellow triangle", evidence=("00:09",),
          distractors=("...", "..."))
    events = [(0, 1, "a brown dog barks"), (1, 2, "a grey cat jumps"), (2, 3, "a small bird sings"),
              (3, 4, "a white horse runs"), (4, 5, "a gold fish swims"),
              (8, 10, "the red circle leaves; a yellow triangle appears")]
    cap = shapes_caption("animals", events, summary="")
    rec = QARecord(id="qa1", video_id="animals", question=q.question, answer=q.answer,
                   qtype="attribute", evidence=["[00:08-00:10] " + events[-1][2]])
    with ScriptedTestServer(Panel({"x": [q]})) as srv:
        cfg = scripted_config(srv.base_url)
        models = models_for(cfg)

        async def go():
            try:
                return await reformulate_mcq(rec, cap, cfg, models)
            finally:
                await models.aclose()

        sets, ev = asyncio.run(go())
    assert sorted(ev["from_caption"]) == sorted(caption_distractors(cap, rec))
    assert len(ev["from_caption"]) == 5 and "yellow" not in ev["from_caption"]
    # five distractors: two different sets (never the same set twice), none the answer
    assert len(sets) == 2 and set(sets[0]) != set(sets[1])
    assert all(len(s) == 4 == len(set(s)) and "triangle" not in s for s in sets)


def test_distractor_sets_differ_and_are_disjoint_when_the_pool_allows():
    import random

    from rewatch.synth.mcq import distractor_sets

    pool = [f"d{i}" for i in range(8)]
    two = distractor_sets(pool, 4, 2, random.Random(0))
    assert len(two) == 2 and not set(two[0]) & set(two[1])
    for size in (5, 6, 7):  # fewer than 2 x 4: the two sets overlap but are never the same
        sets = distractor_sets(pool[:size], 4, 2, random.Random(size))
        assert len(sets) == 2 and set(sets[0]) != set(sets[1])
        assert all(len(s) == len(set(s)) == 4 for s in sets)
    assert len(distractor_sets(pool[:4], 4, 2, random.Random(0))) == 1  # only one set exists


def test_a_count_gets_counts_as_distractors():
    from rewatch.synth.mcq import clean_distractors, nearby_numbers

    assert nearby_numbers("two", 4) == ["three", "one", "four", "zero"]
    assert nearby_numbers("3", 3) == ["4", "2", "5"]
    kept, dropped = clean_distractors("two", ["three", "plain", "right", "2", "five objects"])
    assert kept == ["three", "five objects"]
    assert {d["reason"] for d in dropped} == {"not_a_count", "equals_answer"}


async def test_count_items_skip_the_key_check_only_when_configured():
    from rewatch.config import Config
    from rewatch.schema import QARecord
    from rewatch.synth.mcq import checked_options

    rec = QARecord(id="q", video_id="v", question="How many objects are on screen at 00:03?",
                   answer="three", qtype="counting", evidence=["[00:03-00:03] Three objects."])
    cfg = Config()
    cfg.synth.qa.key_check_counts = False
    no_models: dict = {}  # the check would ask models[judge]: a KeyError here
    options, check = await checked_options(rec, ["two", "four", "one", "five"], [], "C", "k",
                                           "", cfg, no_models, None)  # type: ignore[arg-type]
    assert options["C"] == "three" and sorted(options.values()) == sorted(
        ["three", "two", "four", "one", "five"])
    assert check["key_check"].startswith("skipped")
    # a colour item is still checked, and so are counts by default
    colour = rec.model_copy(update={"answer": "red", "question": "What colour is it?"})
    with pytest.raises(KeyError):
        await checked_options(colour, ["blue", "green", "pink", "white"], [], "C", "k", "", cfg,
                              no_models, None)  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        await checked_options(rec, ["two", "four", "one", "five"], [], "C", "k", "", Config(),
                              no_models, None)  # type: ignore[arg-type]


def test_the_words_beside_the_answer_in_its_evidence_are_no_distractor():
    """Demo run c5e505d keyed "top" for "Where does the cyan rectangle appear at 00:03?" over
    "[00:03-00:03] A cyan rectangle appears at the top right." with "right" among the
    distractors: true as well. The other half of the answer's phrase goes; other
    positions stay."""
    evidence = ["[00:03-00:03] A cyan rectangle appears at the top right."]
    kept, dropped = clean_distractors("top", ["right", "left", "bottom", "objects"], evidence)
    assert kept == ["left", "bottom", "objects"]
    assert dropped == [{"text": "right", "reason": "beside_answer_in_evidence"}]
    # "and" between them still reads as one fact; a word further away is another object's
    moving = ["[00:02-00:05] A red circle moves right and up. A blue square stays."]
    kept, dropped = clean_distractors("right", ["up", "left", "down"], moving)
    assert kept == ["left", "down"] and dropped[0]["text"] == "up"
    kept, _ = clean_distractors("red", ["blue", "green"], moving)
    assert kept == ["blue", "green"]
    # without evidence nothing is dropped this way
    assert clean_distractors("top", ["right"])[0] == ["right"]


def test_the_caption_fill_offers_words_of_the_answer_s_kind():
    """A colour gets colours, a place gets places: demo run be00494's fill offered "centre" and
    "slowly" for a colour and "objects", "large", "slowly" for where a blob appears."""
    from qa_scripted import shapes_caption

    from rewatch.schema import QARecord
    from rewatch.synth.mcq import caption_distractors, detail_kind
    from rewatch.video.stats import NAMED_COLOURS

    assert detail_kind("What colour is the square?", "dark gray") == "colour"
    assert detail_kind("Where does the blob appear?", "top left") == "position"
    assert detail_kind("Which way does the blob move?", "left") == "direction"
    assert detail_kind("Where is the blob?", "left") == "position"
    assert detail_kind("What appears?", "a small bird") is None
    events = [(0, 1, "a red circle appears on the left"), (1, 2, "the circle moves slowly"),
              (2, 3, "a large blue square is at the top"), (3, 4, "many objects are on screen"),
              (4, 6, "a green triangle appears in the centre")]
    cap = shapes_caption("kinds", events, summary="")

    def fill(question: str, answer: str, evidence: str, need: int = 8) -> list[str]:
        rec = QARecord(id="q-" + answer, video_id="kinds", question=question, answer=answer,
                       qtype="attribute", evidence=[evidence])
        return caption_distractors(cap, rec, need=need)

    colours = fill("What colour is the triangle at 00:04?", "green",
                   "[00:04-00:06] a green triangle appears in the centre")
    assert len(colours) >= 10 and all(w in NAMED_COLOURS for w in colours)
    assert "green" not in colours and "dark green" not in colours  # true, or half true
    places = fill("Where does the triangle appear at 00:04?", "centre",
                  "[00:04-00:06] a green triangle appears in the centre")
    assert set(places) == {"left", "right", "top", "bottom", "top left", "top right",
                           "bottom left", "bottom right"}
    # four directions less the true one are too few: the other words come after them
    ways = fill("Which way does the circle move at 00:01?", "right",
                "[00:01-00:02] the circle moves slowly right")
    assert set(ways[:3]) == {"left", "up", "down"} and len(ways) > 3
    assert fill("Which way does the circle move at 00:01?", "right",
                "[00:01-00:02] the circle moves slowly right", need=3) == ways[:3]
    # an answer of no known kind: the other lines' detail words, as before
    assert "slowly" in fill("What appears at 00:04?", "a green triangle",
                            "[00:04-00:06] a green triangle appears in the centre")


async def test_a_refill_after_the_key_check_never_repeats_another_items_set(monkeypatch):
    """Demo run 03538a5: the judge picked "bottom left" in one item of "Where does the light
    gray blob appear ...?", and the only spare of a 5-word pool made its set the same as the
    other item's. The refill may not do that: the item is rejected instead. (The key check is
    replaced by a scripted judge here, which picks "bottom left" whenever it is an option.)"""
    from rewatch.config import Config
    from rewatch.schema import QARecord
    from rewatch.synth import mcq

    async def scripted_judge(question, options, detail, cfg, models, tally):
        return next((k for k, v in options.items() if v == "bottom left"),
                    next(k for k, v in options.items() if v == "top"))

    monkeypatch.setattr(mcq, "key_check", scripted_judge)
    rec = QARecord(id="q", video_id="v", question="Where does the blob appear at 00:02?",
                   answer="top", qtype="attribute", evidence=["[00:02-00:02] A blob, top left."])
    pool = ["bottom", "right", "bottom left", "bottom right", "centre"]
    first = {"bottom right", "centre", "bottom", "right"}
    second = ["bottom left", "centre", "bottom", "right"]
    args = ("C", "k", "", Config(), {}, None)
    options, check = await mcq.checked_options(rec, second, pool, *args)  # alone: refilled
    assert "problem" not in check and set(options.values()) == first | {"top"}
    options, check = await mcq.checked_options(rec, second, pool, *args, taken=[first])
    assert check["problem"].startswith("judge_chose_")  # the only spare would repeat `first`
    bigger = [*pool, "left"]
    options, check = await mcq.checked_options(rec, second, bigger, *args, taken=[first])
    assert "problem" not in check and set(options.values()) - {"top"} != first
