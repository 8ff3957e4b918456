"""``usersim data``: corpora -> validated, PII-scrubbed, deduplicated, user-split simulator dataset.

Two passes, the corpus never in memory:

1. **Clean** (:func:`stream_sources`): every source item (``adapters.iter_source``; local
   WildChat/LMSYS JSONL as raw lines, parsed in the workers) is validated and cleaned
   (data_prep.validate), PII-scrubbed (data_prep.pii), given its dedupe key (data_prep.dedupe) and
   routed to its user's split (data_prep.split), in batches, in ``num_proc`` worker processes
   when that is > 1. This process then takes the items in reading order: dedupe decisions,
   quarantine lines (``quarantine.jsonl``, each with a reason), counts, the staged conversations
   (marshal frames, one file per split) and the training openers (on disk, by user), so all of it
   is the same for any ``num_proc``. ``read == kept + quarantined`` is checked per source.
2. **Condition** (:func:`write_dataset`): the training openers are ranked per user (persona
   history); the staged files are cut into chunks of ``CHUNK_ROWS`` conversations, which the
   workers condition (data_prep.conditioning) and turn into Arrow batches of records and, for
   held-out splits, per-turn items; this process writes the batches in staging order into the
   ``DatasetDict`` folder (data_prep.dataset_writer). With an annotator the chunks are
   conditioned here, in order (the annotator's ``max_conversations`` counts in that order).

Then no training row may carry a held-out user (read back from the Arrow files), and summary.json
and the dataset card are written. ``datasets`` is imported by a thread during pass 1.

What grows with the corpus in memory: one 128-bit dedupe key per kept conversation, the user ids
per split, and per training user with several conversations the few openers a persona history can
show (benchmarks: 733 MB for the whole process tree at 1M WildChat-shaped conversations).
"""

from __future__ import annotations

import json
import marshal
import multiprocessing
import random
import shutil
import tempfile
import threading
import time
import zlib
from collections import Counter, defaultdict, deque
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from usersim.data_prep.adapters import RawLine, iter_source, iter_source_lines, resolve_line
from usersim.data_prep.annotator import Annotator, annotate_or_fallback, make_annotator
from usersim.data_prep.card import format_summary_table, write_dataset_card
from usersim.data_prep.conditioning import (SCRUBBED_FIELDS, build_condition, clip, persona_from_head, persona_head,
                                            rank_typical_openers, scrub_condition)
from usersim.data_prep.config import DataPrepConfig
from usersim.data_prep.dataset_writer import DatasetDictWriter, iter_split_batches, table_from_ipc, table_to_ipc
from usersim.data_prep.dedupe import DuplicateFilter, conversation_key
from usersim.data_prep.pii import scrub_text
from usersim.data_prep.prompt_format import STYLE_KEYS, Condition
from usersim.data_prep.records import per_turn_items
from usersim.data_prep.run_info import peak_rss_mb, write_run_dir_header
from usersim.data_prep.schema import ASSISTANT, USER, Conversation, Quarantined, Reason, Turn
from usersim.data_prep.split import HELD_OUT, SPLITS, TRAIN, assert_no_held_out_leak, route_conversation, split_fractions
from usersim.data_prep.validate import validate_conversation

MAX_OPENERS_PER_USER = 50  # training openers remembered per user for the persona summary
CHUNK_ROWS = 500  # staged conversations per conditioning task (one Arrow batch each)
BATCH_ITEMS = 500  # adapter items per cleaning task


class LineWriter:
    """Append-only text file, one line per call (the quarantine file)."""

    def __init__(self, path: Path) -> None:
        self._f = Path(path).open("w", encoding="utf-8")

    def write_line(self, line: str) -> None:
        self._f.write(line + "\n")

    def close(self) -> None:
        self._f.close()


def import_output_modules() -> None:
    """Import what writing the dataset needs (``datasets``: about half a second), so a thread can
    do it while pass 1 runs; nothing before pass 2 needs it."""
    import datasets.arrow_writer  # noqa: F401
    import datasets.fingerprint  # noqa: F401

    import usersim.data_prep.records_io  # noqa: F401


