import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usersim.data_prep.adapters import iter_source
from usersim.data_prep.config import SourceConfig
from usersim.data_prep.schema import Conversation, Reason, Turn
from usersim.data_prep.split import SPLITS, TRAIN, assert_no_held_out_leak, assign_split, route_conversation

REPO = str(Path(__file__).resolve().parents[1])
FRACTIONS = {"validation": 0.2, "test": 0.2}


def split_by_user(conversations, seed, fractions):
    """({split: kept conversations}, quarantined) through the stage's own :func:`route_conversation`."""
    out = {s: [] for s in SPLITS}
    dropped = []
    for conv in conversations:
        split, q = route_conversation(conv, seed, fractions)
        if q is not None:
            dropped.append(q)
        else:
            out[split].append(conv)
    return out, dropped


def test_assign_split_is_deterministic_across_processes_and_seed_dependent():
    users = [f"user-{i}" for i in range(200)]
    here = [assign_split(u, 7, FRACTIONS) for u in users]
    code = ("from usersim.data_prep.split import assign_split;"
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


def _ids_in(split: str, prefix: str, n: int) -> list[str]:
    """The first ``n`` ids ``prefix0, prefix1, ...`` that hash into ``split`` (seed 0, FRACTIONS)."""
    found = (f"{prefix}{i}" for i in range(10_000))
    out = [u for u in found if assign_split(u, 0, FRACTIONS) == split]
    return out[:n]


def test_oasst_assistant_authors_in_test_do_not_quarantine_training_threads(tmp_path):
    """OASST assistant replies are written by volunteers who are not modelled as users: a training
    thread whose assistant authors hash into test stays in train. Chitchat partners still leak."""
    prompters = _ids_in(TRAIN, "prompter-", 4)
    helpers = _ids_in("test", "helper-", 3)
    rows = []
    for t, user in enumerate(prompters):
        tree = f"T{t}"
        a, b = helpers[t % 3], helpers[(t + 1) % 3]
        rows += [
            {"message_id": f"{tree}p1", "parent_id": None, "message_tree_id": tree, "role": "prompter",
             "user_id": user, "text": "how do I boil an egg?", "lang": "en"},
            {"message_id": f"{tree}a1", "parent_id": f"{tree}p1", "message_tree_id": tree, "role": "assistant",
             "user_id": a, "text": "put it in boiling water", "lang": "en", "rank": 0},
            {"message_id": f"{tree}p2", "parent_id": f"{tree}a1", "message_tree_id": tree, "role": "prompter",
             "user_id": user, "text": "for how long?", "lang": "en"},
            {"message_id": f"{tree}a2", "parent_id": f"{tree}p2", "message_tree_id": tree, "role": "assistant",
             "user_id": b, "text": "about eight minutes", "lang": "en", "rank": 0},
        ]
    path = tmp_path / "oasst.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    threads = [c for c in iter_source(SourceConfig(adapter="oasst", path=str(path))) if isinstance(c, Conversation)]
    assert len(threads) == 4
    splits, dropped = split_by_user(threads, 0, FRACTIONS)
    assert dropped == []
    assert sorted(c.id for c in splits[TRAIN]) == [f"oasst:T{t}a2" for t in range(4)]
    assert {c.user_id for c in splits[TRAIN]} == set(prompters)

    # Human-human chats: the partner is a user too, so a held-out partner still quarantines.
    me, partner = _ids_in(TRAIN, "alice-", 1)[0], _ids_in("test", "bob-", 1)[0]
    chat = {"messages": [[{"sender": me, "text": "hi"}], [{"sender": partner, "text": "hello"}],
                         [{"sender": me, "text": "bye"}]], "prompt": "pets"}
    chat_path = tmp_path / "chat.json"
    chat_path.write_text(json.dumps({"c1": chat}))
    views = [c for c in iter_source(SourceConfig(adapter="chitchat", path=str(chat_path)))
             if isinstance(c, Conversation)]
    splits, dropped = split_by_user(views, 0, FRACTIONS)
    assert [c.user_id for c in splits[TRAIN]] == []
    assert [c.user_id for c in splits["test"]] == [partner]
    assert [(q.reason, q.detail) for q in dropped] == [(Reason.HELD_OUT_LEAK, f"context from held-out user {partner}")]
