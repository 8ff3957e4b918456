import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep.schema import Conversation, Reason, Turn
from data_prep.split import TRAIN, assert_no_held_out_leak, assign_split, split_by_user

REPO = str(Path(__file__).resolve().parents[1])
FRACTIONS = {"validation": 0.2, "test": 0.2}


def test_assign_split_is_deterministic_across_processes_and_seed_dependent():
    users = [f"user-{i}" for i in range(200)]
    here = [assign_split(u, 7, FRACTIONS) for u in users]
    code = ("from data_prep.split import assign_split;"
            f"print(','.join(assign_split(f'user-{{i}}', 7, {FRACTIONS!r}) for i in range(200)))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123", "PYTHONPATH": REPO}).stdout.strip().split(",")
    assert here == other
    assert here != [assign_split(u, 8, FRACTIONS) for u in users]


def test_assign_split_fractions_roughly_respected():
    users = [f"u{i}" for i in range(5000)]
    got = [assign_split(u, 0, {"validation": 0.05, "test": 0.1}) for u in users]
    assert 0.03 < got.count("validation") / 5000 < 0.07
    assert 0.08 < got.count("test") / 5000 < 0.12
    assert all(assign_split(u, 0, {}) == TRAIN for u in users[:50])


def _chat_views(chat_id: int, a: str, b: str, n_turns: int) -> list[Conversation]:
    """Both participant views of one human-human chat; every text names its author uniquely."""
    texts = [(a if i % 2 == 0 else b, f"<{a if i % 2 == 0 else b}|chat{chat_id}|turn{i}>") for i in range(n_turns)]
    views = []
    for me, other in ((a, b), (b, a)):
        turns = [Turn("user" if who == me else "assistant", t) for who, t in texts]
        views.append(Conversation(id=f"{chat_id}-{me}", source="s", user_id=me, turns=turns,
                                  group_id=str(chat_id), other_user_ids=[other]))
    return views


chats = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(1, 6)), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(chats=chats, seed=st.integers(0, 10_000))
def test_no_held_out_users_words_reach_train(chats, seed):
    convs = [v for i, (a, b, n) in enumerate(chats) if a != b for v in _chat_views(i, f"u{a}", f"u{b}", n)]
    splits, dropped = split_by_user(convs, seed, FRACTIONS)
    held_out = {c.user_id for s in ("validation", "test") for c in splits[s]}
    held_out |= {u for c in convs for u in [c.user_id] if assign_split(u, seed, FRACTIONS) != TRAIN}
    train_text = "\n".join(t.text for c in splits["train"] for t in c.turns)
    for user in held_out:
        assert f"<{user}|" not in train_text
    assert all(q.reason == Reason.HELD_OUT_LEAK for q in dropped)
    assert sum(len(v) for v in splits.values()) + len(dropped) == len(convs)
    assert_no_held_out_leak([c.to_row() for c in splits["train"]], held_out)


def test_assert_no_held_out_leak_raises_on_user_or_context():
    rows = [{"id": "a", "user_id": "u1", "other_user_ids": ["u2"]}]
    assert assert_no_held_out_leak(rows, {"u3"}) == 1
    with pytest.raises(AssertionError, match="u2"):
        assert_no_held_out_leak(rows, {"u2"})
    with pytest.raises(AssertionError, match="u1"):
        assert_no_held_out_leak(rows, {"u1"})
