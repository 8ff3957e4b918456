"""Packing and length grouping: every record once, capacity respected, real-token share high."""

import random

import pytest
import torch

from usersim.train.batching import (batch_token_counts, collate_packed, collate_padded, length_grouped_batches, pack_rows,
                                    steps_for_rank)


def lengths(n=300, seed=0):
    rng = random.Random(seed)
    return [int(rng.lognormvariate(5, 0.7)) % 900 + 20 for _ in range(n)]


def test_pack_rows_uses_every_record_once_within_capacity_and_fills_rows():
    ls = lengths()
    rows = pack_rows(ls, 2048, seed=0)
    assert sorted(i for r in rows for i in r) == list(range(len(ls)))
    assert all(sum(ls[i] for i in r) <= 2048 for r in rows)
    fill = sum(ls) / (len(rows) * 2048)
    assert fill > 0.95  # best-fit decreasing leaves little room unused
    assert pack_rows(ls, 2048, seed=0) == rows and pack_rows(ls, 2048, seed=1) != rows


def test_pack_rows_rejects_a_record_longer_than_a_row():
    with pytest.raises(ValueError, match="max_tokens_per_batch"):
        pack_rows([10, 5000], 4096, seed=0)


def test_length_grouped_batches_reach_high_nonpad_share():
    ls = lengths(3000)  # a realistic dataset size: neighbours in length order are close
    batches = length_grouped_batches(ls, 4096, seed=0)
    assert sorted(i for b in batches for i in b) == list(range(len(ls)))
    slots = sum(max(ls[i] for i in b) * len(b) for b in batches)
    assert all(max(ls[i] for i in b) * len(b) <= 4096 for b in batches)
    assert sum(ls) / slots >= 0.95


def test_collate_packed_restarts_positions_and_has_no_padding():
    exs = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8, 9], "labels": [-100, 9]}]
    batch = collate_packed(exs)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert "attention_mask" not in batch
    assert batch_token_counts(batch) == (5, 5, 3)


def test_collate_padded_masks_and_never_supervises_padding():
    exs = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8, 9], "labels": [-100, 9]}]
    batch = collate_padded(exs, pad_id=0)
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"][1, 2] == -100
    assert batch_token_counts(batch) == (5, 6, 3)
    assert torch.equal(batch["position_ids"][1, :2], torch.tensor([0, 1]))


def test_steps_for_rank_give_each_process_disjoint_batches():
    batches = [[i] for i in range(11)]
    r0 = steps_for_rank(batches, world_size=2, rank=0, grad_accum=2)
    r1 = steps_for_rank(batches, world_size=2, rank=1, grad_accum=2)
    assert len(r0) == len(r1) == 2  # 11 // 4; the remainder is dropped
    seen = [b[0] for step in r0 + r1 for b in step]
    assert len(seen) == len(set(seen)) == 8
    assert len(steps_for_rank([[0]], world_size=2, rank=1, grad_accum=1)) == 1  # tiny data still trains