def output_schemas() -> tuple[pa.Schema, pa.Schema]:
    """The Arrow schemas of conversation records and per-turn items (usersim.data_prep.records_io)."""
    from usersim.data_prep.records_io import RECORD_FEATURES, TURN_ITEM_FEATURES

    return RECORD_FEATURES.arrow_schema, TURN_ITEM_FEATURES.arrow_schema


class SourceCounts:
    """read / kept / quarantined-by-reason of one source."""

    def __init__(self) -> None:
        self.read = 0
        self.kept = 0
        self.quarantined: Counter = Counter()

    def check(self, name: str) -> None:
        total = self.kept + sum(self.quarantined.values())
        if self.read != total:
            raise RuntimeError(f"source {name!r}: read={self.read} != kept={self.kept} + "
                               f"quarantined={sum(self.quarantined.values())}; an item was lost or double-counted")

    def to_json(self) -> dict[str, Any]:
        return {"read": self.read, "kept": self.kept, "quarantined": dict(sorted(self.quarantined.items()))}


def scrub_conversation(conv: Conversation, counts: Counter) -> Conversation:
    """``conv`` with PII scrubbed from every turn (``conv`` itself when no turn changes)."""
    texts = [scrub_text(t.text, counts) for t in conv.turns]
    if all(new is t.text for new, t in zip(texts, conv.turns)):
        return conv
    return replace(conv, turns=[Turn(t.role, new) for t, new in zip(conv.turns, texts)])


def scrub_quarantined(q: Quarantined, max_raw_chars: int = 2000) -> Quarantined:
    """The quarantine record with PII scrubbed from its raw text (clipped first; not counted in summary)."""
    if q.raw is None:
        return q
    raw = q.raw if isinstance(q.raw, str) else json.dumps(q.raw, ensure_ascii=False, default=str)
    return replace(q, raw=scrub_text(raw[: max_raw_chars + 200]) if len(raw) > max_raw_chars + 200
                   else scrub_text(raw))


# ---- staging: kept conversations as length-prefixed marshal frames ---------------------------

def stage_frame(conv: Conversation) -> bytes:
    """One staged conversation: its row's fields (metadata as its JSON text), marshalled as a
    header ``(id, user_id)`` and a body (the rest), each with a 4-byte length in front, so the
    ids can be read without the text. ``marshal`` is ~10x faster than JSON both ways and loses
    nothing here: every field is text (adapters build ids and turns as ``str``)."""
    head = marshal.dumps((conv.id, conv.user_id))
    body = marshal.dumps((conv.source, tuple((t.role, t.text) for t in conv.turns),
                          json.dumps(conv.metadata, sort_keys=True, ensure_ascii=False, default=str),
                          conv.location, conv.group_id, tuple(conv.other_user_ids)))
    return len(head).to_bytes(4, "little") + len(body).to_bytes(4, "little") + head + body


