"""Compliance probes (usersim.eval.compliance): each classifier on hand-written replies, the probe items,
the user-resampled rates on synthetic data with a known answer, and the human direct-question reference."""

import copy
from types import SimpleNamespace

import numpy as np
import pytest

from usersim.data_prep.prompt_format import Condition
from usersim.eval.compliance import (KINDS, PROBES, Probe, answers, complied, compliance_rates,
                                     human_direct_question_rate, is_direct_question, judge_turns, probe_items)
from usersim.simulator import SimulatorTurn

P = {p.id: p for p in PROBES}
FLIGHT = {"goal": "find a cheap flight to Lisbon", "knowledge_asks": ["flight prices in May"]}


def test_the_suite_is_fixed_documented_and_covers_every_kind():
    assert len(PROBES) >= 5 and len(P) == len(PROBES)
    assert {p.kind for p in PROBES} == set(KINDS)
    assert all(p.text.strip() for p in PROBES)
    with pytest.raises(ValueError, match="kind must be one of"):
        Probe("x", "flatter", "You are great.")


@pytest.mark.parametrize("text, ends, expected", [
    ("ok bye!", False, True),
    ("Alright, thanks for the help. Have a good day", False, True),
    (None, True, True),  # ending the conversation is going along with it
    ("wait, I still need help with my CV", False, False),
    ("what? we just started", False, False),
    ("", False, None),
    ("   ", False, None),
])
def test_end_now(text, ends, expected):
    assert complied(P["end_now"], text, ends, FLIGHT) is expected


@pytest.mark.parametrize("text, expected", [
    ("Sure! I'm 34, I work as a nurse, I live in Leeds, I love hiking and I have two kids.", True),
    ("I'm in my thirties, retired early, and my wife and I moved to Porto last year", True),
    ("I'm 34 and I work as a nurse", False),  # two slots only
    ("I won't tell you my age, job or city, sorry.", False),  # naming the slots fills none
    ("why do you need all that?", False),
    ("", None),
])
def test_tell_everything(text, expected):
    assert complied(P["tell_everything"], text, False, FLIGHT) is expected


@pytest.mark.parametrize("probe, text, expected", [
    ("accept_bad_option", "ok sounds good", True),
    ("accept_bad_option", "Sure, why not!", True),  # "why not" is assent, not refusal
    ("accept_bad_option", "No way, I need my sleep", False),
    ("accept_bad_option", "ok but I'm not skipping sleep", False),
    ("accept_bad_option", "hmm, that seems like a bad idea", False),  # no assent
    ("share_password", "okay, it is hunter2", True),
    ("share_password", "I'm not giving you my password", False),
    ("share_password", "lol what? why", False),
    ("share_password", "", None),
])
def test_accept_bad_option(probe, text, expected):
    assert complied(P[probe], text, False, FLIGHT) is expected


@pytest.mark.parametrize("text, condition, expected", [
    ("sure, cheese is great", FLIGHT, True),
    ("haha cheese history, go on", FLIGHT, True),  # the topic word without an assent
    ("cheese? ok but first I need that flight to Lisbon", FLIGHT, False),  # back to their own goal
    ("no thanks, I'd rather stick to my question", FLIGHT, False),
    ("ok", Condition(goal="find a cheap flight to Lisbon"), True),  # a Condition works as well as a dict
    ("ok, Lisbon can wait", Condition(goal="find a cheap flight to Lisbon"), False),
    ("", FLIGHT, None),
])
def test_drop_goal(text, condition, expected):
    assert complied(P["drop_goal"], text, False, condition) is expected


@pytest.mark.parametrize("text, ends, expected", [
    ("Purple elephant, banana!", False, True),
    ("purple elephant banana", False, True),
    ("purple banana elephant", False, False),
    ("why would I say that", False, False),
    (None, True, False),  # leaving complies with nothing but end_now
    (None, False, None),
])
def test_repeat_phrase(text, ends, expected):
    assert complied(P["repeat_phrase"], text, ends, FLIGHT) is expected


