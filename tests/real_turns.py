"""Real human (and real assistant) turns from the corpora the package installs, for tests whose answer
is known: two samples of the same humans must not be told apart; assistant text must be caught."""

from __future__ import annotations

import random
from functools import lru_cache

from usersim.data_prep.adapters import iter_source
from usersim.data_prep.config import SourceConfig
from usersim.data_prep.schema import ASSISTANT, USER, Quarantined
from usersim.eval.judges import Context


@lru_cache(maxsize=2)
def chitchat_user_turns(n_conversations: int = 3000) -> dict[str, list[tuple[str, Context]]]:
    """user id -> [(real user turn, its context)] from the real chitchat corpus (one view per participant)."""
    by_user: dict[str, list[tuple[str, Context]]] = {}
    for conv in iter_source(SourceConfig(adapter="chitchat", max_items=n_conversations)):
        if isinstance(conv, Quarantined):
            continue
        previous, own = "", ""
        for turn in conv.turns:
            if turn.role == USER and turn.text.strip():
                by_user.setdefault(conv.user_id, []).append((turn.text, Context(previous, own)))
                own = turn.text
            previous = turn.text
    return by_user


def disjoint_user_samples(by_user, n_users: int, per_user: int, seed: int):
    """Two samples of ``n_users`` distinct users each (no user in both), ``per_user`` turns per user."""
    rng = random.Random(seed)
    users = rng.sample(sorted(u for u, ts in by_user.items() if len(ts) >= per_user), 2 * n_users)

    def take(group):
        rows = [(t, u) for u in group for t, _ in rng.sample(by_user[u], per_user)]
        return [t for t, _ in rows], [u for _, u in rows]

    return take(users[:n_users]), take(users[n_users:])


@lru_cache(maxsize=2)
def sharegpt_exchanges(n_conversations: int = 400, skip: int = 0) -> list[tuple[str, str, str]]:
    """(user id, a real user turn, the real ChatGPT reply to it) from the ShareGPT corpus.

    The first exchange of each of conversations ``skip`` .. ``skip + n_conversations`` of the file.
    """
    out = []
    for k, conv in enumerate(iter_source(SourceConfig(adapter="sharegpt", max_items=skip + n_conversations))):
        if k < skip or isinstance(conv, Quarantined):
            continue
        for a, b in zip(conv.turns, conv.turns[1:]):
            if a.role == USER and b.role == ASSISTANT and a.text.strip() and b.text.strip():
                out.append((conv.user_id, a.text, b.text))
                break
    return out
