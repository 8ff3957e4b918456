"""``usersim data``: corpora -> validated, PII-scrubbed, deduplicated, user-split simulator dataset.

Two passes, the corpus never in memory:

1. **Clean** (usersim.data_prep.clean_pass): every source item (``adapters.iter_source``; local
   WildChat/LMSYS JSONL as raw lines, parsed in the workers) is validated and cleaned
   (data_prep.validate), PII-scrubbed (data_prep.pii), given its dedupe key (data_prep.dedupe) and
   routed to its user's split (data_prep.split), in batches, in ``num_proc`` worker processes
   when that is > 1. This process then takes the items in reading order: dedupe decisions,
   quarantine lines (``quarantine.jsonl``, each with a reason), counts, the staged conversations
   (marshal frames, one file per split) and the training openers (on disk, by user), so all of it
   is the same for any ``num_proc``. ``read == kept + quarantined`` is checked per source.
2. **Condition** (usersim.data_prep.condition_pass): the training openers are ranked per user (persona
   history); the staged files are cut into chunks of ``CHUNK_ROWS`` conversations, which the
   workers condition (data_prep.conditioning) and turn into Arrow batches of records and, for
   held-out splits, per-turn items; this process writes the batches in staging order into the
   ``DatasetDict`` folder (data_prep.dataset_writer). With an annotator the chunks are
   conditioned here, in order (the annotator's ``max_conversations`` counts in that order).

On-disk staging lives in usersim.data_prep.staging, the worker pool in usersim.data_prep.workers; this
module runs the passes and the checks and writes the outputs.

Then no training row may carry a held-out user (read back from the Arrow files, each user's split
recomputed), and summary.json and the dataset card are written. ``datasets`` is imported by a
thread during pass 1.

What grows with the corpus in memory: nothing that is kept per conversation or per user. The
dedupe keys and the (split, user) pairs counted for the summary are sqlite sets in the staging
folder (usersim.data_prep.disk_store: sqlite with a bounded page cache, one transaction), the
training openers wait in spill files by user (a partition too big to read at once is
split further), the ranked persona heads go to a sqlite table that pass 2 reads one chunk's users
at a time, and the held-out leak check recomputes each training row's users' split (a pure
function of seed and user id) instead of holding the held-out users. What is left is a list of
two offsets per 500 staged conversations (benchmarks: the tree's peak PSS at 1M and 3M
WildChat-shaped conversations in BENCHMARKS.md section 3).
"""

from __future__ import annotations

import random
import shutil
import tempfile
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from usersim.data_prep.annotator import make_annotator
from usersim.data_prep.card import format_summary_table, write_dataset_card
from usersim.data_prep.conditioning import SCRUBBED_FIELDS
from usersim.data_prep.config import DataPrepConfig
from usersim.data_prep.dataset_writer import iter_split_batches
from usersim.data_prep.run_info import peak_rss_mb, write_run_dir_header
from usersim.data_prep.disk_store import HeadStore
from usersim.data_prep.split import HELD_OUT, SPLITS, TRAIN, assert_no_held_out_leak, assign_split, split_fractions
from usersim.data_prep.clean_pass import stream_sources
from usersim.data_prep.condition_pass import (Conditioner, condition_tasks, import_output_modules, output_schemas,
                                              write_dataset)
from usersim.data_prep.staging import LineWriter, user_heads
from usersim.data_prep.workers import make_pool, resolve_num_proc

def check_no_held_out_leak(train_folder: Path, seed: int, fractions: Mapping[str, float]) -> int:
    """:func:`~usersim.data_prep.split.assert_no_held_out_leak` over the written training rows (read back
    column by column from the Arrow files); returns rows checked. A user is held out when
    :func:`~usersim.data_prep.split.assign_split` (a pure function of seed and user id) says so,
    recomputed per batch for the batch's distinct users, so no set of held-out users is kept."""
    n = 0
    for batch in iter_split_batches(train_folder, ["id", "user_id", "other_user_ids"]):
        n += batch.num_rows
        ids = pc.unique(pa.concat_arrays([batch.column("user_id").cast(pa.string()),
                                          batch.column("other_user_ids").flatten().cast(pa.string())]).drop_null())
        held = {u for u in ids.to_pylist() if assign_split(u, seed, fractions) != TRAIN}
        if held:
            assert_no_held_out_leak(batch.to_pylist(), held)
    return n


def main(cfg: DataPrepConfig) -> Path:
    random.seed(cfg.seed)  # nothing below draws at random; the split is a hash of (seed, user id)
    cfg = replace(cfg, num_proc=resolve_num_proc(cfg.num_proc))
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

        heads = HeadStore(staging / "heads.sqlite")

        def rank() -> HeadStore:
            return user_heads(passed.pop("openers"), cfg.conditioning.persona_history_turns, heads)

        annotator_counts: Counter = Counter()
        scrubbed: Counter = Counter()
        conditioner = Conditioner(cfg, output_schemas(), annotator, annotator_counts)
        in_workers = pool is not None and annotator is None
        tasks = condition_tasks(cfg, passed, rank, held_out_first=in_workers)
        written = write_dataset(cfg, staging / "dataset", passed, tasks, conditioner, pool, scrubbed)
        check_no_held_out_leak(written[TRAIN].folder, cfg.seed, split_fractions(cfg.split))
        users_with_history = len(heads)
        heads.close()
        turn_items = {f"{s}_turns": written[f"{s}_turns"].rows for s in HELD_OUT}
        written.commit(out / "dataset")
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        shutil.rmtree(staging, ignore_errors=True)

    summary = {
        "sources": {n: c.to_json() for n, c in passed["per_source"].items()},
        "splits": {s: {"users": passed["users"][s], "conversations": passed["conversations"][s]} for s in SPLITS},
        "turn_items": turn_items,
        "merged_turns": passed["stats"]["merged_turns"],
        "empty_turns_dropped": passed["stats"]["empty_turns_dropped"],
        "pii": {k: passed["pii"].get(k, 0) for k in ("email", "phone", "ip", "credential_url")},
        "annotator": {"kind": cfg.conditioning.annotator.kind, **dict(annotator_counts)},
        "users_with_history_persona": users_with_history,
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
