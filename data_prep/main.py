"""``usersim data``: corpora -> validated, PII-scrubbed, deduplicated, user-split simulator dataset.

Reads straight through:

1. stream every source (``data_prep.adapters.iter_source``): each item is validated and cleaned
   (data_prep.validate), PII-scrubbed (data_prep.pii), deduplicated (data_prep.dedupe) and routed
   to its user's split (data_prep.split); every drop goes to ``quarantine.jsonl`` with a reason;
2. check ``read == kept + quarantined`` per source (raises if not);
3. condition every kept conversation (data_prep.conditioning, optional annotator) and write the
   ``DatasetDict`` (train/validation/test records + validation_turns/test_turns items);
4. assert no training row carries a held-out user; write summary.json and the dataset card.
"""

from __future__ import annotations

import json
import random
import resource
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import datasets
from datasets import Dataset, DatasetDict, NamedSplit
from tqdm.auto import tqdm

from data_prep.adapters import iter_source
from data_prep.annotator import Annotator, annotate_or_fallback, make_annotator
from data_prep.card import format_summary_table, write_dataset_card
from data_prep.conditioning import (SCRUBBED_FIELDS, build_condition, clip, persona_from_history, rank_typical_openers,
                                    scrub_condition)
from data_prep.config import DataPrepConfig
from data_prep.dedupe import DuplicateFilter
from data_prep.pii import scrub_text
from data_prep.prompt_format import Condition
from data_prep.records import conversation_record, per_turn_items_batched
from data_prep.records_io import RECORD_FEATURES, TURN_ITEM_FEATURES, JsonlWriter, iter_conversations, write_json
from data_prep.run_info import write_run_dir_header
from data_prep.schema import USER, Conversation, Quarantined, Reason, Turn
from data_prep.split import HELD_OUT, SPLITS, TRAIN, assert_no_held_out_leak, route_conversation, split_fractions
from data_prep.validate import validate_conversation

MAX_OPENERS_PER_USER = 50  # training openers remembered per user for the persona summary


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
    return replace(conv, turns=[Turn(t.role, scrub_text(t.text, counts)) for t in conv.turns])


def scrub_quarantined(q: Quarantined, max_raw_chars: int = 2000) -> Quarantined:
    """The quarantine record with PII scrubbed from its raw text (clipped first; not counted in summary)."""
    if q.raw is None:
        return q
    raw = q.raw if isinstance(q.raw, str) else json.dumps(q.raw, ensure_ascii=False, default=str)
    return replace(q, raw=scrub_text(raw[: max_raw_chars + 200]) if len(raw) > max_raw_chars + 200
                   else scrub_text(raw))


def stream_sources(cfg: DataPrepConfig, staging: Path, quarantine: JsonlWriter) -> dict[str, Any]:
    """Pass 1: every source item ends kept (in a split's staging file) or quarantined."""
    fractions = split_fractions(cfg.split)
    writers = {s: JsonlWriter(staging / f"{s}.jsonl") for s in SPLITS}
    users: dict[str, set[str]] = {s: set() for s in SPLITS}
    openers: dict[str, list[tuple[str, str]]] = defaultdict(list)
    per_source: dict[str, SourceCounts] = {}
    stats: Counter = Counter()
    pii: Counter = Counter()
    dupes = DuplicateFilter()

    def drop(counts: SourceCounts, q: Quarantined) -> None:
        counts.quarantined[q.reason] += 1
        quarantine.write_quarantined(scrub_quarantined(q) if cfg.filters.scrub_pii else q)

    for src in cfg.sources:
        name = src.name or src.adapter
        counts = per_source.setdefault(name, SourceCounts())
        for item in tqdm(iter_source(src), desc=f"read {name}", unit=" items", disable=not cfg.show_progress,
                         total=src.max_items or None):
            counts.read += 1
            if isinstance(item, Quarantined):
                drop(counts, replace(item, source=name))
                continue
            conv = item if item.source == name else replace(item, source=name)
            cleaned, clean_stats = validate_conversation(conv, cfg.filters)
            stats["merged_turns"] += clean_stats.merged_turns
            stats["empty_turns_dropped"] += clean_stats.empty_turns_dropped
            if isinstance(cleaned, Quarantined):
                drop(counts, cleaned)
                continue
            if cfg.filters.scrub_pii:
                cleaned = scrub_conversation(cleaned, pii)
            if cfg.filters.drop_duplicates and dupes.seen(cleaned):
                drop(counts, Quarantined(name, Reason.DUPLICATE, cleaned.location or cleaned.id,
                                         "exact duplicate of an earlier conversation", cleaned.to_row()))
                continue
            split, leak = route_conversation(cleaned, cfg.seed, fractions)
            if leak is not None:
                drop(counts, leak)
                continue
            writers[split].write_conversation(cleaned)
            users[split].add(cleaned.user_id)
            counts.kept += 1
            if split == TRAIN and len(openers[cleaned.user_id]) < MAX_OPENERS_PER_USER:
                first = next(t.text for t in cleaned.turns if t.role == USER)
                openers[cleaned.user_id].append((cleaned.id, clip(first, 200)))
        counts.check(name)
    for w in writers.values():
        w.close()
    return {"per_source": per_source, "users": users, "openers": openers, "stats": stats, "pii": pii,
            "conversations": {s: w.n for s, w in writers.items()}}


