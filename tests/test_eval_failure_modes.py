"""Hand-written positives and negatives for the style features and the failure-mode heuristics."""

import numpy as np
import pytest

from usersim.eval.failure_modes import (answered_questions, end_prf, failure_mode_metrics, is_assistant_like,
                                        knowledge_leak, reasks, revealed_items, sample_diversity_metrics, self_similarity,
                                        style_mismatch)
from usersim.eval.style_features import content_tokens, has_question, politeness_count, text_features


def test_style_features_on_examples():
    assert has_question("where do you live?") and has_question("what do you do")
    assert not has_question("i live in ohio.")
    assert politeness_count("could you please help, thanks") == 3
    f = text_features("hey, how are you?")
    assert f["n_words"] == 4 and f["question"] == 1.0 and f["punct_per_word"] == pytest.approx(0.5)
    f = text_features("i dont know, sooo tired 😀")
    assert f["typo_rate"] == pytest.approx(2 / 5) and f["emoji"] == 1.0 and f["upper_ratio"] == 0.0
    assert content_tokens("The dog is in the park") == {"dog", "park"}


def test_knowledge_leak_positive_and_negative():
    asks = ["what is the best hiking trail near Denver"]
    assert knowledge_leak("The best hiking trail near Denver is Mount Falcon.", asks)  # states it as fact
    assert not knowledge_leak("What is the best hiking trail near Denver?", asks)  # asks it: fine
    assert not knowledge_leak("I love pizza and movies.", asks)  # unrelated
    assert not knowledge_leak("The trail is nice.", asks)  # one shared word is not enough
    assert not knowledge_leak("Denver hiking is great.", [])  # nothing unknown


def test_disclosure_reveals_items_by_content_overlap():
    discloses = ["I have two dogs", "I work as a nurse in Chicago"]
    assert revealed_items("my two dogs are crazy", discloses) == {0}
    assert revealed_items("im a nurse in chicago with two dogs", discloses) == {0, 1}
    assert revealed_items("hello there", discloses) == set()


def test_assistant_likeness_positive_and_negative():
    assert is_assistant_like("Certainly! Here are some ideas for your weekend.")
    assert is_assistant_like("As an AI, I don't have preferences.")
    assert is_assistant_like("Options:\n1. hiking\n2. cinema")
    assert is_assistant_like("I'd be happy to help with that.")
    assert not is_assistant_like("lol yeah im going hiking this weekend")
    assert not is_assistant_like("sure, sounds good to me")


HISTORY = [{"role": "user", "text": "what time does the museum open on sunday?"},
           {"role": "assistant", "text": "It opens at 10am on Sundays."}]


def test_reask_positive_and_negative():
    assert answered_questions(HISTORY) == ["what time does the museum open on sunday?"]
    assert reasks("When does the museum open on Sunday?", HISTORY)
    assert not reasks("great, is parking free there?", HISTORY)
    assert not reasks("the museum opens on sunday.", HISTORY)  # not a question
    unanswered = HISTORY[:1]
    assert not reasks("what time does the museum open on sunday?", unanswered)


def test_style_mismatch_and_end_prf_and_self_similarity():
    assert style_mismatch("ok lol", {"length": "short", "casing": "lower"}) == 0.0
    assert style_mismatch("This is a Sentence.", {"casing": "lower"}) == 1.0
    assert np.isnan(style_mismatch("x", {}))
    assert end_prf([True, False, True, False], [True, True, False, False]) == (0.5, 0.5, 0.5)
    assert self_similarity(["a b c", "a b c"]) == 1.0
    assert self_similarity(["a b", "c d"]) == 0.0


def _items():
    cond = {"persona": "", "goal": "", "knowledge_discloses": ["I have two dogs"],
            "knowledge_asks": ["the best hiking trail near Denver"], "style": {"length": "short", "casing": "lower"}}
    items = []
    for u in range(6):
        for k in range(4):
            history = [{"role": "user", "text": "what is the best hiking trail near denver?"},
                       {"role": "assistant", "text": "Try Mount Falcon."}] if k else []
            items.append({"id": f"c{u}:{k}", "conversation_id": f"c{u}", "user_id": f"u{u}", "condition": cond,
                          "history": history, "turn_index": k, "target_is_end": False})
    return items


