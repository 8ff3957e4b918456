"""Exact duplicate conversations: same sequence of (role, normalised text), whoever the user is.

The key ignores ``user_id`` and ids, lower-cases and collapses whitespace, so a corpus that holds
the same chat twice (re-shares, re-crawls) keeps the first copy. The two participant views of one
human-human chat are *not* duplicates: their roles are swapped.
"""

from __future__ import annotations

import re

from data_prep.schema import Conversation, stable_hash

_WS = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    return _WS.sub(" ", text).strip().lower()


def conversation_key(conv: Conversation) -> str:
    """A user-id-independent hash of the normalised turns."""
    return stable_hash(*(f"{t.role}\x1e{normalise_text(t.text)}" for t in conv.turns), n_hex=32)


class DuplicateFilter:
    """Remembers conversation keys (32 hex chars each); ``seen(conv)`` is True for a repeat."""

    def __init__(self) -> None:
        self._keys: set[str] = set()

    def seen(self, conv: Conversation) -> bool:
        key = conversation_key(conv)
        if key in self._keys:
            return True
        self._keys.add(key)
        return False
