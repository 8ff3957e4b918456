"""Conversation records -> token ids + labels, with condition dropout.

Rendering, tokenisation and the length policy are :func:`usersim.data_prep.prompt_format.tokenize_conversation`
(the one sequence builder): a record longer than ``max_seq_len`` keeps its condition header and
drops its oldest whole turns; if the header plus the last target still does not fit, the tokens are
cut at max_seq_len. This module only decides *which* condition fields a record shows in a given
epoch, and refuses a record left with no supervised token (an error naming the record id, never
trained silently).
"""

from __future__ import annotations

import random
from typing import Any, Sequence

from usersim.data_prep.prompt_format import Condition, drop_condition_fields, tokenize_conversation
from usersim.data_prep.schema import Turn


class NoSupervisedTokensError(ValueError):
    """A record would train on nothing."""


def dropout_rng(seed: int, record_id: str, epoch: int) -> random.Random:
    """The rng for one record's condition dropout: a pure function of (seed, record id, epoch)."""
    return random.Random(f"{seed}:{record_id}:{epoch}")


def record_condition(record: dict[str, Any], condition_dropout: float, seed: int, epoch: int) -> Condition:
    """The record's condition as shown in ``epoch`` (fields blanked by seeded condition dropout)."""
    condition = Condition.from_row(record["condition"])
    return drop_condition_fields(condition, condition_dropout, dropout_rng(seed, record["id"], epoch))


def record_to_example(record: dict[str, Any], tokenizer: Any, *, max_seq_len: int, condition_dropout: float = 0.0,
                      seed: int = 0, epoch: int = 0) -> dict[str, Any]:
    """``{"id", "input_ids", "labels", "n_supervised"}`` for one conversation record."""
    seq = tokenize_conversation(record_condition(record, condition_dropout, seed, epoch),
                                [Turn(t["role"], t["text"]) for t in record["turns"]], tokenizer,
                                max_tokens=max_seq_len, end_of_conversation=bool(record["end_of_conversation"]))
    if seq.n_supervised == 0:
        raise NoSupervisedTokensError(
            f"record {record['id']!r} has no supervised token after rendering/truncation to max_seq_len="
            f"{max_seq_len}; it has no user turn text to learn. Fix the data (data stage filters) or raise max_seq_len."
        )
    return {"id": record["id"], "input_ids": seq.input_ids, "labels": seq.labels, "n_supervised": seq.n_supervised}


def records_to_examples(records: Sequence[dict[str, Any]], tokenizer: Any, *, max_seq_len: int,
                        condition_dropout: float = 0.0, seed: int = 0, epoch: int = 0,
                        progress: bool = False) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    it = tqdm(records, desc=f"tokenise (epoch {epoch})", disable=not progress, mininterval=5)
    return [record_to_example(r, tokenizer, max_seq_len=max_seq_len, condition_dropout=condition_dropout,
                              seed=seed, epoch=epoch) for r in it]