def test_failure_mode_metrics_separate_a_leaky_assistant_from_humans():
    items = _items()
    human = ["hey there" if it["turn_index"] == 0 else "cool ok" for it in items]
    bad = ["Certainly! The best hiking trail near Denver is Mount Falcon. I have two dogs. "
           "What is the best hiking trail near Denver?" for _ in items]
    texts = {"human": human, "simulator": list(human), "base": bad}
    ends = {"human": [False] * len(items), "simulator": [False] * len(items), "base": [False] * len(items)}
    metrics, plots = failure_mode_metrics(items, texts, ends, n_boot=100, seed=0)
    by = {(m.name, m.system): m for m in metrics}
    assert by[("knowledge_leak_rate", "base")].value == 1.0
    assert by[("knowledge_leak_rate", "simulator")].value == 0.0
    assert by[("knowledge_leak_rate", "simulator")].human_reference == 0.0
    assert by[("assistant_likeness_rate", "base")].value == 1.0
    assert by[("reask_rate", "base")].value == 1.0 and by[("reask_rate", "base")].n == 18
    assert by[("disclosure_area_between_curves", "simulator")].value == 0.0
    assert by[("disclosure_area_between_curves", "base")].value == 1.0
    assert plots["disclosure_curve"]["base"]["0"] == 1.0 and plots["disclosure_curve"]["human"]["0"] == 0.0
    assert by[("style_mismatch", "base")].value > by[("style_mismatch", "simulator")].value
    assert np.isnan(by[("end_f1", "simulator")].value)  # no real ends, no predicted ends


def test_sample_diversity_metrics():
    samples = {"simulator": [["a b c", "d e f"], ["x y", "z w"]], "base": [["same text"] * 3, ["same text"] * 3]}
    by = {(m.name, m.system): m for m in sample_diversity_metrics(samples, ["u1", "u2"], n_boot=50)}
    assert by[("sample_distinct2", "simulator")].value == 1.0
    assert by[("sample_self_similarity", "base")].value == 1.0
    assert by[("sample_self_similarity", "simulator")].value == 0.0


def test_artefact_reason_on_examples():
    from usersim.eval.failure_modes import artefact_reason

    clean = ["hey how are you?", "i paid $20 for it [receipt attached] lol", "<em>really</em> liked it",
             "Goals for this year: run more", "the [2] option sounds better", "my brother said #blessed"]
    assert [artefact_reason(t) for t in clean] == [None] * len(clean)
    assert artefact_reason("what about <start_of_image> this") == "control_token"
    assert artefact_reason("hello <unused12>") == "control_token"
    assert artefact_reason("caf\ufffd") == "control_token"
    assert artefact_reason("sure\nPersona: country: US") == "format_leak"
    assert artefact_reason("ok [Conversation]") == "format_leak"
    assert artefact_reason("bye [END OF CONVERSATION]") == "format_leak"
    assert artefact_reason("ok\nAssistant: hi") == "format_leak"
    assert artefact_reason("[Story] Yesterday I wrote a blog post") == "document_scaffolding"
    assert artefact_reason("nice\n# Chapter 1") == "document_scaffolding"


def test_end_auc_known_values():
    from usersim.eval.failure_modes import end_auc

    assert end_auc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert end_auc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    assert end_auc([0.5, 0.5, 0.5], [True, False, False]) == 0.5
    # ends at 0.9 and 0.5, others at 0.6 and 0.1: 3 of the 4 (end, other) pairs are ordered right
    assert end_auc([0.9, 0.6, 0.5, 0.1], [True, False, True, False]) == 0.75
    assert np.isnan(end_auc([0.1, 0.2], [False, False]))