def iter_frame_bounds(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(header start, body start, body end) of each staged conversation in ``data``."""
    pos, end = 0, len(data)
    while pos < end:
        head = int.from_bytes(data[pos:pos + 4], "little")
        body = int.from_bytes(data[pos + 4:pos + 8], "little")
        yield pos + 8, pos + 8 + head, pos + 8 + head + body
        pos += 8 + head + body


def iter_frame_ids(data: bytes) -> Iterator[tuple[str, str]]:
    """(conversation id, user id) of each staged conversation in ``data`` (the text stays unread)."""
    view = memoryview(data)
    for start, mid, _ in iter_frame_bounds(data):
        yield marshal.loads(view[start:mid])


def iter_frames(data: bytes) -> Iterator[tuple]:
    """The staged tuples in ``data``: (id, source, user_id, turns, metadata, location, group_id, others)."""
    view = memoryview(data)
    for start, mid, end in iter_frame_bounds(data):
        cid, user_id = marshal.loads(view[start:mid])
        source, turns, metadata, location, group_id, others = marshal.loads(view[mid:end])
        yield cid, source, user_id, turns, metadata, location, group_id, others


def frame_row(frame: tuple) -> dict[str, Any]:
    """The staged conversation's row: ``Conversation.to_row()`` of the conversation it was made from."""
    cid, source, user_id, turns, metadata, location, group_id, others = frame
    return {"id": cid, "source": source, "user_id": user_id, "turns": [{"role": r, "text": t} for r, t in turns],
            "metadata": metadata, "location": location, "group_id": group_id, "other_user_ids": list(others)}


class StagingWriter:
    """A split's staged conversations, cut into chunks of ``chunk_rows`` (byte ranges)."""

    def __init__(self, path: Path, chunk_rows: int = CHUNK_ROWS) -> None:
        self.path = Path(path)
        self._f = self.path.open("wb")
        self.chunk_rows = chunk_rows
        self.n = 0
        self._offset = 0
        self._chunk_start = 0
        self.chunks: list[tuple[int, int]] = []  # (start byte, end byte) of each chunk

    def write_frame(self, frame: bytes) -> None:
        self._f.write(frame)
        self._offset += len(frame)
        self.n += 1
        if self.n % self.chunk_rows == 0:
            self._end_chunk()

    def _end_chunk(self) -> None:
        if self._offset > self._chunk_start:
            self.chunks.append((self._chunk_start, self._offset))
            self._chunk_start = self._offset

    def close(self) -> None:
        self._end_chunk()
        self._f.close()

    def read_chunk(self, chunk: tuple[int, int]) -> bytes:
        with self.path.open("rb") as f:
            f.seek(chunk[0])
            return f.read(chunk[1] - chunk[0])


class OpenerSpill:
    """Every training conversation's (user, conversation id, clipped opener), in reading order, on
    disk in ``PARTITIONS`` files by user (a CRC of the user id), so the openers cost no memory
    during pass 1 and :func:`user_heads` reads one partition's users at a time."""

    PARTITIONS = 32

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._files = [(self.folder / f"{k:02d}.bin").open("wb") for k in range(self.PARTITIONS)]

    def add(self, user_id: str, cid: str, opener: str) -> None:
        data = marshal.dumps((user_id, cid, opener))
        f = self._files[zlib.crc32(user_id.encode("utf-8", "surrogatepass")) % self.PARTITIONS]
        f.write(len(data).to_bytes(4, "little") + data)

    def close(self) -> None:
        for f in self._files:
            f.close()

    def partitions(self) -> Iterator[dict[str, list[tuple[str, str]]]]:
        """Per partition: user -> their first ``MAX_OPENERS_PER_USER`` (conversation id, opener)."""
        for k in range(self.PARTITIONS):
            path = self.folder / f"{k:02d}.bin"
            data = path.read_bytes()
            users: dict[str, list[tuple[str, str]]] = defaultdict(list)
            pos = 0
            while pos < len(data):
                size = int.from_bytes(data[pos:pos + 4], "little")
                user_id, cid, opener = marshal.loads(data[pos + 4:pos + 4 + size])
                pos += 4 + size
                found = users[user_id]
                if len(found) < MAX_OPENERS_PER_USER:
                    found.append((cid, opener))
            del data
            path.unlink()
            yield users


# ---- pass 1 ------------------------------------------------------------------------------

class Cleaned(NamedTuple):
    """What pass 1 makes of one adapter conversation, before the in-order steps (dedupe, counts,
    staging): a quarantine line, or the staged frame with its dedupe key and split."""

    merged_turns: int
    empty_turns_dropped: int
    reason: str | None = None  # validation quarantine reason (``line`` is its quarantine line)
    line: str = ""
    key: str | None = None  # dedupe key (None when duplicates are kept)
    split: str = ""
    leak_reason: str | None = None  # held_out_leak (``line`` is its quarantine line)
    frame: bytes = b""
    user_id: str = ""
    cid: str = ""
    opener: str = ""  # the first user turn, clipped (persona history)
    location: str = ""


def quarantine_line(q: Quarantined, scrub_pii: bool) -> str:
    return (scrub_quarantined(q) if scrub_pii else q).to_json()


def clean_conversations(convs: list[Conversation | Quarantined], cfg: DataPrepConfig, fractions: dict[str, float]
                        ) -> tuple[list[Cleaned], Counter]:
    """The order-free part of pass 1 for a batch (validate, PII scrub, dedupe key, split), and the
    PII replacements made; pure, so it runs in worker processes. A quarantined item (a raw line
    the adapter could not map) passes through as its quarantine line."""
    out: list[Cleaned] = []
    pii: Counter = Counter()
    filters = cfg.filters
    for conv in convs:
        if isinstance(conv, Quarantined):
            out.append(Cleaned(0, 0, reason=conv.reason, line=quarantine_line(conv, filters.scrub_pii)))
            continue
        cleaned, stats = validate_conversation(conv, filters)
        if isinstance(cleaned, Quarantined):
            out.append(Cleaned(stats.merged_turns, stats.empty_turns_dropped, reason=cleaned.reason,
                               line=quarantine_line(cleaned, filters.scrub_pii)))
            continue
        if filters.scrub_pii:
            cleaned = scrub_conversation(cleaned, pii)
        split, leak = route_conversation(cleaned, cfg.seed, fractions)
        first = next(t.text for t in cleaned.turns if t.role == USER)
        out.append(Cleaned(stats.merged_turns, stats.empty_turns_dropped,
                           key=conversation_key(cleaned) if filters.drop_duplicates else None, split=split,
                           leak_reason=None if leak is None else leak.reason,
                           line="" if leak is None else quarantine_line(leak, filters.scrub_pii),
                           frame=stage_frame(cleaned), user_id=cleaned.user_id, cid=cleaned.id, opener=clip(first, 200),
                           location=cleaned.location or cleaned.id))
    return out, pii


def stream_sources(cfg: DataPrepConfig, staging: Path, quarantine: LineWriter, pool: Any = None) -> dict[str, Any]:
    """Pass 1: every source item ends kept (in a split's staging file) or quarantined.

    Items are read in batches; :func:`clean_conversations` runs on each batch (in ``pool`` when
    given) and the in-order steps follow item by item in reading order, so quarantine lines,
    dedupe decisions, openers and counts are the same with or without workers."""
    fractions = split_fractions(cfg.split)
    writers = {s: StagingWriter(staging / f"{s}.bin") for s in SPLITS}
    users: dict[str, set[str]] = {s: set() for s in SPLITS}
    openers = OpenerSpill(staging / "openers")
    per_source: dict[str, SourceCounts] = {}
    stats: Counter = Counter()
    pii: Counter = Counter()
    dupes = DuplicateFilter()

    def drop(counts: SourceCounts, q: Quarantined) -> None:
        counts.quarantined[q.reason] += 1
        quarantine.write_line(quarantine_line(q, cfg.filters.scrub_pii))

    def settle(name: str, counts: SourceCounts, batch: list, cleaned: list[Cleaned], batch_pii: Counter) -> None:
        pii.update(batch_pii)
        results = iter(cleaned)
        for item in batch:
            if isinstance(item, Quarantined):
                drop(counts, replace(item, source=name))
                continue
            c = next(results)
            stats["merged_turns"] += c.merged_turns
            stats["empty_turns_dropped"] += c.empty_turns_dropped
            if c.reason is not None:
                counts.quarantined[c.reason] += 1
                quarantine.write_line(c.line)
                continue
            if c.key is not None and dupes.seen_key(c.key):
                drop(counts, Quarantined(name, Reason.DUPLICATE, c.location, "exact duplicate of an earlier conversation",
                                         frame_row(next(iter_frames(c.frame)))))
                continue
            if c.leak_reason is not None:
                counts.quarantined[c.leak_reason] += 1
                quarantine.write_line(c.line)
                continue
            writers[c.split].write_frame(c.frame)
            users[c.split].add(c.user_id)
            counts.kept += 1
            if c.split == TRAIN:
                openers.add(c.user_id, c.cid, c.opener)

    for src in cfg.sources:
        name = src.name or src.adapter
        counts = per_source.setdefault(name, SourceCounts())
        # local JSONL of a line-mapped adapter, with workers: parsed and mapped by the workers
        lines = iter_source_lines(src) if pool is not None else None
        items = tqdm(iter_source(src) if lines is None else lines, desc=f"read {name}", unit=" items",
                     disable=not cfg.show_progress, total=src.max_items or None)
        for batch, (cleaned, batch_pii) in _batches_cleaned(items, src.adapter, name, counts, cfg, fractions, pool):
            settle(name, counts, batch, cleaned, batch_pii)
        counts.check(name)
    for w in writers.values():
        w.close()
    openers.close()
    return {"per_source": per_source, "users": users, "openers": openers, "stats": stats, "pii": pii,
            "conversations": {s: w.n for s, w in writers.items()}, "staging": writers}


def _batches_cleaned(items: Iterable, adapter: str, name: str, counts: SourceCounts, cfg: DataPrepConfig,
                     fractions: dict[str, float], pool: Any) -> Iterator[tuple[list, tuple[list[Cleaned], Counter]]]:
    """(batch of adapter items, :func:`clean_conversations` of its conversations and raw lines), in order."""
    def batches() -> Iterator[list]:
        batch: list = []
        for item in items:
            counts.read += 1
            if isinstance(item, Conversation) and item.source != name:
                item = replace(item, source=name)
            batch.append(item)
            if len(batch) >= BATCH_ITEMS:
                yield batch
                batch = []
        if batch:
            yield batch

    if pool is None:
        for batch in batches():
            convs = [resolve_line(it, adapter, name) if isinstance(it, RawLine) else it
                     for it in batch if not isinstance(it, Quarantined)]
            yield batch, clean_conversations(convs, cfg, fractions)
        return
    pending: deque = deque()
    for batch in batches():
        # conversations travel as tuples (3x cheaper to pickle than dataclasses), raw lines as they are
        sent = [(True, tuple(it)) if isinstance(it, RawLine) else (False, conversation_tuple(it))
                for it in batch if not isinstance(it, Quarantined)]
        pending.append((batch, pool.apply_async(_worker_clean, (sent, fractions, adapter, name))))
        if len(pending) >= 2 * pool._processes:
            batch, result = pending.popleft()
            yield batch, result.get()
    while pending:
        batch, result = pending.popleft()
        yield batch, result.get()


# ---- pass 2 ------------------------------------------------------------------------------

def user_heads(openers: OpenerSpill, n_turns: int) -> dict[str, bytes]:
    """Per user with more than one training opener: the marshalled
    :func:`~usersim.data_prep.conditioning.persona_head` of their ranked openers, all a persona history
    needs (read one partition of users at a time)."""
    heads = {}
    for users in openers.partitions():
        for user, found in users.items():
            if len(found) > 1:
                heads[user] = marshal.dumps(tuple(persona_head(rank_typical_openers(found), n_turns)))
    return heads


def condition_row_to_dict(condition: Condition) -> dict[str, Any]:
    """``condition.to_row()`` without ``dataclasses.asdict``'s deep copy."""
    return {"persona": condition.persona, "goal": condition.goal,
            "knowledge_discloses": list(condition.knowledge_discloses),
            "knowledge_asks": list(condition.knowledge_asks),
            "style": {k: condition.style.get(k, "") for k in STYLE_KEYS}}


class Conditioner:
    """Pass 2 on one chunk of a staged split: conditioned records and (held-out splits) per-turn
    items, as Arrow tables. Runs in this process (annotator, ``num_proc`` 1) or in workers."""

    def __init__(self, cfg: DataPrepConfig, schemas: tuple[pa.Schema, pa.Schema], annotator: Annotator | None = None,
                 annotator_counts: Counter | None = None) -> None:
        self.cfg = cfg
        self.record_schema, self.item_schema = schemas
        self.annotator = annotator
        self.annotator_counts = annotator_counts if annotator_counts is not None else Counter()

    def records(self, data: bytes, heads: list[bytes | None], scrubbed: Counter) -> Iterator[dict[str, Any]]:
        """The conditioned records of a staged chunk; ``heads``: each conversation's user's
        marshalled persona head (None: no persona history)."""
        ccfg = self.cfg.conditioning
        limit = ccfg.annotator.max_conversations
        for frame, head in zip(iter_frames(data), heads):
            history = "" if head is None else persona_from_head(marshal.loads(head), frame[0],
                                                                ccfg.persona_history_turns)
            row = frame_row(frame)
            conv = Conversation(id=row["id"], source=row["source"], user_id=row["user_id"],
                                turns=[Turn(r, t) for r, t in frame[3]], metadata=json.loads(row["metadata"]),
                                location=row["location"], group_id=row["group_id"],
                                other_user_ids=list(row["other_user_ids"]))
            condition = build_condition(conv, ccfg, history, scrubbed)
            if self.annotator is not None and (not limit or self.annotator_counts["attempted"] < limit):
                self.annotator_counts["attempted"] += 1
                fields = [f for f in ccfg.annotator.fields if getattr(ccfg, f)]
                values = annotate_or_fallback(self.annotator, conv, fields, condition.to_row(), self.annotator_counts)
                condition = scrub_condition(Condition.from_row(values), conv.user_turns(), counts=scrubbed)
            del row["location"]
            row["condition"] = condition_row_to_dict(condition)
            row["end_of_conversation"] = bool(conv.turns) and conv.turns[-1].role == ASSISTANT
            yield row

    def chunk(self, split: str, data: bytes, heads: list[bytes | None]) -> dict[str, Any]:
        scrubbed: Counter = Counter()
        rows = list(self.records(data, heads, scrubbed))
        out: dict[str, Any] = {"split": split, "scrubbed": scrubbed, "items": None,
                               "records": pa.Table.from_pylist(rows, schema=self.record_schema)}
        if split in HELD_OUT:
            items = [it for row in rows for it in per_turn_items(row)]
            out["items"] = pa.Table.from_pylist(items, schema=self.item_schema)
        return out


def condition_tasks(cfg: DataPrepConfig, passed: dict[str, Any], heads: Callable[[], dict[str, bytes]],
                    held_out_first: bool = False) -> Iterator[tuple[str, bytes, list[bytes | None]]]:
    """(split, staged chunk, each conversation's user's persona head or None).

    ``heads()`` (the marshalled persona heads per user) is called when the first training chunk
    is due. Held-out conversations never have a history (their users have no training
    conversation: the split is a function of the user), so with ``held_out_first`` their chunks
    come first and workers condition them while this process ranks the training openers;
    otherwise the splits come in order (an annotator counts conversations in that order)."""
    ccfg = cfg.conditioning
    with_history = ccfg.persona and ccfg.persona_history_turns > 0
    order = [*HELD_OUT, TRAIN] if held_out_first else list(SPLITS)
    per_user: dict[str, bytes] | None = None
    for split in order:
        staged: StagingWriter = passed["staging"][split]
        for chunk in staged.chunks:
            data = staged.read_chunk(chunk)
            if split in HELD_OUT or not with_history:
                yield split, data, [None] * sum(1 for _ in iter_frame_bounds(data))
                continue
            if per_user is None:
                per_user = heads()
            yield split, data, [per_user.get(user_id) for _, user_id in iter_frame_ids(data)]
    if per_user is None:
        heads()  # the summary counts the users with a history persona either way


# ---- worker processes --------------------------------------------------------------------

_WORKER_CFG: DataPrepConfig | None = None  # the stage config in a worker process


def _init_worker(cfg: DataPrepConfig) -> None:
    global _WORKER_CFG
    _WORKER_CFG = cfg


def conversation_tuple(conv: Conversation) -> tuple:
    return (conv.id, conv.source, conv.user_id, [(t.role, t.text) for t in conv.turns], conv.metadata, conv.location,
            conv.group_id, conv.other_user_ids)


def tuple_conversation(t: tuple) -> Conversation:
    return Conversation(id=t[0], source=t[1], user_id=t[2], turns=[Turn(r, x) for r, x in t[3]], metadata=t[4],
                        location=t[5], group_id=t[6], other_user_ids=t[7])


def _worker_clean(sent: list[tuple], fractions: dict[str, float], adapter: str, name: str
                  ) -> tuple[list[Cleaned], Counter]:
    assert _WORKER_CFG is not None
    convs = [resolve_line(RawLine(*t), adapter, name) if is_line else tuple_conversation(t) for is_line, t in sent]
    return clean_conversations(convs, _WORKER_CFG, fractions)


def _worker_condition(task: tuple[str, bytes, list[bytes | None], tuple[pa.Schema, pa.Schema]]) -> dict[str, Any]:
    assert _WORKER_CFG is not None
    split, data, heads, schemas = task
    out = Conditioner(_WORKER_CFG, schemas).chunk(split, data, heads)
    out["records"] = table_to_ipc(out["records"])
    out["items"] = None if out["items"] is None else table_to_ipc(out["items"])
    return out


def make_pool(cfg: DataPrepConfig) -> Any:
    """``cfg.num_proc`` worker processes (None for 1): forked where the platform allows it, else
    spawned; each gets the config once."""
    if cfg.num_proc <= 1:
        return None
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method).Pool(cfg.num_proc, initializer=_init_worker, initargs=(cfg,))


