"""Pass 1 of the data stage: every source item validated, cleaned, PII-scrubbed, deduplicated and routed to
its user's split; quarantine lines with reasons; counts per source (``read == kept + quarantined``).

Items are cleaned in batches, in the worker pool when ``num_proc`` > 1; this process takes the results in
reading order, so the output is the same for any ``num_proc``.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

from tqdm.auto import tqdm

from usersim.data_prep.adapters import RawLine, iter_source, iter_source_lines, resolve_line
from usersim.data_prep.conditioning import clip
from usersim.data_prep.config import DataPrepConfig
from usersim.data_prep.dedupe import DuplicateFilter, conversation_key
from usersim.data_prep.disk_store import DiskSet
from usersim.data_prep.pii import scrub_text
from usersim.data_prep.schema import USER, Conversation, Quarantined, Reason, Turn
from usersim.data_prep.split import SPLITS, TRAIN, route_conversation, split_fractions
from usersim.data_prep.validate import validate_conversation
from usersim.data_prep.staging import (LineWriter, OpenerSpill, StagingWriter, conversation_tuple, frame_row,
                                       iter_frames, stage_frame, tuple_conversation)
from usersim.data_prep.workers import worker_config


BATCH_ITEMS = 500  # adapter items per cleaning task


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
    dedupe decisions, openers and counts are the same with or without workers. The dedupe keys and
    the (split, user) pairs go to sqlite sets in ``staging`` (usersim.data_prep.disk_store): ``users``
    in the result counts distinct users per split."""
    fractions = split_fractions(cfg.split)
    writers = {s: StagingWriter(staging / f"{s}.bin") for s in SPLITS}
    users: Counter = Counter({s: 0 for s in SPLITS})  # distinct users per split (the user ids on disk)
    user_set = DiskSet(staging / "users.sqlite")
    openers = OpenerSpill(staging / "openers")
    per_source: dict[str, SourceCounts] = {}
    stats: Counter = Counter()
    pii: Counter = Counter()
    dupes = DuplicateFilter(staging / "dedupe.sqlite")

    def drop(counts: SourceCounts, q: Quarantined) -> None:
        counts.quarantined[q.reason] += 1
        quarantine.write_line(quarantine_line(q, cfg.filters.scrub_pii))

    def settle(name: str, counts: SourceCounts, batch: list, cleaned: list[Cleaned], batch_pii: Counter) -> None:
        pii.update(batch_pii)
        # dedupe decisions for the batch at once: the keys of the valid conversations, in reading order
        # (a held_out_leak conversation's key counts too, as when each was decided in turn)
        repeats = iter(dupes.seen_keys([c.key for c in cleaned if c.reason is None and c.key is not None]))
        kept_users: list[str] = []
        kept_splits: list[str] = []
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
            if c.key is not None and next(repeats):
                drop(counts, Quarantined(name, Reason.DUPLICATE, c.location, "exact duplicate of an earlier conversation",
                                         frame_row(next(iter_frames(c.frame)))))
                continue
            if c.leak_reason is not None:
                counts.quarantined[c.leak_reason] += 1
                quarantine.write_line(c.line)
                continue
            writers[c.split].write_frame(c.frame)
            kept_users.append(f"{c.split}\x1f{c.user_id}")
            kept_splits.append(c.split)
            counts.kept += 1
            if c.split == TRAIN:
                openers.add(c.user_id, c.cid, c.opener)
        users.update(s for s, new in zip(kept_splits, user_set.add_new(kept_users)) if new)

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
    dupes.close()
    user_set.close()
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

def _worker_clean(sent: list[tuple], fractions: dict[str, float], adapter: str, name: str
                  ) -> tuple[list[Cleaned], Counter]:
    convs = [resolve_line(RawLine(*t), adapter, name) if is_line else tuple_conversation(t) for is_line, t in sent]
    return clean_conversations(convs, worker_config(), fractions)
