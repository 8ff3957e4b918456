"""Conversation records -> token ids + labels, with condition dropout and length handling.

Rendering and tokenisation come from data_prep.prompt_format (the one prompt format); this module
only decides *which* condition fields a record shows in a given epoch and what happens to records
longer than ``max_seq_len``:

Long records are cut **from the left at turn boundaries, keeping the condition header**: the oldest
turns are dropped until the rest fits, so the model still sees who it plays and the most recent
context. If even the header plus the last turn does not fit, the tokens are cut at max_seq_len.
A record left with no supervised token is an error naming the record id, never trained silently.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

from data_prep.prompt_format import Condition, Segment, drop_condition_fields, render_simulator_prompt, tokenize_segments
from data_prep.schema import Turn

IGNORE_INDEX = -100


class NoSupervisedTokensError(ValueError):
    """A record would train on nothing."""


def dropout_rng(seed: int, record_id: str, epoch: int) -> random.Random:
    """The rng for one record's condition dropout: a pure function of (seed, record id, epoch)."""
    return random.Random(f"{seed}:{record_id}:{epoch}")


def record_segments(record: dict[str, Any], condition_dropout: float, seed: int, epoch: int) -> list[Segment]:
    condition = Condition.from_row(record["condition"])
    condition = drop_condition_fields(condition, condition_dropout, dropout_rng(seed, record["id"], epoch))
    turns = [Turn(t["role"], t["text"]) for t in record["turns"]]
    return render_simulator_prompt(condition, turns, end_of_conversation=bool(record["end_of_conversation"]))


def _turn_units(segments: Sequence[Segment]) -> list[list[Segment]]:
    """[header], then one unit per turn (marker + text), so cuts fall on turn boundaries."""
    units = [[segments[0]]]
    for i in range(1, len(segments), 2):
        units.append(list(segments[i:i + 2]))
    return units


def fit_to_length(segments: Sequence[Segment], tokenizer: Any, max_seq_len: int) -> tuple[list[int], list[int]]:
    """Token ids + labels of ``segments``, dropping the oldest turns (header kept) to fit max_seq_len."""
    ids, labels = tokenize_segments(segments, tokenizer)
    if len(ids) <= max_seq_len:
        return ids, labels
    units = _turn_units(segments)
    header_len = len(tokenize_segments(units[0], tokenizer)[0])
    unit_lens = [len(tokenize_segments(u, tokenizer, add_bos=False)[0]) for u in units[1:]]
    total, first = header_len + sum(unit_lens), 0
    while total > max_seq_len and first < len(unit_lens) - 1:
        total -= unit_lens[first]
        first += 1
    kept = [s for u in [units[0]] + units[1 + first:] for s in u]
    ids, labels = tokenize_segments(kept, tokenizer)
    return ids[:max_seq_len], labels[:max_seq_len]


def record_to_example(record: dict[str, Any], tokenizer: Any, *, max_seq_len: int, condition_dropout: float = 0.0,
                      seed: int = 0, epoch: int = 0) -> dict[str, Any]:
    """``{"id", "input_ids", "labels", "n_supervised"}`` for one conversation record."""
    segments = record_segments(record, condition_dropout, seed, epoch)
    ids, labels = fit_to_length(segments, tokenizer, max_seq_len)
    n_supervised = sum(1 for x in labels[1:] if x != IGNORE_INDEX)  # token 0 is never predicted
    if n_supervised == 0:
        raise NoSupervisedTokensError(
            f"record {record['id']!r} has no supervised token after rendering/truncation to max_seq_len="
            f"{max_seq_len}; it has no user turn text to learn. Fix the data (data stage filters) or raise max_seq_len."
        )
    return {"id": record["id"], "input_ids": ids, "labels": labels, "n_supervised": n_supervised}


def records_to_examples(records: Sequence[dict[str, Any]], tokenizer: Any, *, max_seq_len: int,
                        condition_dropout: float = 0.0, seed: int = 0, epoch: int = 0,
                        progress: bool = False) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    it = tqdm(records, desc=f"tokenise (epoch {epoch})", disable=not progress, mininterval=5)
    return [record_to_example(r, tokenizer, max_seq_len=max_seq_len, condition_dropout=condition_dropout,
                              seed=seed, epoch=epoch) for r in it]