def _in_order(pool: Any, fn: Callable, tasks: Iterable, window: int) -> Iterator[Any]:
    """``fn`` over ``tasks`` in ``pool``, results in task order, at most ``window`` tasks in flight
    (so finished batches never pile up in memory)."""
    pending: deque = deque()
    for task in tasks:
        pending.append(pool.apply_async(fn, (task,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def conditioned_chunks(cfg: DataPrepConfig, tasks: Iterable, conditioner: Conditioner,
                       pool: Any) -> Iterator[dict[str, Any]]:
    """Every chunk's result, in task order; in ``pool`` unless an annotator is set (an annotator
    runs here, in order, as its ``max_conversations`` counts conversations in that order)."""
    if pool is None or conditioner.annotator is not None:
        yield from (conditioner.chunk(*task) for task in tasks)
        return
    schemas = (conditioner.record_schema, conditioner.item_schema)
    for out in _in_order(pool, _worker_condition, ((*task, schemas) for task in tasks), window=2 * cfg.num_proc):
        out["records"] = table_from_ipc(out["records"])
        out["items"] = None if out["items"] is None else table_from_ipc(out["items"])
        yield out


def write_dataset(cfg: DataPrepConfig, folder: Path, passed: dict[str, Any], tasks: Iterable,
                  conditioner: Conditioner, pool: Any, scrubbed: Counter) -> DatasetDictWriter:
    """Pass 2: conditioned records per split and per-turn items for held-out splits, as Arrow."""
    from usersim.data_prep.records_io import RECORD_FEATURES, TURN_ITEM_FEATURES

    features = {s: RECORD_FEATURES for s in SPLITS}
    features.update({f"{s}_turns": TURN_ITEM_FEATURES for s in HELD_OUT})
    writer = DatasetDictWriter(folder, features)
    total = sum(passed["conversations"].values())
    with tqdm(total=total, desc="condition", unit=" conversations", disable=not cfg.show_progress) as bar:
        for out in conditioned_chunks(cfg, tasks, conditioner, pool):
            writer[out["split"]].write(out["records"])
            if out["items"] is not None:
                writer[f"{out['split']}_turns"].write(out["items"])
            scrubbed.update(out["scrubbed"])
            bar.update(out["records"].num_rows)
    writer.close()
    return writer


def check_no_held_out_leak(train_folder: Path, held_out_users: set[str]) -> int:
    """:func:`~usersim.data_prep.split.assert_no_held_out_leak` over the written training rows (read back
    column by column from the Arrow files); returns rows checked."""
    n = 0
    held = pa.array(sorted(held_out_users), type=pa.string())
    for batch in iter_split_batches(train_folder, ["id", "user_id", "other_user_ids"]):
        n += batch.num_rows
        if not len(held) or not (pc.any(pc.is_in(batch.column("user_id"), value_set=held)).as_py()
                                 or pc.any(pc.is_in(batch.column("other_user_ids").flatten(), value_set=held)).as_py()):
            continue
        assert_no_held_out_leak(batch.to_pylist(), held_out_users)
    return n


def main(cfg: DataPrepConfig) -> Path:
    random.seed(cfg.seed)  # nothing below draws at random; the split is a hash of (seed, user id)
    started = time.time()
    annotator = make_annotator(cfg.conditioning.annotator)  # a bad annotator config fails before reading
    out = Path(cfg.output_dir)
    write_run_dir_header(out, cfg, cfg.seed, "data")
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    pool = make_pool(cfg)  # (forked before any thread starts)
    importer = threading.Thread(target=import_output_modules, name="usersim-data-imports", daemon=True)
    importer.start()
    try:
        quarantine = LineWriter(out / "quarantine.jsonl")
        passed = stream_sources(cfg, staging, quarantine, pool)
        quarantine.close()
        importer.join()
        if not cfg.show_progress:
            import datasets

            datasets.disable_progress_bars()

        heads: dict[str, bytes] = {}

        def rank() -> dict[str, bytes]:
            heads.update(user_heads(passed.pop("openers"), cfg.conditioning.persona_history_turns))
            return heads

        annotator_counts: Counter = Counter()
        scrubbed: Counter = Counter()
        conditioner = Conditioner(cfg, output_schemas(), annotator, annotator_counts)
        in_workers = pool is not None and annotator is None
        tasks = condition_tasks(cfg, passed, rank, held_out_first=in_workers)
        written = write_dataset(cfg, staging / "dataset", passed, tasks, conditioner, pool, scrubbed)
        held_out_users = set().union(*(passed["users"][s] for s in HELD_OUT))
        check_no_held_out_leak(written[TRAIN].folder, held_out_users)
        turn_items = {f"{s}_turns": written[f"{s}_turns"].rows for s in HELD_OUT}
        written.commit(out / "dataset")
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        shutil.rmtree(staging, ignore_errors=True)

    summary = {
        "sources": {n: c.to_json() for n, c in passed["per_source"].items()},
        "splits": {s: {"users": len(passed["users"][s]), "conversations": passed["conversations"][s]} for s in SPLITS},
        "turn_items": turn_items,
        "merged_turns": passed["stats"]["merged_turns"],
        "empty_turns_dropped": passed["stats"]["empty_turns_dropped"],
        "pii": {k: passed["pii"].get(k, 0) for k in ("email", "phone", "ip", "credential_url")},
        "annotator": {"kind": cfg.conditioning.annotator.kind, **dict(annotator_counts)},
        "users_with_history_persona": len(heads),
        "condition_items_scrubbed": {f: scrubbed[f] for f in SCRUBBED_FIELDS},
        "time_s": round(time.time() - started, 1),
        "peak_rss_mb": peak_rss_mb(children=True),
    }
    from usersim.data_prep.records_io import write_json

    write_json(out / "summary.json", summary)
    write_dataset_card(out / "README.md", cfg, summary)
    print(format_summary_table(summary))
    return out


def cli(argv: list[str]) -> int:
    from usersim.data_prep.stage_config import run_stage_cli

    return run_stage_cli(argv, DataPrepConfig, main, prog="usersim data")
