"""Real processes: 2-process data parallel (gloo on CPU) and resume after ``kill -9``."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from train.toy_data import write_toy_data_dir

REPO = Path(__file__).resolve().parents[1]
TINY = ["tiny_vocab_size=300", "tiny_hidden_size=32", "lora.r=4", "lora.alpha=8", "max_seq_len=256",
        "max_tokens_per_batch=512", "learning_rate=0.005", "warmup_steps=1", "logging_steps=1",
        "max_train_records=0", "max_eval_records=0"]


def env():
    e = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
             PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return e


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_toy_data_dir(tmp_path_factory.mktemp("data"), n_train=24, n_validation=6)


@pytest.mark.slow
def test_two_cpu_processes_both_train_and_one_adapter_is_written(data_dir, tmp_path):
    out = tmp_path / "ddp"
    # torchrun: `accelerate launch --cpu --num_processes 2` starts one process unless mpirun is used;
    # train.main builds Accelerator(cpu=True) without a GPU, so the two ranks join over gloo.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29731",
           "-m", "train.main", "--config", "configs/train/smoke.yaml",
           "--output_dir", str(out), f"data_dir={data_dir}", "max_steps=4", "eval_steps=2", "save_steps=2", *TINY]
    proc = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "rank 0 of 2 done: trained up to step 4" in log
    assert "rank 1 of 2 done: trained up to step 4" in log
    assert "rank 1 step 4/4" in log  # rank 1 logged its own steps
    assert log.count("wrote adapter") == 1
    assert sorted(p.name for p in out.glob("adapter_model*")) == ["adapter_model.safetensors"]
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 4


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(data_dir, tmp_path):
    from data_prep.stage_config import load_config
    from train.config import TrainConfig
    from train.main import main

    def load_train_config(overrides):
        return load_config(TrainConfig, REPO / "configs/train/smoke.yaml", overrides)

    args = [f"data_dir={data_dir}", "max_steps=16", "save_steps=2", "eval_steps=0", *TINY]
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "train.main", "--config", "configs/train/smoke.yaml",
                             "--output_dir", str(killed), *args], cwd=REPO, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(killed.glob("checkpoints/step-*/state.json")) and time.time() < deadline:
        assert proc.poll() is None, "training ended before its first checkpoint"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "train_metrics.json").exists()  # it really died mid-run

    main(load_train_config([*args, f"output_dir={killed}", "resume_from_checkpoint=auto"]))
    main(load_train_config([*args, f"output_dir={tmp_path / 'reference'}"]))
    resumed = json.loads((killed / "train_metrics.json").read_text())
    reference = json.loads((tmp_path / "reference" / "train_metrics.json").read_text())
    assert resumed["steps"] == reference["steps"] == 16
    assert abs(resumed["final_loss"] - reference["final_loss"]) < 1e-4
    assert abs(resumed["eval_loss"] - reference["eval_loss"]) < 1e-4
