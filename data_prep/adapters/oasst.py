"""OpenAssistant (OASST1/OASST2) message trees -> one conversation per human path.

Two export shapes, told apart row by row:

- flat message tables: rows ``message_id, parent_id, message_tree_id, role (prompter|assistant),
  user_id, text, lang, deleted, review_result, rank`` from JSONL(.gz), a JSON array, parquet, or
  ``hf:OpenAssistant/oasst1``;
- the trees export (``*.trees.jsonl(.gz)``): one tree per line, ``{message_tree_id, tree_state,
  prompt: {<message fields>, replies: [...]}}``; its nested messages are flattened into the same
  rows (tree id from the line, ``parent_id`` from the nesting when absent), so both shapes follow
  the same rules below. A trees line is processed as soon as it is read.

**Which paths become conversations.** Messages are grouped by ``message_tree_id`` and linked by
``parent_id``. From each root (a message without parent) a path is walked:

- after a prompter message, follow the *best-ranked* assistant reply only: the lowest ``rank``
  (0 = best; a missing rank ranks last; ties -> the earlier row);
- after an assistant message, *branch*: every prompter reply written by the path's user
  (the root's ``user_id``) continues its own path, so every distinct human path is kept;
- a path ends where no such continuation exists; each path is one Conversation, ending at its
  last message (``id`` = ``{source}:{last message_id}``).

**Several users in one thread.** OASST prompter replies are often written by other volunteers.
A path is *split at the first change of user*: prompter replies by another ``user_id`` are not
followed, so the conversation ends at the assistant message before them, and
``metadata["ends_at_user_change"]`` is True (that ending is not the human's own choice). Other
users' branches are not emitted (their words would need someone else's turns as context).
``other_user_ids`` is empty. OASST assistant replies are written by volunteers, but in the
assistant role: nobody models them as users, so their authors are not conversation partners, and
the split's ``held_out_leak`` rule (meant for human-human chats) must not see them. Listing them
would quarantine every training thread that has an assistant reply by someone whose id hashes
into a held-out split (a volunteer's prompter side, if any, is split with their own threads).

metadata: ``language`` (the root's ``lang``, the key the pipeline's language filter reads), ``tree_id``,
``ends_at_user_change``.

**Excluded messages.** A message that is ``deleted`` (-> ``deleted``), has ``review_result``
False (-> ``review_failed``), an unknown role, non-string text, text with an unpaired surrogate
escape (-> ``invalid_utf8``), or whose parent is not in its tree
(-> ``missing_field``) is excluded *with its whole subtree*, and yields **one Quarantined per
excluded subtree** (the topmost excluded message; ``detail`` says how many messages the subtree
held), wherever it sits in the tree. A row without ``message_id`` / ``message_tree_id``, or that
does not parse, is one Quarantined by itself.

**What a read item is** (read == kept + quarantined): one emitted path, one excluded subtree, or
one unusable row. Kept messages on paths the rule does not follow (lower-ranked assistant
replies, other users' branches) are not items: they are never used.

**Memory.** Trees export: one tree at a time. Flat JSONL(.gz): a first pass indexes
``tree id -> [byte offsets of its lines]`` (ids and integers only), then each tree's lines are
read back by seeking (for ``.gz``, offsets are in the decompressed stream; a file sorted by tree
is read back in one forward sweep, an unsorted one re-decompresses on backward seeks: slow but
correct). Parquet / JSON array: a first
pass checks that rows of a tree are contiguous; if so, trees are streamed one at a time, else
the file's rows are grouped in memory (convert such a file to JSONL to bound memory). ``hf:``:
streamed one contiguous run of a tree id at a time (the hub's OASST splits are ordered by tree;
a tree split across runs would lose the parent links: its detached part is quarantined
``missing_field``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from usersim.data_prep.adapters.json_stream import first_non_space_byte, iter_jsonl, open_binary, record_location
from usersim.data_prep.adapters.paths import check_options, is_hf, resolve_files, source_name
from usersim.data_prep.adapters.record_checks import BadRecord, quarantine_raw, require_encodable, text_hash
from usersim.data_prep.adapters.table_rows import TABLE_SUFFIXES, LocatedRecord, iter_table_file, source_rows
from usersim.data_prep.config import SourceConfig
from usersim.data_prep.schema import ASSISTANT, USER, AdapterItem, Conversation, Quarantined, Reason, Turn

OPTIONS: tuple[str, ...] = ()
ROLES = {"prompter": USER, "assistant": ASSISTANT}

Row = tuple[str, dict]  # (location, message row)


def _exclusion(row: dict) -> tuple[str, str] | None:
    """(reason, detail) when this message itself must be excluded, else None."""
    if row.get("deleted") is True:
        return Reason.DELETED, "message deleted"
    if row.get("review_result") is False:
        return Reason.REVIEW_FAILED, "message failed review"
    if row.get("role") not in ROLES:
        return Reason.UNKNOWN_ROLE, f"unknown role {row.get('role')!r}"
    if "text" not in row or row["text"] is None:
        return Reason.MISSING_FIELD, "message has no 'text'"
    if not isinstance(row["text"], str):
        return Reason.NON_STRING_CONTENT, f"text is a {type(row['text']).__name__}"
    try:
        row["text"].encode("utf-8")
    except UnicodeEncodeError:
        return Reason.INVALID_UTF8, "text holds an unpaired surrogate"
    return None


def _rank_key(order: int, row: dict) -> tuple:
    rank = row.get("rank")
    ok = isinstance(rank, (int, float)) and not isinstance(rank, bool) and rank == rank  # not NaN
    return (not ok, rank if ok else 0, order)


def tree_items(rows: list[Row], tree_id: str, source: str) -> list[AdapterItem]:
    """All items of one message tree (pure): emitted paths and excluded subtrees, in row order."""
    items: list[AdapterItem] = []
    by_id: dict[str, int] = {}
    valid: list[int] = []
    for i, (location, row) in enumerate(rows):
        mid = row.get("message_id")
        if not isinstance(mid, str) or not mid or mid in by_id:
            why = "duplicate message_id" if isinstance(mid, str) and mid else "row has no 'message_id'"
            items.append(Quarantined(source, Reason.MISSING_FIELD, location, why, row))
            continue
        by_id[mid] = i
        valid.append(i)
    children: dict[int, list[int]] = defaultdict(list)
    roots: list[int] = []
    orphans: set[int] = set()
    for i in valid:
        parent = rows[i][1].get("parent_id")
        if parent is None or parent == "":
            roots.append(i)
        elif isinstance(parent, str) and parent in by_id:
            children[by_id[parent]].append(i)
        else:
            roots.append(i)
            orphans.add(i)

    def subtree_size(i: int) -> int:
        size, stack = 0, [i]
        while stack:
            n = stack.pop()
            size += 1
            stack.extend(children[n])
        return size

    # Exclusion: topmost excluded message of each subtree, found top-down.
    excluded: set[int] = set()
    stack = list(roots)
    while stack:
        i = stack.pop()
        location, row = rows[i]
        why = (Reason.MISSING_FIELD, f"parent {row.get('parent_id')!r} is not in tree {tree_id!r}") \
            if i in orphans else _exclusion(row)
        if why is not None:
            excluded.add(i)
            n = subtree_size(i)
            items.append(Quarantined(source, why[0], location,
                                     f"{why[1]}; excluded with its subtree ({n} message{'s' * (n != 1)})", row))
            continue
        stack.extend(children[i])
    # (A cycle of parent links never reaches a root: such rows are neither kept nor items.)

    for root in roots:
        if root in excluded:
            continue
        for conv in _paths_from(root, rows, children, excluded, tree_id, source):
            try:
                items.append(require_encodable(conv))
            except BadRecord as e:  # an id with an unpaired surrogate
                items.append(Quarantined(source, e.reason, conv.location, e.detail, conv.to_row()))
    return items


def _paths_from(root: int, rows: list[Row], children: dict[int, list[int]], excluded: set[int],
                tree_id: str, source: str) -> Iterator[Conversation]:
    root_row = rows[root][1]
    raw_user = root_row.get("user_id")
    user = str(raw_user) if raw_user not in (None, "") else text_hash("oasst", tree_id)
    stack: list[list[int]] = [[root]]
    while stack:
        path = stack.pop()
        last = path[-1]
        kids = [k for k in children[last] if k not in excluded]
        if rows[last][1]["role"] == "prompter":
            replies = [k for k in kids if rows[k][1]["role"] == "assistant"]
            if replies:
                stack.append(path + [min(replies, key=lambda k: _rank_key(k, rows[k][1]))])
                continue
            user_change = False
        else:
            prompts = [k for k in kids if rows[k][1]["role"] == "prompter"]
            same = [k for k in prompts if rows[k][1].get("user_id") == raw_user]
            if same:
                stack.extend(path + [k] for k in reversed(same))  # keep row order when popped
                continue
            user_change = bool(prompts)
        yield _conversation(path, rows, tree_id, user, source, user_change)


def _conversation(path: list[int], rows: list[Row], tree_id: str, user: str, source: str,
                  user_change: bool) -> Conversation:
    msgs = [rows[i][1] for i in path]
    metadata: dict[str, Any] = {"tree_id": tree_id, "ends_at_user_change": user_change}
    if isinstance(msgs[0].get("lang"), str):
        metadata["language"] = msgs[0]["lang"]
    return Conversation(
        id=f"{source}:{msgs[-1]['message_id']}",
        source=source,
        user_id=user,
        turns=[Turn(ROLES[m["role"]], m["text"]) for m in msgs],
        metadata=metadata,
        location=rows[path[0]][0],
        group_id=f"{source}:{tree_id}",
        other_user_ids=[],  # assistant-role authors are not partners (module doc)
    )


def flatten_tree_record(record: Any) -> list[dict] | None:
    """Message rows of a trees-export record (pre-order: parents first), or None if ``record``
    is not one. A reply that is not an object becomes a row without ``message_id``."""
    if not isinstance(record, dict) or not isinstance(record.get("prompt"), dict):
        return None
    tree_id = record.get("message_tree_id") or record["prompt"].get("message_id")
    rows: list[dict] = []
    stack: list[tuple[Any, Any]] = [(record["prompt"], None)]
    while stack:
        node, parent = stack.pop()
        row = {k: v for k, v in node.items() if k != "replies"} if isinstance(node, dict) else {"raw": node}
        row.setdefault("message_tree_id", tree_id)
        if parent is not None and row.get("parent_id") in (None, ""):
            row["parent_id"] = parent
        rows.append(row)
        replies = node.get("replies") if isinstance(node, dict) else None
        if isinstance(replies, list):
            stack.extend((r, row.get("message_id")) for r in reversed(replies))
    return rows


def _tree_record_items(location: str, value: Any, name: str) -> list[AdapterItem] | None:
    rows = flatten_tree_record(value)
    if rows is None:
        return None
    return tree_items([(location, r) for r in rows], str(rows[0]["message_tree_id"]), name)


def _tree_id(rec_value: Any) -> str | None:
    if not isinstance(rec_value, dict):
        return None
    tid = rec_value.get("message_tree_id")
    return str(tid) if tid not in (None, "") else None


def _bad_row(name: str, location: str, value: Any) -> Quarantined:
    if not isinstance(value, dict):
        return Quarantined(name, Reason.NOT_AN_OBJECT, location, "row is not an object", value)
    return Quarantined(name, Reason.MISSING_FIELD, location, "row has no 'message_tree_id'", value)


def read_oasst(source: SourceConfig) -> Iterator[AdapterItem]:
    """Items of an OASST source (checks path/options now; reads lazily). See module doc."""
    check_options(source, OPTIONS)
    name = source_name(source)
    if not source.path:
        raise ValueError(f"source {name!r}: the oasst adapter needs `path` (a messages JSONL/parquet "
                         "file, glob or folder, or hf:OpenAssistant/oasst1)")
    if is_hf(source.path):
        return _by_runs(source_rows(source), name)
    files = resolve_files(source.path, TABLE_SUFFIXES)
    return _read_files(files, name)


def _read_files(files: list[Path], name: str) -> Iterator[AdapterItem]:
    for path in files:
        if not str(path).endswith(".parquet") and first_non_space_byte(path) != b"[":  # JSONL(.gz)
            yield from _jsonl_by_index(path, name)
        elif _contiguous(iter_table_file(path)):
            yield from _by_runs(iter_table_file(path), name)
        else:
            yield from _in_memory(iter_table_file(path), name)


def _contiguous(records: Iterable[LocatedRecord]) -> bool:
    done: set[str] = set()
    current = None
    for _, rec in records:
        tid = _tree_id(rec.value) if rec.ok else None
        if tid is None or tid == current:
            continue
        if tid in done:
            return False
        if current is not None:
            done.add(current)
        current = tid
    return True


@dataclass
class _TreeRow:
    """A readable message row and the tree it belongs to."""

    tree_id: str
    location: str
    rec: Any


def _sort_records(records: Iterable[LocatedRecord], name: str) -> Iterator[AdapterItem | _TreeRow]:
    """Quarantine unreadable rows, expand trees-export records, tag message rows with their tree id."""
    for location, rec in records:
        if not rec.ok:
            yield quarantine_raw(name, location, rec)
            continue
        tree = _tree_record_items(location, rec.value, name)
        if tree is not None:
            yield from tree
            continue
        tid = _tree_id(rec.value)
        if tid is None:
            yield _bad_row(name, location, rec.value)
            continue
        yield _TreeRow(tid, location, rec)


def _by_runs(records: Iterable[LocatedRecord], name: str) -> Iterator[AdapterItem]:
    """Trees as contiguous runs of rows with one tree id."""
    current, rows = None, []
    for row in _sort_records(records, name):
        if not isinstance(row, _TreeRow):
            yield row
            continue
        if row.tree_id != current and rows:
            yield from tree_items(rows, current, name)
            rows = []
        current = row.tree_id
        rows.append((row.location, row.rec.value))
    if rows:
        yield from tree_items(rows, current, name)


def _in_memory(records: Iterable[LocatedRecord], name: str) -> Iterator[AdapterItem]:
    trees: dict[str, list[Row]] = {}
    for row in _sort_records(records, name):
        if not isinstance(row, _TreeRow):
            yield row
            continue
        trees.setdefault(row.tree_id, []).append((row.location, row.rec.value))
    for tid, rows in trees.items():
        yield from tree_items(rows, tid, name)


def _jsonl_by_index(path: Path, name: str) -> Iterator[AdapterItem]:
    """JSONL in any row order: index tree id -> line offsets, then read each tree back."""
    index: dict[str, list[tuple[int, int]]] = {}
    for row in _sort_records(((record_location(path, rec), rec) for rec in iter_jsonl(path)), name):
        if not isinstance(row, _TreeRow):
            yield row
            continue
        index.setdefault(row.tree_id, []).append((row.rec.offset, row.rec.line))
    with open_binary(path) as fh:  # (a .gz seeks forward cheaply: sorted files read in one sweep)
        for tid, lines in index.items():
            rows = []
            for offset, line_no in lines:
                fh.seek(offset)
                rows.append((f"{path}:{line_no}", json.loads(fh.readline().decode("utf-8"))))
            yield from tree_items(rows, tid, name)
