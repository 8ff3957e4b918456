"""The data contract: conversations, turns, reason codes and quarantine records.

A *conversation* is one human's side of one chat: ``user_id`` is the person being simulated,
``turns`` alternate between ``user`` (that person) and ``assistant`` (whoever they talk to: a
chatbot, or in human-human corpora the other participant).

Adapters yield :class:`Conversation` or :class:`Quarantined` items; every item an adapter yields
is one unit of ``read`` in the stage's accounting, and ends as exactly one of kept/quarantined.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Union

USER = "user"
ASSISTANT = "assistant"
ROLES = (USER, ASSISTANT)


class Reason:
    """Reason codes for every dropped item (the quarantine vocabulary)."""

    BAD_JSON = "bad_json"
    INVALID_UTF8 = "invalid_utf8"
    TRUNCATED_FILE = "truncated_file"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    EMPTY_TURN = "empty_turn"
    NON_STRING_CONTENT = "non_string_content"
    UNKNOWN_ROLE = "unknown_role"
    NO_USER_TURN = "no_user_turn"
    NO_TURNS = "no_turns"
    TOO_LONG = "too_long"
    TOO_FEW_USER_TURNS = "too_few_user_turns"
    LANGUAGE = "language_filtered"
    TOXIC = "toxic"
    DUPLICATE = "duplicate"
    DELETED = "deleted"
    REVIEW_FAILED = "review_failed"
    MIXED_USERS = "mixed_users"
    HELD_OUT_LEAK = "held_out_leak"

    @classmethod
    def all(cls) -> list[str]:
        return sorted(v for k, v in vars(cls).items() if k.isupper())


@dataclass
class Turn:
    role: str
    text: str


@dataclass
class Conversation:
    id: str
    source: str
    user_id: str
    turns: list[Turn]
    metadata: dict[str, Any] = field(default_factory=dict)
    location: str = ""
    # The chat this view comes from (the two participant views of one human-human chat share it).
    group_id: str = ""
    # Other humans whose words appear here as context *and* who are modelled as users in their own
    # right (the partner in a human-human chat). Authors of assistant-role text (OASST's volunteer
    # assistant replies) are not listed. The split quarantines a training conversation whose
    # other_user_ids include a held-out user (held_out_leak).
    other_user_ids: list[str] = field(default_factory=list)

    def user_turns(self) -> list[str]:
        return [t.text for t in self.turns if t.role == USER]

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["metadata"] = json.dumps(self.metadata, sort_keys=True, ensure_ascii=False, default=str)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Conversation":
        meta = row.get("metadata") or "{}"
        return cls(
            id=row["id"],
            source=row["source"],
            user_id=row["user_id"],
            turns=[Turn(t["role"], t["text"]) for t in row["turns"]],
            metadata=json.loads(meta) if isinstance(meta, str) else dict(meta),
            location=row.get("location", ""),
            group_id=row.get("group_id", ""),
            other_user_ids=list(row.get("other_user_ids") or []),
        )


@dataclass
class Quarantined:
    source: str
    reason: str
    location: str
    detail: str = ""
    raw: Any = None

    def to_json(self, max_raw_chars: int = 2000) -> str:
        raw = self.raw
        if raw is not None and not isinstance(raw, str):
            raw = json.dumps(raw, ensure_ascii=False, default=str)
        if isinstance(raw, str) and len(raw) > max_raw_chars:
            raw = raw[:max_raw_chars] + f"...[{len(raw) - max_raw_chars} more chars]"
        return json.dumps(
            {"source": self.source, "reason": self.reason, "location": self.location,
             "detail": self.detail, "raw": raw},
            ensure_ascii=False,
        )


AdapterItem = Union[Conversation, Quarantined]


def stable_hash(*parts: Any, n_hex: int = 16) -> str:
    """Deterministic short hash (never Python's salted ``hash``)."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8"))
    return h.hexdigest()[:n_hex]
