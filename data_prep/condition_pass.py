"""Pass 2 of the data stage: staged conversations cut into chunks, conditioned (persona, goal, knowledge,
style; usersim.data_prep.conditioning) into Arrow record batches and, for held-out splits, per-turn items,
written in staging order into the ``DatasetDict`` folder.
"""

from __future__ import annotations

import json
import marshal
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa
from tqdm.auto import tqdm

from usersim.data_prep.annotator import Annotator, annotate_or_fallback
from usersim.data_prep.conditioning import build_condition, persona_from_head, scrub_condition
from usersim.data_prep.config import DataPrepConfig
from usersim.data_prep.disk_store import HeadStore
from usersim.data_prep.dataset_writer import DatasetDictWriter, table_from_ipc, table_to_ipc
from usersim.data_prep.prompt_format import STYLE_KEYS, Condition
from usersim.data_prep.records import per_turn_items
from usersim.data_prep.schema import ASSISTANT, Conversation, Turn
from usersim.data_prep.split import HELD_OUT, SPLITS, TRAIN
from usersim.data_prep.staging import StagingWriter, frame_row, iter_frame_bounds, iter_frame_ids, iter_frames
from usersim.data_prep.workers import in_order, worker_config


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


def condition_tasks(cfg: DataPrepConfig, passed: dict[str, Any], heads: Callable[[], HeadStore],
                    held_out_first: bool = False) -> Iterator[tuple[str, bytes, list[bytes | None]]]:
    """(split, staged chunk, each conversation's user's persona head or None).

    ``heads()`` (the marshalled persona heads per user, on disk) is called when the first training
    chunk is due; each chunk looks up its own users. Held-out conversations never have a history
    (their users have no training conversation: the split is a function of the user), so with
    ``held_out_first`` their chunks come first and workers condition them while this process ranks
    the training openers; otherwise the splits come in order (an annotator counts conversations in
    that order)."""
    ccfg = cfg.conditioning
    with_history = ccfg.persona and ccfg.persona_history_turns > 0
    order = [*HELD_OUT, TRAIN] if held_out_first else list(SPLITS)
    per_user: HeadStore | None = None
    for split in order:
        staged: StagingWriter = passed["staging"][split]
        for chunk in staged.chunks:
            data = staged.read_chunk(chunk)
            if split in HELD_OUT or not with_history:
                yield split, data, [None] * sum(1 for _ in iter_frame_bounds(data))
                continue
            if per_user is None:
                per_user = heads()
            yield split, data, per_user.get_many([user_id for _, user_id in iter_frame_ids(data)])
    if per_user is None:
        heads()  # the summary counts the users with a history persona either way


# ---- worker processes --------------------------------------------------------------------

def _worker_condition(task: tuple[str, bytes, list[bytes | None], tuple[pa.Schema, pa.Schema]]) -> dict[str, Any]:
    split, data, heads, schemas = task
    out = Conditioner(worker_config(), schemas).chunk(split, data, heads)
    out["records"] = table_to_ipc(out["records"])
    out["items"] = None if out["items"] is None else table_to_ipc(out["items"])
    return out


def conditioned_chunks(cfg: DataPrepConfig, tasks: Iterable, conditioner: Conditioner,
                       pool: Any) -> Iterator[dict[str, Any]]:
    """Every chunk's result, in task order; in ``pool`` unless an annotator is set (an annotator
    runs here, in order, as its ``max_conversations`` counts conversations in that order)."""
    if pool is None or conditioner.annotator is not None:
        yield from (conditioner.chunk(*task) for task in tasks)
        return
    schemas = (conditioner.record_schema, conditioner.item_schema)
    for out in in_order(pool, _worker_condition, ((*task, schemas) for task in tasks), window=2 * cfg.num_proc):
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
