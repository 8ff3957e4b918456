"""Batches in which (almost) every token is real.

Default: **padding-free packing**. Records are placed into rows of at most ``max_tokens_per_batch``
tokens (best-fit decreasing, then the rows are shuffled with the seed); a row is one micro-batch of
shape (1, n). ``position_ids`` restart at 0 for every record: transformers (>= 4.5x, masking_utils
``find_packed_sequence_indices``) then builds a block-diagonal causal mask when no attention_mask is
given, for SDPA/eager on CPU as for flash-attention on GPU, so attention never crosses a record
boundary (tests/test_train_batching.py checks packed logits == per-record logits). A row holds
only real tokens, so the non-pad share is 1.0; ``fill`` reports how full rows are vs capacity.

Fallback (``packing: false``): length-grouped padded batches (sorted by length, cut into batches of
at most max_tokens_per_batch padded tokens, batch order shuffled with the seed).
"""

from __future__ import annotations

import bisect
import random
from typing import Any, Sequence

import torch

from usersim.data_prep.prompt_format import IGNORE_INDEX


def pack_rows(lengths: Sequence[int], max_tokens: int, seed: int) -> list[list[int]]:
    """Indices grouped into rows of total length <= max_tokens (best-fit decreasing), rows shuffled."""
    if any(n > max_tokens for n in lengths):
        raise ValueError(f"a sequence of {max(lengths)} tokens exceeds max_tokens_per_batch={max_tokens}; "
                         "set max_tokens_per_batch >= max_seq_len")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (remaining capacity, row index)
    for i in order:
        n = lengths[i]
        pos = bisect.bisect_left(free, (n, -1))
        if pos < len(free):
            cap, r = free.pop(pos)
            rows[r].append(i)
            bisect.insort(free, (cap - n, r))
        else:
            rows.append([i])
            bisect.insort(free, (max_tokens - n, len(rows) - 1))
    random.Random(seed).shuffle(rows)
    return rows


def length_grouped_batches(lengths: Sequence[int], max_tokens: int, seed: int) -> list[list[int]]:
    """Padded batches of similar lengths, (batch size x longest) <= max_tokens, order shuffled."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = max(lengths[i], max((lengths[j] for j in current), default=0))
        if current and longest * (len(current) + 1) > max_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    random.Random(seed).shuffle(batches)
    return batches


def collate_packed(examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """One packed row: concatenated ids/labels, position_ids restarting per record, no attention_mask."""
    ids, labels, pos = [], [], []
    for ex in examples:
        ids.extend(ex["input_ids"])
        labels.extend(ex["labels"])
        pos.extend(range(len(ex["input_ids"])))
    return {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]), "position_ids": torch.tensor([pos])}


def collate_padded(examples: Sequence[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch with attention_mask; padding is never supervised."""
    width = max(len(ex["input_ids"]) for ex in examples)
    ids = torch.full((len(examples), width), pad_id)
    labels = torch.full((len(examples), width), IGNORE_INDEX)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for r, ex in enumerate(examples):
        n = len(ex["input_ids"])
        ids[r, :n] = torch.tensor(ex["input_ids"])
        labels[r, :n] = torch.tensor(ex["labels"])
        mask[r, :n] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "position_ids": pos}


def plan_batches(examples: Sequence[dict[str, Any]], max_tokens: int, seed: int, packing: bool) -> list[list[int]]:
    lengths = [len(ex["input_ids"]) for ex in examples]
    return pack_rows(lengths, max_tokens, seed) if packing else length_grouped_batches(lengths, max_tokens, seed)


def collate(examples: Sequence[dict[str, Any]], packing: bool, pad_id: int) -> dict[str, torch.Tensor]:
    return collate_packed(examples) if packing else collate_padded(examples, pad_id)


def batch_token_counts(batch: dict[str, torch.Tensor]) -> tuple[int, int, int]:
    """(real tokens, tensor slots, supervised tokens) of a collated batch."""
    slots = batch["input_ids"].numel()
    real = int(batch["attention_mask"].sum()) if "attention_mask" in batch else slots
    supervised = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    return real, slots, supervised


def steps_for_rank(batches: Sequence[Any], world_size: int, rank: int, grad_accum: int) -> list[list[Any]]:
    """Micro-batches of each optimizer step for one process: every step uses world x accum batches.

    A remainder that cannot fill a whole step is dropped (the next epoch reshuffles); fewer batches
    than one step's worth repeat cyclically so a tiny dataset still trains.
    """
    per_step = world_size * grad_accum
    if not batches:
        return []
    if len(batches) < per_step:
        batches = [batches[i % len(batches)] for i in range(per_step)]
    n_steps = len(batches) // per_step
    out = []
    for s in range(n_steps):
        start = s * per_step + rank * grad_accum
        out.append(list(batches[start:start + grad_accum]))
    return out
