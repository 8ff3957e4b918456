"""WildChat and LMSYS-Chat-1M: rows with ``conversation: [{role, content, ...}]``.

Read from parquet (batch by batch), JSONL / JSON array, or ``hf:allenai/WildChat-1M``-style hub
ids (streamed, online only). Registered as ``wildchat`` and ``lmsys``.

Mapping:

- roles ``user``/``human`` -> user, ``assistant``/``gpt``/``chatbot`` -> assistant, ``system``
  -> not a turn (text in ``metadata["system"]``); anything else -> ``unknown_role``;
- ``user_id``: WildChat's ``hashed_ip`` when present (a hashed IP: the best user id the corpus
  has); else a ``user_id`` column; else ``stable_hash`` of the conversation id (one user per
  conversation: LMSYS has no user ids);
- ``id`` = ``{source}:{conversation_hash | conversation_id | stable_hash(location)}``;
- metadata (only JSON-serialisable values, missing ones left out): ``country``, ``state``,
  ``language``, ``model``, ``toxic`` (bool; the pipeline drops it when ``filters.drop_toxic``),
  ``redacted``, ``timestamp`` (ISO text), ``turn`` (the corpus' turn count).

Bad rows: not an object, no ``conversation`` list, a turn without role/content, non-string
content (an OpenAI-style list of text parts is joined instead) -> one Quarantined each.
"""

from __future__ import annotations

from typing import Any, Iterator

from usersim.data_prep.adapters.json_stream import RawRecord
from usersim.data_prep.adapters.paths import check_options, source_name
from usersim.data_prep.adapters.record_checks import (BadRecord, map_role, content_text, metadata_value, optional_str,
                                                      quarantine_raw, require_encodable, require_field,
                                                      require_list, require_object, text_hash)
from usersim.data_prep.adapters.table_rows import source_rows
from usersim.data_prep.config import SourceConfig
from usersim.data_prep.schema import ASSISTANT, USER, AdapterItem, Conversation, Quarantined, Turn

OPTIONS: tuple[str, ...] = ()
USER_ROLES = frozenset({"user", "human"})
ASSISTANT_ROLES = frozenset({"assistant", "gpt", "chatbot"})
SYSTEM_ROLES = frozenset({"system"})
# Role names that map as they are (what the full check does for them, without the calls).
_PLAIN_ROLES = {"user": USER, "assistant": ASSISTANT}
assert set(_PLAIN_ROLES) <= USER_ROLES | ASSISTANT_ROLES
METADATA_FIELDS = ("country", "state", "language", "model", "toxic", "redacted", "timestamp", "turn")
ID_FIELDS = ("conversation_hash", "conversation_id")


def wildchat_conversation(row: Any, source: str, location: str) -> Conversation:
    """Map one WildChat/LMSYS row (pure; raises BadRecord)."""
    row = require_object(row, "row")
    turns: list[Turn] = []
    system: list[str] = []
    for i, msg in enumerate(require_list(row, "conversation", "row")):
        if type(msg) is dict and type(msg.get("content")) is str and msg.get("role") in _PLAIN_ROLES:
            turns.append(Turn(_PLAIN_ROLES[msg["role"]], msg["content"]))  # the common case, checked fast
            continue
        where = f"conversation[{i}]"
        msg = require_object(msg, where)
        role = require_field(msg, "role", where)
        text = content_text(require_field(msg, "content", where), where)
        map_role(role, text, where, user_roles=USER_ROLES, assistant_roles=ASSISTANT_ROLES,
                 system_roles=SYSTEM_ROLES, turns=turns, system=system)
    native = next((str(row[k]) for k in ID_FIELDS if row.get(k) not in (None, "")), None)
    native = native or text_hash(location)
    user_id = optional_str(row.get("hashed_ip")) or optional_str(row.get("user_id"))
    user_id = user_id or text_hash(source, "conversation", native)
    metadata = {k: metadata_value(row[k]) for k in METADATA_FIELDS if row.get(k) is not None}
    if system:
        metadata["system"] = "\n\n".join(system)
    return require_encodable(Conversation(id=f"{source}:{native}", source=source, user_id=user_id,
                                          turns=turns, metadata=metadata, location=location))


def read_wildchat(source: SourceConfig) -> Iterator[AdapterItem]:
    """Items of a WildChat/LMSYS source (checks path/options now; reads lazily)."""
    check_options(source, OPTIONS)
    return _read(source_rows(source), source_name(source))


def _read(rows, name: str) -> Iterator[AdapterItem]:
    for location, rec in rows:
        yield map_row(location, rec, name)


def map_row(location: str, rec: RawRecord, name: str) -> AdapterItem:
    """The item of one read row (a quarantine for a row that could not be read or mapped)."""
    if not rec.ok:
        return quarantine_raw(name, location, rec)
    try:
        return wildchat_conversation(rec.value, name, location)
    except BadRecord as e:
        return Quarantined(name, e.reason, location, e.detail, rec.value)
