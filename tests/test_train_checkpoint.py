"""Checkpoint rules that need no training run: per-rank RNG files, and what a resume must match."""

import json
import random

import pytest
import torch

from usersim.train.checkpoint import STATE, ResumeMismatchError, check_resumable, load_rng, save_rng

PLAN = {"world_size": 2, "grad_accum_steps": 2, "engine": "plain", "seed": 0, "packing": True,
        "max_tokens_per_batch": 512, "max_seq_len": 256, "condition_dropout": 0.3, "max_train_records": 0}


def write_state(ckpt, plan):
    ckpt.mkdir(parents=True, exist_ok=True)
    (ckpt / STATE).write_text(json.dumps({"plan": plan, "progress": {"step": 4}}))


def test_rng_round_trip_and_a_missing_rank_file_is_an_error(tmp_path):
    torch.manual_seed(5)
    random.seed(5)
    save_rng(tmp_path, 0)
    expected = (torch.rand(3), random.random())
    torch.manual_seed(99)
    random.seed(99)
    load_rng(tmp_path, 0)
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
    with pytest.raises(FileNotFoundError, match=r"no RNG state for rank 1 \(rng-rank1.safetensors, rng-rank1.json "
                                                r"missing\)"):
        load_rng(tmp_path, 1)
    (tmp_path / "rng-rank0.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"rank 0 \(rng-rank0.json missing\)"):
        load_rng(tmp_path, 0)


def test_resume_is_allowed_when_processes_x_accumulation_is_unchanged(tmp_path):
    write_state(tmp_path, PLAN)
    assert check_resumable(tmp_path, PLAN) == PLAN
    assert check_resumable(tmp_path, {**PLAN, "world_size": 1, "grad_accum_steps": 4}) == PLAN
    assert check_resumable(tmp_path, {**PLAN, "world_size": 4, "grad_accum_steps": 1, "engine": "fsdp"}) == PLAN


def test_resume_is_refused_with_the_reason(tmp_path):
    write_state(tmp_path, PLAN)
    with pytest.raises(ResumeMismatchError, match=r"2 process\(es\) x grad_accum_steps=2 = 4 packed rows per optimizer "
                                                  r"step, this run has 4 x 2 = 8\. The data order"):
        check_resumable(tmp_path, {**PLAN, "world_size": 4})
    with pytest.raises(ResumeMismatchError, match=r"settings that decide the data order changed \(seed: 0 -> 1; "
                                                  r"max_tokens_per_batch: 512 -> 1024\)"):
        check_resumable(tmp_path, {**PLAN, "seed": 1, "max_tokens_per_batch": 1024})
    with pytest.raises(ResumeMismatchError, match="written under plain, this run uses deepspeed"):
        check_resumable(tmp_path, {**PLAN, "engine": "deepspeed"})
    write_state(tmp_path, {**PLAN, "engine": "deepspeed"})
    with pytest.raises(ResumeMismatchError, match="DeepSpeed partitioned the optimizer state over 2 processes and "
                                                  "this run has 1"):
        check_resumable(tmp_path, {**PLAN, "engine": "deepspeed", "world_size": 1, "grad_accum_steps": 4})
    write_state(tmp_path, None)
    with pytest.raises(ResumeMismatchError, match="predates the recorded training plan"):
        check_resumable(tmp_path, PLAN)
