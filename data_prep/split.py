"""Deterministic split by user: a held-out user's words never reach training.

``assign_split(user_id, seed, fractions)`` maps a user to ``train``/``validation``/``test`` by a
SHA-256 hash of ``seed`` and the user id (never Python's salted ``hash``), so the same user lands
in the same split in every run, process and machine, and adding users never moves existing ones.

Human-human corpora (chitchat) put a partner's words into a conversation as context, and that
partner is modelled as a user too: adapters list such partners in ``other_user_ids``. A
*training* conversation whose ``other_user_ids`` contains a held-out user is quarantined as
``held_out_leak``: otherwise the held-out person's turns would be trained on as context.
Corpora whose other side is the assistant role (a chatbot, or OASST's volunteer-written
assistant replies) leave ``other_user_ids`` empty, so the rule never fires for them.
:func:`assert_no_held_out_leak` re-checks the finished training rows and raises if any row
carries a held-out user's id.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any, Iterable, Mapping

from usersim.data_prep.config import SplitConfig
from usersim.data_prep.schema import Conversation, Quarantined, Reason

TRAIN, VALIDATION, TEST = "train", "validation", "test"
SPLITS = (TRAIN, VALIDATION, TEST)
HELD_OUT = (VALIDATION, TEST)


def split_fractions(cfg: SplitConfig) -> dict[str, float]:
    fr = {VALIDATION: cfg.validation_fraction, TEST: cfg.test_fraction}
    if any(v < 0 for v in fr.values()) or sum(fr.values()) >= 1:
        raise ValueError(f"split fractions must be >= 0 and leave room for train, got {fr}")
    return fr


@lru_cache(maxsize=1 << 16)  # users come back (several conversations, partners): hash each once
def _unit_interval(user_id: str, seed: int) -> float:
    digest = hashlib.sha256(f"usersim-split\x1f{seed}\x1f{user_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(user_id: str, seed: int, fractions: Mapping[str, float]) -> str:
    """``test`` for the first ``fractions['test']`` of hash space, then ``validation``, else ``train``."""
    u = _unit_interval(user_id, seed)
    test = fractions.get(TEST, 0.0)
    if u < test:
        return TEST
    if u < test + fractions.get(VALIDATION, 0.0):
        return VALIDATION
    return TRAIN


def leaks_held_out_user(conv: Conversation, seed: int, fractions: Mapping[str, float]) -> str | None:
    """The first held-out user whose words are context in this (training) conversation, if any."""
    for other in conv.other_user_ids:
        if assign_split(other, seed, fractions) != TRAIN:
            return other
    return None


def route_conversation(conv: Conversation, seed: int, fractions: Mapping[str, float]) -> tuple[str, Quarantined | None]:
    """The split of ``conv``, or a ``held_out_leak`` quarantine for a training view of a held-out user's chat."""
    split = assign_split(conv.user_id, seed, fractions)
    if split == TRAIN:
        other = leaks_held_out_user(conv, seed, fractions)
        if other is not None:
            return split, Quarantined(conv.source, Reason.HELD_OUT_LEAK, conv.location or conv.id,
                                      detail=f"context from held-out user {other}", raw=conv.to_row())
    return split, None


def assert_no_held_out_leak(train_rows: Iterable[Mapping[str, Any]], held_out_user_ids: set[str]) -> int:
    """Raise if a training row's ``user_id`` or ``other_user_ids`` is a held-out user; returns rows checked."""
    n = 0
    for row in train_rows:
        ids = {row["user_id"], *(row.get("other_user_ids") or [])}
        bad = ids & held_out_user_ids
        if bad:
            raise AssertionError(f"training row {row.get('id')!r} contains held-out user(s) {sorted(bad)}")
        n += 1
    return n
