"""Exact duplicate conversations: same sequence of (role, normalised text), whoever the user is.

The key ignores ``user_id`` and ids, lower-cases and collapses whitespace, so a corpus that holds
the same chat twice (re-shares, re-crawls) keeps the first copy. The two participant views of one
human-human chat are *not* duplicates: their roles are swapped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from usersim.data_prep.disk_store import DiskSet
from usersim.data_prep.schema import Conversation, stable_hash


def normalise_text(text: str) -> str:
    """Lower case, whitespace runs as one space, no outer whitespace (``str.split`` and ``\\s``
    agree on what whitespace is)."""
    return " ".join(text.split()).lower()


def conversation_key(conv: Conversation) -> str:
    """A user-id-independent hash of the normalised turns."""
    return stable_hash(*(f"{t.role}\x1e{normalise_text(t.text)}" for t in conv.turns), n_hex=32)


class DuplicateFilter:
    """Remembers conversation keys (as 16-byte blobs, on disk: usersim.data_prep.disk_store, so memory does not
    grow with the corpus); ``seen(conv)`` / ``seen_key(key)`` is True for a repeat, ``seen_keys(keys)`` the
    same for a batch, in order. ``path``: the database file (None: a temporary one)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self._keys = DiskSet(path)

    def seen(self, conv: Conversation) -> bool:
        return self.seen_key(conversation_key(conv))

    def seen_key(self, key: str) -> bool:
        return self.seen_keys([key])[0]

    def seen_keys(self, keys: Sequence[str]) -> list[bool]:
        return [not new for new in self._keys.add_new([bytes.fromhex(k) for k in keys])]

    def __len__(self) -> int:
        return len(self._keys)

    def close(self) -> None:
        self._keys.close()
