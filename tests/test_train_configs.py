"""Every train/accelerate YAML loads into its schema and starts with the command that runs it."""

from pathlib import Path

import pytest
import yaml

from usersim.data_prep.stage_config import ConfigError, load_config
from usersim.train.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted((CONFIGS / "train").glob("*.yaml")), ids=lambda p: p.name)
def test_train_configs_load_and_name_their_command(path):
    cfg = load_config(TrainConfig, path)
    assert path.read_text().startswith("# ") and "usersim.train.main" in path.read_text().splitlines()[0]
    assert cfg.max_tokens_per_batch >= cfg.max_seq_len


@pytest.mark.parametrize("path", sorted((CONFIGS / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_parse_and_name_their_command(path):
    data = yaml.safe_load(path.read_text())
    assert path.read_text().startswith("# ") and "accelerate launch" in path.read_text().splitlines()[0]
    assert data["num_processes"] >= 1 and "distributed_type" in data


def test_unknown_train_key_is_an_error_naming_it():
    with pytest.raises(ConfigError, match="learning_rat"):
        load_config(TrainConfig, None, ["learning_rat=0.1"])
    assert load_config(TrainConfig, None, ["lora.r=4"]).lora.r == 4


def test_cpu_training_that_leaves_cores_idle_says_how_to_use_them(monkeypatch):
    import os

    import torch

    from usersim.train.main import idle_cpu_note

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    note = idle_cpu_note("cpu", 1)
    assert "--num_cpu_threads_per_process 4" in note and "TRAIN_THREADS" in note
    assert idle_cpu_note("cpu", 4) == ""  # four processes of one thread use every core
    assert idle_cpu_note("cuda", 1) == ""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert idle_cpu_note("cpu", 1) == ""


def test_make_train_gives_accelerate_every_core():
    """accelerate launch exports OMP_NUM_THREADS=1 unless told otherwise: make train must tell it."""
    from pathlib import Path

    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert "--num_cpu_threads_per_process $(TRAIN_THREADS)" in makefile
    assert "TRAIN_THREADS ?= $(shell nproc" in makefile
