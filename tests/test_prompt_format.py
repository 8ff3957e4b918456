"""The loss mask is exact: decoded supervised tokens == user turns + EOS (+ END marker + EOS)."""

import random

import pytest

from usersim.data_prep.conditioning import build_condition
from usersim.data_prep.config import ConditioningConfig
from usersim.data_prep.prompt_format import (END_OF_CONVERSATION, IGNORE_INDEX, Condition, drop_condition_fields,
                                             render_generation_prompt, render_simulator_prompt, render_units,
                                             tokenize_conversation, tokenize_segments)
from usersim.data_prep.records import conversation_record, per_turn_items
from usersim.data_prep.schema import ASSISTANT, USER, Conversation, Turn
from usersim.train.tiny_model import train_tiny_tokenizer

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


# --- tokenize_conversation: exact ids and labels on a hand-built conversation ---------------------------------

HAND_CONDITION = Condition(goal="chat about pets", style={"length": "short"})
HAND_TURNS = [Turn(USER, "hey there"), Turn(ASSISTANT, "Hi! How can I help?"), Turn(USER, "i have two dogs"),
              Turn(ASSISTANT, "Sure: walk them daily.")]


def hand_parts(tokenizer, *, end=True, cue=False):
    """The expected sequence as (ids, supervised) parts, built from literal text, not from the renderer."""
    enc = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    parts = [([bos] + enc("[Simulated user]\nGoal: chat about pets\nStyle: length=short\n[Conversation]"), False),
             (enc("\nUser: "), False), (enc("hey there") + [eos], not cue),
             (enc("\nAssistant: "), False), (enc("Hi! How can I help?") + [eos], False),
             (enc("\nUser: "), False), (enc("i have two dogs") + [eos], not cue),
             (enc("\nAssistant: "), False), (enc("Sure: walk them daily.") + [eos], False)]
    if end:
        parts += [(enc("\nUser: "), False), (enc("[END OF CONVERSATION]") + [eos], True)]
    if cue:
        parts += [(enc("\nUser: "), False)]
    return parts


def flat(parts):
    ids = [t for p, _ in parts for t in p]
    labels = [t if sup else -100 for p, sup in parts for t in p]
    return ids, labels


def test_tokenize_conversation_ids_and_labels_exactly(tokenizer):
    parts = hand_parts(tokenizer)
    seq = tokenize_conversation(HAND_CONDITION, HAND_TURNS, tokenizer, end_of_conversation=True, max_tokens=10_000)
    assert (seq.input_ids, seq.labels) == flat(parts)
    assert (seq.turns_dropped, seq.tokens_cut, seq.supervised_cut) == (0, 0, 0)
    assert seq.n_supervised == sum(len(p) for p, sup in parts if sup)
    assert tokenizer.decode(seq.input_ids) == ("<bos>[Simulated user]\nGoal: chat about pets\nStyle: length=short\n"
                                               "[Conversation]\nUser: hey there<eos>\nAssistant: Hi! How can I help?<eos>"
                                               "\nUser: i have two dogs<eos>\nAssistant: Sure: walk them daily.<eos>"
                                               "\nUser: [END OF CONVERSATION]<eos>")
    assert IGNORE_INDEX == -100
    # the training rendering is the same sequence, untruncated
    assert tokenize_segments(render_simulator_prompt(HAND_CONDITION, HAND_TURNS, end_of_conversation=True),
                             tokenizer) == flat(parts)


def test_truncation_drops_the_oldest_whole_turns_and_keeps_the_header(tokenizer):
    parts = hand_parts(tokenizer)
    full, _ = flat(parts)
    header = parts[0]
    # one token too long: the oldest turn (marker + text) goes, nothing else
    seq = tokenize_conversation(HAND_CONDITION, HAND_TURNS, tokenizer, end_of_conversation=True,
                                max_tokens=len(full) - 1)
    assert (seq.input_ids, seq.labels) == flat([header] + parts[3:])
    assert (seq.turns_dropped, seq.tokens_cut, seq.supervised_cut) == (1, 0, 0)
    # room for the header and the end target only: every turn goes, the end target stays whole
    end_unit = parts[-2:]
    fit = len(flat([header] + end_unit)[0])
    seq = tokenize_conversation(HAND_CONDITION, HAND_TURNS, tokenizer, end_of_conversation=True, max_tokens=fit)
    assert (seq.input_ids, seq.labels) == flat([header] + end_unit)
    assert (seq.turns_dropped, seq.tokens_cut, seq.supervised_cut) == (4, 0, 0)
    # two tokens short of that: the end target is cut from the right, the header is not touched
    seq = tokenize_conversation(HAND_CONDITION, HAND_TURNS, tokenizer, end_of_conversation=True, max_tokens=fit - 2)
    ids, labels = flat([header] + end_unit)
    assert (seq.input_ids, seq.labels) == (ids[:-2], labels[:-2])
    assert (seq.turns_dropped, seq.tokens_cut, seq.supervised_cut) == (4, 2, 2)


def test_generation_prompt_is_context_only_and_keeps_its_user_cue(tokenizer):
    parts = hand_parts(tokenizer, end=False, cue=True)
    seq = tokenize_conversation(HAND_CONDITION, HAND_TURNS, tokenizer, generation_prompt=True)
    assert (seq.input_ids, seq.labels) == flat(parts)
    assert set(seq.labels) == {-100}
    assert seq.input_ids == tokenize_segments(render_generation_prompt(HAND_CONDITION, HAND_TURNS), tokenizer)[0]
    # cut: the two oldest turns go (whole), the cue stays
    kept = [parts[0]] + parts[5:]
    seq = tokenize_conversation(HAND_CONDITION, HAND_TURNS, tokenizer, generation_prompt=True,
                                max_tokens=len(flat(kept)[0]))
    assert (seq.input_ids, seq.turns_dropped) == (flat(kept)[0], 2)
    # a header longer than the cap: never cut, every turn dropped, the prompt still ends with the cue
    seq = tokenize_conversation(HAND_CONDITION, HAND_TURNS, tokenizer, generation_prompt=True, max_tokens=3)
    assert (seq.input_ids, seq.turns_dropped, seq.tokens_cut) == (flat([parts[0], parts[-1]])[0], 4, 0)


def test_last_target_only_supervises_just_the_newest_unit(tokenizer):
    parts = hand_parts(tokenizer, end=False)[:7]  # up to and including the second user turn
    seq = tokenize_conversation(HAND_CONDITION, HAND_TURNS[:3], tokenizer, last_target_only=True)
    expected_ids, _ = flat(parts)
    assert seq.input_ids == expected_ids
    assert seq.labels == flat([(p, False) for p, _ in parts[:-1]] + [parts[-1]])[1]
    with pytest.raises(ValueError, match="generation prompt"):
        render_units(HAND_CONDITION, HAND_TURNS, end_of_conversation=True, generation_prompt=True)