def test_expected_end_f1_is_the_draws_f1_without_their_noise():
    from usersim.eval.failure_modes import expected_end_f1

    real = [True, False, True, False, False]
    # a decision that is certain is its own single draw
    assert expected_end_f1(real, [1.0, 1.0, 0.0, 0.0, 0.0]) == end_prf(real, [True, True, False, False, False])[2]
    assert expected_end_f1(real, [0.0] * 5) == 0.0
    # a stochastic decision at the humans' rate: the ratio of expected true ends to expected predicted + real ends,
    # checked against many draws (9 real ends of 128 items, chances that favour the real ends, as on a default run)
    rng = np.random.default_rng(0)
    real = np.zeros(128, bool)
    real[:9] = True
    q = np.where(real, 0.12, 0.04)
    draws = rng.random((20000, 128)) < q
    tp, pred = (draws & real).sum(1), draws.sum(1)
    assert abs(expected_end_f1(real, q) - 2 * tp.mean() / (pred.mean() + real.sum())) < 0.005
    # and one draw is often 0 there: the reason the expected F1 is reported beside it
    assert 0.2 < (tp == 0).mean() < 0.5
    assert np.isnan(expected_end_f1([], []))


def test_the_human_style_reference_is_the_users_other_turns():
    """A conversation's style condition is computed over all of its user's turns, the scored one included.
    Scored against it, a one-turn user matches by construction; the human row therefore scores each real turn
    against the buckets of the user's *other* turns (leave-one-out), and a user with no other turn has no human
    value. Known answers on hand-built conversations; on real chitchat users (all of a user's turns pooled),
    scoring each turn against the others' buckets misses more than against buckets that include it."""
    from usersim.data_prep.records import per_turn_items
    from usersim.data_prep.style import style_buckets
    from usersim.eval.items import add_reference_styles

    def record(cid, user_turns, end=False):
        turns = []
        for t in user_turns:
            turns += [{"role": "user", "text": t}, {"role": "assistant", "text": "I see."}]
        return {"id": cid, "user_id": cid, "source": "hand", "turns": turns, "end_of_conversation": end,
                "condition": {"style": style_buckets(user_turns)}}

    records = [record("lower", ["hey there whats up", "i like dogs a lot", "ok cool"]),
               record("alone", ["Hello! I Like Dogs."], end=True)]
    items = [it for r in records for it in per_turn_items(r)]
    add_reference_styles(items, records)
    ref = {it["id"]: it["reference_style"] for it in items}
    assert ref["lower:1"] == style_buckets(["hey there whats up", "ok cool"])
    assert ref["alone:0"] is None and ref["alone:end"] is None  # no other turn; an end is no turn
    human = [it["target"] if not it["target_is_end"] else None for it in items]
    ends = [bool(it["target_is_end"]) for it in items]
    texts = {"human": human, "simulator": ["Hello! I Like Dogs."] * len(items)}
    metrics, plots = failure_mode_metrics(items, texts, {"human": ends, "simulator": [False] * len(items)},
                                          n_boot=50, seed=0)
    by = {(m.name, m.system): m for m in metrics}
    assert by[("style_mismatch", "human")].n == 3  # the one-turn user's turn has no reference
    assert np.isnan(plots["style_mismatch"]["human"][3])
    from usersim.eval.failure_modes import style_mismatch
    # "i like dogs a lot" against the others' buckets: only typos missed ("whats" makes theirs 'many'), 1 of 5
    assert ref["lower:1"]["typos"] == "many" and plots["style_mismatch"]["human"][1] == 0.2
    # against the condition it would read 0 for the one-turn user: the condition is its own turn's style
    assert style_mismatch("Hello! I Like Dogs.", records[1]["condition"]["style"]) == 0.0

    # real users: leave-one-out against in-sample, per turn of users with several turns
    from real_turns import chitchat_user_turns

    in_sample, loo = [], []
    for turns in chitchat_user_turns(300).values():
        texts_ = [t for t, _ in turns][:6]
        if len(texts_) < 2:
            continue
        whole = style_buckets(texts_)
        for k, t in enumerate(texts_):
            in_sample.append(style_mismatch(t, whole))
            loo.append(style_mismatch(t, style_buckets(texts_[:k] + texts_[k + 1:])))
    assert len(loo) > 300 and np.mean(loo) > np.mean(in_sample) > 0.1
