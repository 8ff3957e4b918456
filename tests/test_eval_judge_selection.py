"""The headline judge is chosen by a rule fixed in advance (usersim.eval.judge_selection)."""

import pytest

from usersim.eval.judge_selection import choose_headline_judge

PREF = ("lm", "neural", "fast")


def test_most_powerful_judge_that_passes_its_null_wins():
    scores = {"fast": {"power": 0.71, "passed_null": True}, "neural": {"power": 0.80, "passed_null": True},
              "lm": {"power": 0.93, "passed_null": False}}
    judge, reason = choose_headline_judge(scores, PREF)
    assert judge == "neural"  # lm is stronger but failed its validation null
    assert "neural 0.800" in reason and "fast 0.710" in reason and "lm" not in reason.split("(others")[1]


def test_ties_to_three_decimals_go_to_the_preference_order():
    scores = {"fast": {"power": 0.8001, "passed_null": True}, "lm": {"power": 0.7999, "passed_null": True}}
    assert choose_headline_judge(scores, PREF)[0] == "lm"
    scores["fast"]["power"] = 0.81
    assert choose_headline_judge(scores, PREF)[0] == "fast"


def test_no_judge_passing_falls_back_to_the_first_preference_and_says_so():
    scores = {"fast": {"power": 0.9, "passed_null": False}, "neural": {"power": None, "passed_null": True}}
    judge, reason = choose_headline_judge(scores, PREF)
    assert judge == "neural" and "no judge passed" in reason
    with pytest.raises(ValueError):
        choose_headline_judge({}, PREF)