def condition_records(path: Path, cfg: DataPrepConfig, ranked_openers: dict[str, list[tuple[str, str]]],
                      annotator: Annotator | None, annotator_counts: Counter,
                      scrubbed: Counter) -> Iterator[dict[str, Any]]:
    """Pass 2 (a ``Dataset.from_generator`` generator): staged conversations -> conditioned records.

    ``scrubbed`` counts, per field, the condition items removed for sharing a 4-word span with the
    conversation's user turns (heuristic and annotated conditions alike)."""
    ccfg = cfg.conditioning
    for conv in iter_conversations(path):
        history = ""
        if ccfg.persona and ccfg.persona_history_turns > 0:
            history = persona_from_history(ranked_openers.get(conv.user_id, []), conv.id, ccfg.persona_history_turns)
        condition = build_condition(conv, ccfg, history, scrubbed)
        limit = ccfg.annotator.max_conversations
        if annotator is not None and (not limit or annotator_counts["attempted"] < limit):
            annotator_counts["attempted"] += 1
            fields = [f for f in ccfg.annotator.fields if getattr(ccfg, f)]
            values = annotate_or_fallback(annotator, conv, fields, condition.to_row(), annotator_counts)
            condition = scrub_condition(Condition.from_row(values), conv.user_turns(), counts=scrubbed)
        yield conversation_record(conv, condition)


def empty_dataset(features: datasets.Features) -> Dataset:
    return Dataset.from_dict({k: [] for k in features}, features=features)


def peak_rss_mb() -> float:
    """Peak resident memory of this process and its finished children (Linux reports KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)


def build_dataset(cfg: DataPrepConfig, staging: Path, passed: dict[str, Any], ranked: dict[str, Any],
                  annotator: Annotator | None, annotator_counts: Counter, scrubbed: Counter) -> DatasetDict:
    """Pass 2: conditioned records per split (Arrow, streamed) and per-turn items for held-out splits."""
    splits: dict[str, Dataset] = {}
    for split in SPLITS:
        if passed["conversations"][split] == 0:  # from_generator cannot build an empty split
            splits[split] = empty_dataset(RECORD_FEATURES)
            continue
        splits[split] = Dataset.from_generator(
            condition_records, features=RECORD_FEATURES, cache_dir=str(staging / "cache"), split=NamedSplit(split),
            gen_kwargs={"path": staging / f"{split}.jsonl", "cfg": cfg, "ranked_openers": ranked,
                        "annotator": annotator, "annotator_counts": annotator_counts, "scrubbed": scrubbed},
            fingerprint=f"usersim-data-{split}-{staging.name}",
        )
    for split in HELD_OUT:
        if len(splits[split]) == 0:
            splits[f"{split}_turns"] = empty_dataset(TURN_ITEM_FEATURES)
            continue
        splits[f"{split}_turns"] = splits[split].map(
            per_turn_items_batched, batched=True, remove_columns=splits[split].column_names,
            features=TURN_ITEM_FEATURES, num_proc=cfg.num_proc if cfg.num_proc > 1 else None,
            desc=f"per-turn items ({split})",
        )
    return DatasetDict(splits)


def main(cfg: DataPrepConfig) -> Path:
    random.seed(cfg.seed)  # nothing below draws at random; the split is a hash of (seed, user id)
    started = time.time()
    if not cfg.show_progress:
        datasets.disable_progress_bars()
    annotator = make_annotator(cfg.conditioning.annotator)  # a bad annotator config fails before reading
    out = Path(cfg.output_dir)
    write_run_dir_header(out, cfg, cfg.seed, "data")
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        quarantine = JsonlWriter(out / "quarantine.jsonl")
        passed = stream_sources(cfg, staging, quarantine)
        quarantine.close()

        ranked = {u: rank_typical_openers(o) for u, o in passed["openers"].items() if len(o) > 1}
        annotator_counts: Counter = Counter()
        scrubbed: Counter = Counter()
        dataset = build_dataset(cfg, staging, passed, ranked, annotator, annotator_counts, scrubbed)
        held_out_users = set().union(*(passed["users"][s] for s in HELD_OUT))
        assert_no_held_out_leak(dataset[TRAIN].select_columns(["id", "user_id", "other_user_ids"]), held_out_users)
        turn_items = {f"{s}_turns": len(dataset[f"{s}_turns"]) for s in HELD_OUT}
        # An empty split needs one explicit (empty) shard, or load_from_disk cannot read it back.
        dataset.save_to_disk(str(out / "dataset"), num_shards={k: 1 for k, d in dataset.items() if len(d) == 0})
        del dataset
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    summary = {
        "sources": {n: c.to_json() for n, c in passed["per_source"].items()},
        "splits": {s: {"users": len(passed["users"][s]), "conversations": passed["conversations"][s]} for s in SPLITS},
        "turn_items": turn_items,
        "merged_turns": passed["stats"]["merged_turns"],
        "empty_turns_dropped": passed["stats"]["empty_turns_dropped"],
        "pii": {k: passed["pii"].get(k, 0) for k in ("email", "phone", "ip", "credential_url")},
        "annotator": {"kind": cfg.conditioning.annotator.kind, **dict(annotator_counts)},
        "users_with_history_persona": len(ranked),
        "condition_items_scrubbed": {f: scrubbed[f] for f in SCRUBBED_FIELDS},
        "time_s": round(time.time() - started, 1),
        "peak_rss_mb": peak_rss_mb(),
    }
    write_json(out / "summary.json", summary)
    write_dataset_card(out / "README.md", cfg, summary)
    print(format_summary_table(summary))
    return out


def cli(argv: list[str]) -> int:
    from data_prep.stage_config import run_stage_cli

    return run_stage_cli(argv, DataPrepConfig, main, prog="usersim data")
