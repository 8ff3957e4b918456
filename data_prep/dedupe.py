"""Exact duplicate conversations: same sequence of (role, normalised text), whoever the user is.

The key ignores ``user_id`` and ids, lower-cases and collapses whitespace, so a corpus that holds
the same chat twice (re-shares, re-crawls) keeps the first copy. The two participant views of one
human-human chat are *not* duplicates: their roles are swapped.
"""

from __future__ import annotations

from usersim.data_prep.schema import Conversation, stable_hash


def normalise_text(text: str) -> str:
    """Lower case, whitespace runs as one space, no outer whitespace (``str.split`` and ``\\s``
    agree on what whitespace is)."""
    return " ".join(text.split()).lower()


def conversation_key(conv: Conversation) -> str:
    """A user-id-independent hash of the normalised turns."""
    return stable_hash(*(f"{t.role}\x1e{normalise_text(t.text)}" for t in conv.turns), n_hex=32)


class DuplicateFilter:
    """Remembers conversation keys (as 128-bit integers); ``seen(conv)`` / ``seen_key(key)`` is True
    for a repeat."""

    def __init__(self) -> None:
        self._keys: set[int] = set()

    def seen(self, conv: Conversation) -> bool:
        return self.seen_key(conversation_key(conv))

    def seen_key(self, key: str) -> bool:
        k = int(key, 16)
        if k in self._keys:
            return True
        self._keys.add(k)
        return False
