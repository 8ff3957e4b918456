"""Simulator rewards on hand-written transcripts: exact values, None where nothing can be judged."""

import math

import pytest

from usersim.data_prep.prompt_format import Condition
from usersim.rl.env import Transcript
from usersim.rl.rewards import (REWARDS, asks_answered, combine, content_words, discloses_elicited, goal_progress,
                                resolve_rewards, user_ended)
from usersim.rl.scenarios import Scenario

HIKER = Scenario(id="hiker", condition=Condition(
    goal="plan a weekend hike",
    knowledge_asks=["a good hiking trail nearby", "why is that?"],  # the second has no content word
    knowledge_discloses=["I have two dogs", "my knee hurts on steep descents"]))


def transcript(*turns, ended=False, limit=False):
    return Transcript(turns=[{"role": r, "text": t} for r, t in turns], ended_by_user=ended, hit_turn_limit=limit)


def test_content_words_drop_stop_words_and_strip_suffixes():
    assert content_words("I've been hiking the Trails, hikes!") == {"hik", "trail"}
    assert content_words("why is that?") == set()
    assert content_words("classes class") == {"class"}


def test_user_ended_is_one_only_when_the_user_closed_the_conversation():
    assert user_ended(transcript(("user", "hi"), ("assistant", "hello"), ended=True), HIKER) == 1.0
    assert user_ended(transcript(("user", "hi"), ("assistant", "hello"), ("user", "so?"), limit=True), HIKER) == 0.0


def test_asks_answered_counts_content_words_of_each_ask_in_assistant_turns():
    t = transcript(("user", "any good trail nearby?"), ("assistant", "The river trail is nearby and good for hiking."))
    # ask 1 content words {good, hik, trail, nearby}: all in the assistant turn; ask 2 has none -> ignored
    assert asks_answered(t, HIKER) == 1.0
    half = transcript(("user", "any good trail nearby?"), ("assistant", "Try the river trail."))
    assert asks_answered(half, HIKER) == pytest.approx(1 / 4)  # only "trail"
    # the user's own words do not count as the assistant answering
    assert asks_answered(transcript(("user", "good hiking trail nearby?"), ("assistant", "Sure.")), HIKER) == 0.0


def test_discloses_elicited_counts_user_turns_after_the_first_assistant_turn_only():
    opening = transcript(("user", "I have two dogs"), ("assistant", "Nice, what else?"), ("user", "nothing"))
    # fact 1 {two, dog} said only in the opening; fact 2 {knee, hurt, steep, descent} never
    assert discloses_elicited(opening, HIKER) == 0.0
    later = transcript(("user", "hey"), ("assistant", "Any dogs?"), ("user", "two dogs, and my knee hurts"))
    assert discloses_elicited(later, HIKER) == pytest.approx((1.0 + 2 / 4) / 2)


def test_goal_progress_averages_what_applies_and_is_none_without_knowledge():
    t = transcript(("user", "hey"), ("assistant", "A good trail nearby for hiking"), ("user", "two dogs"))
    assert goal_progress(t, HIKER) == pytest.approx((1.0 + 0.5) / 2)
    bare = Scenario(id="bare", condition=Condition(goal="chat"))
    assert asks_answered(t, bare) is None and discloses_elicited(t, bare) is None and goal_progress(t, bare) is None


def test_resolve_and_combine_skip_rewards_that_do_not_apply():
    rewards = resolve_rewards({"user_ended": 2.0, "goal_progress": 1.0})
    assert list(rewards) == ["user_ended", "goal_progress"] and rewards["user_ended"] == (user_ended, 2.0)
    assert combine({"user_ended": 1.0, "goal_progress": None}, {"user_ended": 2.0, "goal_progress": 1.0}) == 2.0
    assert combine({"a": math.nan, "b": 0.5}, {"a": 1.0, "b": 2.0}) == 1.0
    with pytest.raises(ValueError, match="unknown reward 'user_end'.*known rewards"):
        resolve_rewards({"user_end": 1.0})
    assert set(REWARDS) == {"user_ended", "asks_answered", "discloses_elicited", "goal_progress",
                            "elicited_after_asking"}
