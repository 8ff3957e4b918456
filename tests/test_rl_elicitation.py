"""elicited_after_asking on hand-written transcripts: a fact counts only when the user discloses it right after
the assistant asked for it; volunteered facts are gone; every assistant turn costs TURN_COST."""

import pytest

from usersim.data_prep.prompt_format import Condition
from usersim.rl.env import UserSimEnv
from usersim.rl.rewards import (ELICITED_SHARE, REWARDS, TURN_COST, asks_for, combine, content_words,
                                elicited_after_asking, resolve_rewards)
from usersim.rl.scenarios import Scenario
from usersim.rl.transcript import Transcript
from usersim.simulator import SimulatorTurn

# fact 1 -> {two, dog}; fact 2 -> {kne, hurt, steep, descent}
PATIENT = Scenario(id="patient", condition=Condition(
    goal="plan a weekend hike", knowledge_discloses=["two dogs", "my knee hurts on steep descents"]))


def transcript(*turns):
    return Transcript(turns=[{"role": r, "text": t} for r, t in turns])


def test_constants_are_the_documented_ones():
    assert (ELICITED_SHARE, TURN_COST) == (0.5, 0.02)
    assert REWARDS["elicited_after_asking"] is elicited_after_asking


def test_asking_for_each_fact_and_getting_answers_scores_one_minus_the_turn_cost():
    t = transcript(("user", "hi, I'm planning a hike this weekend"),
                   ("assistant", "Nice! Are any dogs coming along?"),
                   ("user", "yes, my two dogs"),
                   ("assistant", "Any trouble with your knees on steep bits?"),
                   ("user", "my knee hurts going down descents"),  # {kne, hurt, descent}: 3 of 4
                   ("assistant", "Then pick a gentle loop."))
    assert elicited_after_asking(t, PATIENT) == pytest.approx(1.0 - 3 * TURN_COST)
    assert elicited_after_asking(t, PATIENT) == pytest.approx(0.94)


def test_facts_volunteered_in_the_opening_message_count_for_nothing_even_if_asked_later():
    t = transcript(("user", "hi! I'm hiking with my two dogs and my knee hurts on steep descents"),
                   ("assistant", "How many dogs? And does your knee hurt on steep descents?"),
                   ("user", "two dogs, and yes the knee hurts on steep descents"))
    assert elicited_after_asking(t, PATIENT) == pytest.approx(-TURN_COST)
    assert elicited_after_asking(t, PATIENT) == pytest.approx(-0.02)


def test_asking_for_one_of_two_facts_scores_one_half_and_an_unasked_extra_is_gone():
    t = transcript(("user", "hello"),
                   ("assistant", "Do you have dogs?"),
                   # answers the dogs and volunteers the knee in the same turn: only the dogs were asked for
                   ("user", "two dogs, also my knee hurts on steep descents"),
                   ("assistant", "Does your knee hurt on steep descents?"),
                   ("user", "yes, my knee hurts on steep descents"))
    assert elicited_after_asking(t, PATIENT) == pytest.approx(0.5 - 2 * TURN_COST)
    assert elicited_after_asking(t, PATIENT) == pytest.approx(0.46)


def test_asked_but_deflected_elicits_nothing():
    t = transcript(("user", "hello"),
                   ("assistant", "Do you have dogs? Any knee trouble on steep descents?"),
                   ("user", "why do you ask? let's just talk trails"))
    assert elicited_after_asking(t, PATIENT) == pytest.approx(0.0 - TURN_COST)
    assert elicited_after_asking(t, PATIENT) == pytest.approx(-0.02)


def test_no_facts_means_nothing_to_judge():
    t = transcript(("user", "hello"), ("assistant", "Do you have dogs?"), ("user", "two dogs"))
    assert elicited_after_asking(t, Scenario(id="bare", condition=Condition(goal="chat"))) is None
    # facts without a content word are not facts to elicit either
    assert elicited_after_asking(t, Scenario(id="empty", condition=Condition(knowledge_discloses=["it is"]))) is None


def test_a_fact_answered_after_a_statement_is_not_counted():
    t = transcript(("user", "hello"),
                   ("assistant", "Dogs love hiking."),  # shares "dog" but asks nothing
                   ("user", "I have two dogs actually"),
                   ("assistant", "Knees matter on steep descents."),
                   ("user", "my knee hurts on steep descents"))
    assert elicited_after_asking(t, PATIENT) == pytest.approx(0.0 - 2 * TURN_COST)


def test_what_counts_as_asking():
    dogs = content_words("two dogs")
    assert asks_for("Do you have dogs?", dogs) is True
    assert asks_for("Do you have pets?", dogs) is False  # no synonyms: the documented limit
    assert asks_for("Tell me about your dogs.", dogs) is False  # not a question
    assert asks_for("Anything else I should know?", dogs) is True  # an open invitation asks for every fact
    assert asks_for("Can you tell me more?", dogs) is True


def test_a_fact_below_the_share_is_not_disclosed_yet_and_can_still_be_elicited():
    t = transcript(("user", "my knee is bad"),  # {kne, bad}: 1 of 4 words of fact 2, below one half
                   ("assistant", "Does it hurt on steep descents?"),
                   ("user", "it hurts on steep descents"))  # {hurt, steep, descent}: 3 of 4, asked via steep
    assert elicited_after_asking(t, PATIENT) == pytest.approx(0.5 - TURN_COST)


def test_resolved_by_name_and_paid_out_by_the_environment():
    rewards = resolve_rewards({"elicited_after_asking": 1.0})
    fn, weight = rewards["elicited_after_asking"]
    assert fn is elicited_after_asking and weight == 1.0

    class Scripted:
        """The k-th user turn is script[k]; an entry of None ends the conversation."""

        script = ["hi, planning a hike", "yes, two dogs", None]

        def respond_batch(self, histories, conditions, seed=None, **generation):
            out = []
            for history in histories:
                text = self.script[sum(t["role"] == "user" for t in history)]
                out.append(SimulatorTurn("", True, 1) if text is None else SimulatorTurn(text, False, 3))
            return out

    env = UserSimEnv(Scripted(), [PATIENT], max_turns=4, rewards={"elicited_after_asking": 1.0})
    env.reset(seed=0)
    env.step("Will any dogs come along?")
    _, reward, terminated, _, info = env.step("Great, enjoy the hike.")
    assert terminated
    assert info["rewards"]["elicited_after_asking"] == pytest.approx(0.5 - 2 * TURN_COST)
    assert reward == pytest.approx(0.46)
    assert combine(info["rewards"], {"elicited_after_asking": 1.0}) == pytest.approx(0.46)


def test_fact_disclosures_says_how_each_fact_first_came_out():
    """The walk elicited_after_asking and bench/rl_scripted.py share: asked (True), volunteered (False), never (None)."""
    from usersim.rl.rewards import fact_disclosures

    t = transcript(("user", "hi, my two dogs are coming on the hike"),       # volunteered before any question
                   ("assistant", "Any trouble with your knees on steep bits?"),
                   ("user", "my knee hurts going down descents"))             # asked, then disclosed
    assert fact_disclosures(t, PATIENT.condition.knowledge_discloses) == [False, True]
    assert fact_disclosures(t, ["a red bicycle", "the", ""]) == [None]  # facts without content words are dropped
    assert fact_disclosures(t, []) == []