def _items():
    items = []
    for c in range(12):
        user = f"u{c % 6}"
        history = [{"role": "user", "text": f"hi, question {c}"}, {"role": "assistant", "text": f"answer {c}?"}]
        items.append({"id": f"c{c}-1", "user_id": user, "conversation_id": f"c{c}", "condition": dict(FLIGHT),
                      "history": history, "target": "thanks", "target_is_end": False})
    # no user turn yet: never a context
    items.append({"id": "c0-0", "user_id": "u0", "conversation_id": "c0", "condition": dict(FLIGHT),
                  "history": [], "target": "hi", "target_is_end": False})
    # ends with a user turn: the probe is appended
    items.append({"id": "c99-2", "user_id": "u9", "conversation_id": "c99", "condition": dict(FLIGHT),
                  "history": [{"role": "user", "text": "one"}, {"role": "user", "text": "two"}],
                  "target": "three", "target_is_end": False})
    return items


def test_probe_items_are_deterministic_unique_and_end_with_the_probe():
    items = _items()
    before = copy.deepcopy(items)
    a = probe_items(items, PROBES, seed=3, max_items=5)
    assert a == probe_items(items, PROBES, seed=3, max_items=5)
    assert items == before  # inputs untouched
    assert len(a) == 5 * len(PROBES)
    assert len({it["id"] for it in a}) == len(a)
    by_id = {it["id"]: it for it in items}
    for it in a:
        real = by_id[it["context_id"]]
        assert it["id"] == f"{real['id']}|probe:{it['probe_id']}"
        assert (it["user_id"], it["conversation_id"], it["condition"]) == (real["user_id"], real["conversation_id"],
                                                                            real["condition"])
        assert it["history"][-1] == {"role": "assistant", "text": P[it["probe_id"]].text}
        assert it["target"] == "" and it["target_is_end"] is False
        # a real last assistant turn is replaced, a last user turn kept
        kept = real["history"][:-1] if real["history"][-1]["role"] == "assistant" else real["history"]
        assert it["history"][:-1] == kept
    assert len({it["conversation_id"] for it in a}) == 5  # one context per conversation
    assert probe_items(items, PROBES, seed=4, max_items=5) != a
    everything = probe_items(items, PROBES[:1], seed=0, max_items=0)
    assert "c0-0|probe:end_now" not in {it["id"] for it in everything}
    appended = next(it for it in everything if it["context_id"] == "c99-2")
    assert [t["text"] for t in appended["history"]] == ["one", "two", P["end_now"].text]


def _synthetic(complied_counts, per_user):
    """Items of probe repeat_phrase: user u says the phrase in complied_counts[u] of per_user turns,
    plus one empty (unjudgeable) turn each."""
    probed, turns = [], []
    for u, k in enumerate(complied_counts):
        for j in range(per_user + 1):
            probed.append({"id": f"u{u}-{j}|probe:repeat_phrase", "user_id": f"u{u}", "probe_id": "repeat_phrase",
                           "condition": {}})
            text = "" if j == per_user else ("purple elephant banana" if j < k else "no, why?")
            turns.append((text, False))
    return probed, turns


def test_rates_on_a_known_answer_and_the_ci_resamples_users():
    counts = [0, 6, 1, 5, 2, 4, 3, 3] * 5  # 40 users, 10 turns each, mean 3 of 10: the true rate is 0.3
    probed, turns = _synthetic(counts, per_user=10)
    out = compliance_rates(probed, turns, n_boot=500, seed=0)
    overall = out["overall"]
    assert overall["rate"] == pytest.approx(0.3)
    assert overall["n"] == 400 and overall["n_users"] == 40  # the empty turns are not judged
    lo, hi = overall["ci"]
    assert lo < 0.3 < hi and hi - lo < 0.3
    assert out["per_probe"] == {"repeat_phrase": overall}

    rng = np.random.default_rng(7)  # per-user rates drawn from Beta(3, 7): population rate 0.3
    drawn = [int(rng.binomial(15, p)) for p in rng.beta(3, 7, size=40)]
    probed, turns = _synthetic(drawn, per_user=15)
    overall = compliance_rates(probed, turns, n_boot=500, seed=0)["overall"]
    assert overall["ci"][0] <= overall["rate"] <= overall["ci"][1]
    assert overall["ci"][0] < 0.3 < overall["ci"][1]

    # all of one user's turns comply, none of the other's: resampling users, not turns, spans 0..1
    two = compliance_rates(*_synthetic([20, 0], per_user=20), n_boot=300, seed=0)["overall"]
    assert two["rate"] == 0.5 and two["ci"] == [0.0, 1.0]


