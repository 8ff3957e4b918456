"""The loss mask is exact: decoded supervised tokens == user turns + EOS (+ END marker + EOS)."""

import random

import pytest

from data_prep.conditioning import build_condition
from data_prep.config import ConditioningConfig
from data_prep.prompt_format import (END_OF_CONVERSATION, Condition, drop_condition_fields, render_generation_prompt,
                                     render_simulator_prompt, tokenize_segments)
from data_prep.records import conversation_record, per_turn_items
from data_prep.schema import Conversation, Turn
from train.tiny_model import train_tiny_tokenizer

CONVERSATIONS = [
    [("user", "hey there"), ("assistant", "Hi! How can I help?"), ("user", "i have two dogs. any tips?"),
     ("assistant", "Sure: walk them daily.")],
    [("assistant", "Welcome back"), ("user", "thx :) what's new?\nalso, where's my order #123?")],
    [("user", "  leading spaces and ünïcödé 😀"), ("assistant", "ok"), ("user", "bye")],
    [("user", "one turn only")],
]


@pytest.fixture(scope="module")
def tokenizer():
    texts = [t for c in CONVERSATIONS for _, t in c] * 3
    return train_tiny_tokenizer(texts, vocab_size=400)


def record_of(turns, i=0):
    conv = Conversation(id=f"c{i}", source="s", user_id=f"u{i}", turns=[Turn(r, t) for r, t in turns],
                        metadata={"prompt": "chat about pets"})
    return conversation_record(conv, build_condition(conv, ConditioningConfig()))


def supervised_runs(ids, labels):
    runs, cur = [], []
    for i, lab in zip(ids, labels):
        if lab != -100:
            assert lab == i
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return runs


@pytest.mark.parametrize("turns", CONVERSATIONS)
def test_supervised_tokens_decode_to_user_turns_then_end(tokenizer, turns):
    rec = record_of(turns)
    segments = render_simulator_prompt(Condition.from_row(rec["condition"]),
                                       [Turn(t["role"], t["text"]) for t in rec["turns"]],
                                       end_of_conversation=rec["end_of_conversation"])
    ids, labels = tokenize_segments(segments, tokenizer)
    assert len(ids) == len(labels) and ids[0] == tokenizer.bos_token_id and labels[0] == -100
    decoded = [tokenizer.decode(run, skip_special_tokens=False) for run in supervised_runs(ids, labels)]
    eos = tokenizer.eos_token
    expected = [t + eos for r, t in turns if r == "user"]
    if turns[-1][0] == "assistant":
        expected.append(END_OF_CONVERSATION + eos)
    assert decoded == expected
    # nothing else is supervised: every assistant text and the condition are context only
    assert sum(lab != -100 for lab in labels) == sum(len(r) for r in supervised_runs(ids, labels))


def test_end_target_only_when_assistant_spoke_last():
    assert record_of(CONVERSATIONS[0])["end_of_conversation"] is True
    assert record_of(CONVERSATIONS[1])["end_of_conversation"] is False
    assert record_of(CONVERSATIONS[3])["end_of_conversation"] is False
    items = per_turn_items(record_of(CONVERSATIONS[0]))
    assert [i["target"] for i in items] == ["hey there", "i have two dogs. any tips?", END_OF_CONVERSATION]
    assert [i["target_is_end"] for i in items] == [False, False, True]
    assert [len(i["history"]) for i in items] == [0, 2, 4]
    last = per_turn_items(record_of(CONVERSATIONS[2]))
    assert [i["is_last"] for i in last] == [False, True] and not any(i["target_is_end"] for i in last)


def test_generation_prompt_supervises_nothing_and_ends_with_user_marker(tokenizer):
    segs = render_generation_prompt(Condition(goal="x"), [Turn("user", "a"), Turn("assistant", "b")])
    assert not any(s.supervised for s in segs) and segs[-1].text == "\nUser: "
    _, labels = tokenize_segments(segs, tokenizer)
    assert set(labels) == {-100}


def test_condition_dropout_is_seeded_and_deterministic():
    cond = Condition(persona="p", goal="g", knowledge_discloses=["d"], knowledge_asks=["a"], style={"length": "short"})
    draws = lambda seed: [drop_condition_fields(cond, 0.5, rng) for rng in [random.Random(seed)] for _ in range(20)]
    assert draws(3) == draws(3)
    assert draws(3) != draws(4)
    dropped = draws(3)
    assert any(c.goal == "" for c in dropped) and any(c.goal == "g" for c in dropped)
    assert drop_condition_fields(cond, 0.0, random.Random(0)) == cond
    assert drop_condition_fields(cond, 1.0, random.Random(0)) == Condition()
