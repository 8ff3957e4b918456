"""Real processes (gloo on CPU): 2-process data parallel with accumulation, resume after ``kill -9``.

One 2-process run (grad_accum_steps=2, LoRA dropout 0 so no RNG stream differs between layouts) is
the reference: 1 process with grad_accum_steps=4 sees the same 4 packed rows per optimizer step and
must end at the same losses; a 2-process run killed with SIGKILL after a checkpoint and resumed must
too, and so must a resume of that checkpoint on 1 process x 4 (same rows per step). A resume on 1 x 2
is refused with the reason.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from toy_data import write_toy_data_dir

REPO = Path(__file__).resolve().parents[1]
TINY = ["tiny_vocab_size=300", "tiny_hidden_size=32", "lora.r=4", "lora.alpha=8", "lora.dropout=0.0",
        "max_seq_len=256", "max_tokens_per_batch=512", "learning_rate=0.005", "warmup_steps=1", "logging_steps=1",
        "max_train_records=0", "max_eval_records=0", "max_steps=8", "save_steps=2", "eval_steps=4",
        "save_total_limit=10"]


def env():
    return dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
                PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def torchrun(out, port, *extra):
    # torchrun: `accelerate launch --cpu --num_processes 2` starts one process unless mpirun is used;
    # usersim.train.main builds Accelerator(cpu=True) without a GPU, so the two ranks join over gloo.
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
            "-m", "usersim.train.main", "--config", "configs/train/smoke.yaml", "--output_dir", str(out), *extra]


def metrics(run):
    return json.loads((Path(run) / "train_metrics.json").read_text())


def assert_same_run(run, reference, tol=1e-4):
    a, b = metrics(run), metrics(reference)
    assert a["steps"] == b["steps"] == 8
    assert abs(a["final_loss"] - b["final_loss"]) < tol, (a["final_loss"], b["final_loss"])
    assert abs(a["eval_loss"] - b["eval_loss"]) < tol, (a["eval_loss"], b["eval_loss"])
    assert [s for s, _ in a["eval_losses"]] == [s for s, _ in b["eval_losses"]] == [4, 8]
    assert all(abs(x - y) < tol for (_, x), (_, y) in zip(a["eval_losses"], b["eval_losses"]))
    x, y = load_file(str(Path(run) / "adapter_model.safetensors")), load_file(str(Path(reference) / "adapter_model.safetensors"))
    assert sorted(x) == sorted(y)
    assert max(float((x[k] - y[k]).abs().max()) for k in x) < 1e-4


def load_train_config(overrides):
    from usersim.data_prep.stage_config import load_config
    from usersim.train.config import TrainConfig

    return load_config(TrainConfig, REPO / "configs/train/smoke.yaml", overrides)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_toy_data_dir(tmp_path_factory.mktemp("data"), n_train=24, n_validation=6)


@pytest.fixture(scope="module")
def ddp_reference(data_dir, tmp_path_factory):
    """2 processes x grad_accum_steps=2, uninterrupted."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    proc = subprocess.run(torchrun(out, 29731, f"data_dir={data_dir}", "grad_accum_steps=2", *TINY), cwd=REPO,
                          env=env(), capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    return out, log


@pytest.mark.slow
def test_two_processes_with_accumulation_match_one_process_with_twice_the_accumulation(ddp_reference, data_dir,
                                                                                      tmp_path, capsys):
    from usersim.train.main import main

    out, log = ddp_reference
    assert "rank 0 of 2 done: trained up to step 8" in log and "rank 1 of 2 done: trained up to step 8" in log
    assert "rank 1 step 8/8" in log  # rank 1 logged its own steps
    assert log.count("wrote adapter") == 1
    assert "packing check: 3 records" in log
    assert sorted(p.name for p in out.glob("adapter_model*")) == ["adapter_model.safetensors"]
    assert metrics(out)["world_size"] == 2
    ckpt = out / "checkpoints" / "step-00000002"
    assert sorted(p.name for p in ckpt.iterdir()) == ["adapter.safetensors", "optimizer.safetensors",
                                                      "rng-rank0.json", "rng-rank0.safetensors", "rng-rank1.json",
                                                      "rng-rank1.safetensors", "state.json"]
    plan = json.loads((ckpt / "state.json").read_text())["plan"]
    assert (plan["world_size"], plan["grad_accum_steps"], plan["engine"]) == (2, 2, "plain")

    single = tmp_path / "single"
    main(load_train_config([f"data_dir={data_dir}", f"output_dir={single}", "grad_accum_steps=4", *TINY]))
    assert metrics(single)["world_size"] == 1
    assert_same_run(single, out)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_uninterrupted_run(ddp_reference, data_dir, tmp_path):
    from usersim.train.checkpoint import ResumeMismatchError
    from usersim.train.main import main

    reference, _ = ddp_reference
    killed = tmp_path / "killed"
    args = [f"data_dir={data_dir}", "grad_accum_steps=2", *TINY]
    proc = subprocess.Popen(torchrun(killed, 29741, *args), cwd=REPO, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not list(killed.glob("checkpoints/step-*/state.json")) and time.time() < deadline:
        assert proc.poll() is None, "training ended before its first checkpoint"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks, no chance to clean up
    proc.wait()
    assert not (killed / "train_metrics.json").exists()  # it really died mid-run
    first = sorted(killed.glob("checkpoints/step-*/state.json"))[0].parent
    shutil.copytree(first, tmp_path / "copy" / "checkpoints" / first.name)  # for the 1-process resumes below

    proc = subprocess.run(torchrun(killed, 29751, *args, "resume_from_checkpoint=auto"), cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "resumed from" in log and "per-rank RNG restored" in log
    assert_same_run(killed, reference)

    # The same checkpoint on 1 process x grad_accum_steps=4: same rows per step, so it continues exactly.
    one = tmp_path / "one"
    shutil.copytree(tmp_path / "copy", one)
    shutil.copy(killed / "base_model.json", one / "base_model.json")
    main(load_train_config([*args, f"output_dir={one}", "grad_accum_steps=4",
                            f"resume_from_checkpoint={one / 'checkpoints' / first.name}"]))
    assert_same_run(one, reference)

    # 1 process x grad_accum_steps=2 would change which rows form each step: refused, with the reason.
    with pytest.raises(ResumeMismatchError, match=r"2 process\(es\) x grad_accum_steps=2 = 4 packed rows per "
                                                  r"optimizer step, this run has 1 x 2 = 2"):
        main(load_train_config([*args, f"output_dir={tmp_path / 'copy'}", "resume_from_checkpoint=auto"]))