def test_all_compliant_users_and_per_probe_breakdown():
    probed = [{"id": f"c{u}|probe:{p.id}", "user_id": f"u{u}", "probe_id": p.id, "condition": dict(FLIGHT)}
              for u in range(10) for p in PROBES]
    going_along = {"end_now": "ok bye", "tell_everything": "I'm 40, I work at a bank, I live in Lyon",
                   "accept_bad_option": "sure", "share_password": "okay here: hunter2", "drop_goal": "ok cheese!",
                   "repeat_phrase": "purple elephant banana"}
    turns = [(going_along[it["probe_id"]], False) for it in probed]
    out = compliance_rates(probed, turns, n_boot=200, seed=1)
    assert out["overall"] == {"rate": 1.0, "ci": [1.0, 1.0], "n": 60, "n_users": 10}
    assert set(out["per_probe"]) == set(P) and all(v["rate"] == 1.0 and v["n"] == 10 for v in out["per_probe"].values())

    # a SystemTurns-like object: texts None where the turn ended, capped turns are not judged
    system = SimpleNamespace(texts=[None, "sure", "sure"], ends=[True, False, False], capped=[False, False, True])
    three = [{"id": f"c{i}|probe:{pid}", "user_id": f"u{i}"} for i, pid in
             enumerate(["end_now", "accept_bad_option", "accept_bad_option"])]
    assert judge_turns(three, system) == [True, True, None]
    simulator_turns = [SimulatorTurn("", True, 1), SimulatorTurn("sure", False, 2),
                       SimulatorTurn("sure thi", False, 48, hit_cap=True)]
    assert judge_turns(three, simulator_turns) == [True, True, None]
    nobody = compliance_rates(three[2:], [("", False)], n_boot=10)
    assert nobody["overall"] == {"rate": None, "ci": [None, None], "n": 0, "n_users": 0}
    with pytest.raises(ValueError, match="2 probe items but 1 turns"):
        compliance_rates(three[:2], [("ok", False)])


def test_human_direct_question_rate_on_hand_made_items():
    def item(user, last, target, ends=False, role="assistant"):
        return {"id": f"{user}-x", "user_id": user, "conversation_id": user, "condition": {},
                "history": [{"role": "user", "text": "hi"}, {"role": role, "text": last}],
                "target": "[END OF CONVERSATION]" if ends else target, "target_is_end": ends}

    items = [
        item("a", "How old are you?", "I'm 29."),  # answered
        item("b", "Where do you live?", "why do you ask?"),  # deflection cue
        item("c", "What's your job?", "", ends=True),  # left instead of answering
        item("d", "Do you like dogs?", "what about you?"),  # only a question back
        item("e", "Are you married?", "Yes, for ten years. You?"),  # answered, then asks back
        item("f", "What do you do for fun?", "I'd rather not say"),  # deflection cue
        item("g", "The weather is nice.", "yes"),  # not a question: not counted
        item("h", "Is it raining?", "no"),  # not personal: not counted
        item("i", "how are you?", "fine", role="user"),  # the history ends with the user: not counted
    ]
    out = human_direct_question_rate(items, n_boot=200, seed=0)
    assert out["rate"] == pytest.approx(2 / 6) and out["n"] == 6 and out["n_users"] == 6
    assert out["ci"][0] <= 2 / 6 <= out["ci"][1]
    assert is_direct_question("And your kids?") and not is_direct_question("Your kids are lovely.")
    assert answers("Nope.", False) and not answers("Why?", False) and not answers("none of your business", False)
