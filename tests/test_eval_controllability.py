"""Controllability: swapped conditions come from other users; adherence gaps have the right sign."""

import pytest

from usersim.eval.controllability import controllability_metrics, style_match, swapped_conditions, topic_overlap

HIKER = {"persona": "", "goal": "plan a hiking trip with my dogs", "knowledge_discloses": ["I have two dogs"],
         "knowledge_asks": ["a good trail near denver"], "style": {"length": "short", "casing": "lower"}}
COOK = {"persona": "", "goal": "cook a pasta dinner for friends", "knowledge_discloses": ["I am vegetarian"],
        "knowledge_asks": ["how long to boil spaghetti"], "style": {"length": "long", "casing": "proper"}}


def items():
    return [{"id": f"c{u}:0", "conversation_id": f"c{u}", "user_id": f"u{u}", "turn_index": 0,
             "condition": HIKER if u % 2 == 0 else COOK, "history": []} for u in range(8)]


def test_swapped_conditions_come_from_another_user_and_are_seeded():
    its = items()
    swapped = swapped_conditions(its, seed=3)
    assert swapped == swapped_conditions(its, seed=3)
    by_user = {it["user_id"]: it["condition"] for it in its}
    for it, s in zip(its, swapped):
        assert s in [c for u, c in by_user.items() if u != it["user_id"]]
    with pytest.raises(ValueError, match="at least 2 users"):
        swapped_conditions(its[:1], seed=0)


def test_topic_overlap_and_style_match():
    assert topic_overlap("hiking with dogs near denver", HIKER) == pytest.approx(1.0)
    assert topic_overlap("hiking with dogs near denver", COOK) == 0.0
    assert style_match("ok lets go", HIKER) == 1.0
    assert style_match("ok lets go", COOK) == 0.0


def _text_for(cond):
    if cond is HIKER:
        return "good trail near denver dogs"
    return ("I am vegetarian and I want to cook a pasta dinner for my friends tonight. How long should I boil the "
            "spaghetti so that it is perfect for everyone at the table?")


def test_a_condition_following_simulator_has_positive_gaps_and_an_ignoring_one_does_not():
    its = items()
    swapped = swapped_conditions(its, seed=0)
    own = [_text_for(it["condition"]) for it in its]
    follows = [_text_for(s) for s in swapped]
    ignores = list(own)  # same text whatever the condition says
    good = {m.name: m for m in controllability_metrics(its, own, own, follows, swapped, n_boot=100)}
    bad = {m.name: m for m in controllability_metrics(its, own, own, ignores, swapped, n_boot=100)}
    differs = sum(s is not it["condition"] for s, it in zip(swapped, its))
    assert differs > 0
    assert good["control_topic_gap_swapped"].value > 0.3 and good["control_style_gap_swapped"].value > 0
    assert bad["control_topic_gap_swapped"].value < 0 and bad["control_style_gap_swapped"].value <= 0
    assert good["control_style_match_own"].human_reference == 1.0
