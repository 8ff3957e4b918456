"""Generic chat JSONL: one ``{"messages": [{"role", "content"}], ...}`` per line.

Options (all optional; any other key is an error naming it):

=================  ===========================  ==============================================
option             default                      meaning
=================  ===========================  ==============================================
messages_field     ``"messages"``               the list of turns
role_field         ``"role"``                   role key inside a turn
content_field      ``"content"``                text key inside a turn
user_roles         ``["user", "human"]``        roles mapped to ``user``
assistant_roles    ``["assistant", "gpt",       roles mapped to ``assistant``
                   "bot"]``
system_roles       ``["system"]``               roles skipped (text kept in metadata["system"])
user_id_field      ``"user_id"``                the user id; absent -> stable hash of
                                                the record (its canonical JSON)
id_field           ``"id"``                     the conversation id; absent -> stable hash of
                                                the line's location (``path:line``)
=================  ===========================  ==============================================

Roles are compared case-insensitively. Content that is a list of OpenAI-style parts
(``[{"type": "text", "text": ...}]``) is joined (text parts, newline-separated); any other
non-string content -> ``non_string_content``. Other top-level scalar fields (str/bool/int/float,
e.g. ``language``) go to metadata. One item per non-blank line; a ``.json`` file whose first byte
is ``[`` is read as a JSON array instead (one item per element); ``.parquet`` row by row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

from usersim.data_prep.adapters.paths import check_options, is_hf, resolve_files, source_name
from usersim.data_prep.adapters.record_checks import (BadRecord, content_text, quarantine_raw, require_encodable,
                                                      require_field, require_list, require_object, text_hash)
from usersim.data_prep.adapters.table_rows import TABLE_SUFFIXES, iter_table_file, source_rows
from usersim.data_prep.config import SourceConfig
from usersim.data_prep.schema import ASSISTANT, USER, AdapterItem, Conversation, Quarantined, Reason, Turn


@dataclass
class JsonlOptions:
    """The jsonl adapter's options (see the module doc)."""

    messages_field: str = "messages"
    role_field: str = "role"
    content_field: str = "content"
    user_roles: list[str] = field(default_factory=lambda: ["user", "human"])
    assistant_roles: list[str] = field(default_factory=lambda: ["assistant", "gpt", "bot"])
    system_roles: list[str] = field(default_factory=lambda: ["system"])
    user_id_field: str = "user_id"
    id_field: str = "id"

    @classmethod
    def from_source(cls, source: SourceConfig) -> "JsonlOptions":
        opts = check_options(source, [f.name for f in fields(cls)])
        opts = {k: v for k, v in opts.items() if k in {f.name for f in fields(cls)}}
        for key in ("user_roles", "assistant_roles", "system_roles"):
            if key in opts and isinstance(opts[key], str):
                opts[key] = [opts[key]]
        return cls(**opts)

    def role_of(self, role: Any) -> str | None:
        """``user``/``assistant``, ``""`` for a system role, None for an unknown one."""
        key = role.strip().lower() if isinstance(role, str) else None
        if key in {r.lower() for r in self.user_roles}:
            return USER
        if key in {r.lower() for r in self.assistant_roles}:
            return ASSISTANT
        if key in {r.lower() for r in self.system_roles}:
            return ""
        return None


def jsonl_conversation(record: Any, line_text: str, opts: JsonlOptions, source: str,
                       location: str) -> Conversation:
    """Map one record (pure; raises BadRecord). ``line_text`` is the raw line, for hashes."""
    record = require_object(record, "record")
    turns: list[Turn] = []
    system: list[str] = []
    for i, msg in enumerate(require_list(record, opts.messages_field, "record")):
        where = f"{opts.messages_field}[{i}]"
        msg = require_object(msg, where)
        role_value = require_field(msg, opts.role_field, where)
        text = content_text(require_field(msg, opts.content_field, where), where)
        role = opts.role_of(role_value)
        if role is None:
            raise BadRecord(Reason.UNKNOWN_ROLE, f"{where}: unknown role {role_value!r}")
        if role:
            turns.append(Turn(role, text))
        else:
            system.append(text)
    native = record.get(opts.id_field)
    native = str(native) if isinstance(native, (str, int)) and str(native) else text_hash(location)
    user_id = record.get(opts.user_id_field)
    user_id = str(user_id) if isinstance(user_id, (str, int)) and str(user_id) else text_hash(line_text)
    skip = {opts.messages_field, opts.id_field, opts.user_id_field}
    metadata = {k: v for k, v in record.items()
                if k not in skip and isinstance(v, (str, bool, int, float))}
    if system:
        metadata["system"] = "\n\n".join(system)
    return require_encodable(Conversation(id=f"{source}:{native}", source=source, user_id=user_id,
                                          turns=turns, metadata=metadata, location=location))


def read_jsonl(source: SourceConfig) -> Iterator[AdapterItem]:
    """Items of a generic JSONL source (checks path/options now; reads lazily)."""
    opts = JsonlOptions.from_source(source)
    name = source_name(source)
    if is_hf(source.path):
        rows = source_rows(source)
    elif not source.path:
        raise ValueError(f"source {name!r}: the jsonl adapter needs `path` (a .jsonl file, glob or folder)")
    else:
        rows = _local_rows(resolve_files(source.path, TABLE_SUFFIXES))
    return _read(rows, opts, name)


def _local_rows(files: list[Path]):
    for path in files:
        yield from iter_table_file(path)


def _read(rows, opts: JsonlOptions, name: str) -> Iterator[AdapterItem]:
    for location, rec in rows:
        if not rec.ok:
            yield quarantine_raw(name, location, rec)
            continue
        line_text = json.dumps(rec.value, sort_keys=True, ensure_ascii=False, default=str)
        try:
            yield jsonl_conversation(rec.value, line_text, opts, name, location)
        except BadRecord as e:
            yield Quarantined(name, e.reason, location, e.detail, rec.value)
