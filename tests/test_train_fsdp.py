"""FSDP2 on CPU: sharded training, evaluation and checkpoints with 2 gloo processes.

accelerate cannot put FSDP on the CPU (see the skipped test below), but torch's ``fully_shard`` runs
on CPU with gloo. So these tests drive ``usersim.train.loop.train_loop`` through a small stand-in for the
accelerator that does what accelerate's FSDP2 path does (fully_shard per decoder layer + root,
optimizer re-pointed at the sharded parameters, no gradient sync inside an accumulation window).
What is checked is this project's FSDP code: evaluate() with unequal rows per rank (would hang
otherwise), the packing check through the sharded root, collective checkpoint gathers, resume, and
the collective final adapter gather.
"""

import contextlib
import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from usersim.train import batching
from usersim.train.checkpoint import gather_trainable
from usersim.train.config import LoraSettings, TrainConfig
from usersim.train.examples import records_to_examples
from usersim.train.lora import wrap_with_lora
from usersim.train.loop import train_loop
from usersim.train.tiny_model import build_tiny_model, train_tiny_tokenizer
from toy_data import toy_records

ACCELERATE_NO_CPU_FSDP = (
    "accelerate 1.16 does not run FSDP on the CPU: AcceleratorState sets DistributedType.FSDP only inside "
    "the branch for accelerator backends (state.py: MULTI_GPU/MLU/SDAA/MUSA/NPU/XPU/HPU/NEURON), so with Accelerator(cpu=True) "
    "under 2 gloo processes an fsdp_plugin is ignored and the run is plain MULTI_CPU data parallel. "
    "torch 2.13's fully_shard does run on CPU with gloo: test_fsdp2_* above cover this project's FSDP code "
    "through it; the accelerate FSDP launch itself needs the GPU device script")


class CpuAccelerator:
    """The parts of accelerate.Accelerator that train_loop uses, on CPU, optionally with FSDP2 (fully_shard)."""

    def __init__(self, grad_accum: int, fsdp: bool):
        self.fsdp = fsdp
        self.num_processes = dist.get_world_size() if fsdp else 1
        self.process_index = dist.get_rank() if fsdp else 0
        self.is_main_process = self.process_index == 0
        self.distributed_type = "FSDP" if fsdp else "NO"
        self.gradient_accumulation_steps = grad_accum
        self.device = torch.device("cpu")
        self.state = type("State", (), {"deepspeed_plugin": None})()
        self.sync_gradients = True
        self._micro = 0

    def prepare(self, model, optimizer):
        if self.fsdp:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh("cpu", (self.num_processes,))
            for module in model.modules():
                if type(module).__name__ in (model._no_split_modules or []):
                    fully_shard(module, mesh=mesh)
            fully_shard(model, mesh=mesh)
            optimizer.param_groups[0]["params"] = [p for p in model.parameters() if p.requires_grad]
            optimizer.state.clear()
        return model, optimizer

    def unwrap_model(self, model):
        return model

    @contextlib.contextmanager
    def accumulate(self, model):
        self._micro += 1
        self.sync_gradients = self._micro % self.gradient_accumulation_steps == 0
        if self.fsdp and not self.sync_gradients:
            model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            if self.fsdp:
                model.set_requires_gradient_sync(True)

    def backward(self, loss):
        (loss / self.gradient_accumulation_steps).backward()

    def clip_grad_norm_(self, params, max_norm):
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm

    def reduce(self, tensor, reduction="sum"):
        if self.fsdp:
            dist.all_reduce(tensor)
        return tensor

    def wait_for_everyone(self):
        if self.fsdp:
            dist.barrier()


def tiny_setup():
    records = toy_records(30, seed=3)
    tok = train_tiny_tokenizer([t["text"] for r in records for t in r["turns"]], vocab_size=300)
    train_ex = lambda epoch: records_to_examples(records[:24], tok, max_seq_len=256, condition_dropout=0.3, seed=0,
                                                 epoch=epoch, progress=False)
    # An odd number of validation rows: one rank evaluates a row more than the other.
    val = records_to_examples(records[24:], tok, max_seq_len=256)
    for n in range(len(val), 0, -1):
        if len(batching.plan_batches(val[:n], 512, 0, True)) % 2 == 1:
            val = val[:n]
            break
    return tok, train_ex, val


def tiny_cfg(**kw):
    base = dict(base_model="tiny-random", dtype="float32", lora=LoraSettings(r=4, alpha=8, dropout=0.0),
                max_seq_len=256, max_tokens_per_batch=512, learning_rate=5e-3, warmup_steps=1, max_steps=6,
                logging_steps=1, eval_steps=3, save_steps=2, save_total_limit=10)
    base.update(kw)
    return TrainConfig(**base)


def run(fsdp: bool, out: Path, **kw) -> dict:
    """Train a fresh tiny LoRA model under CpuAccelerator; the main process writes result.json + adapter."""
    torch.manual_seed(0)
    tok, train_ex, val = tiny_setup()
    model = wrap_with_lora(build_tiny_model(tok, hidden_size=32, seed=0, initializer_range=0.2),
                           LoraSettings(r=4, alpha=8, dropout=0.0))
    cfg = tiny_cfg(**kw)
    acc = CpuAccelerator(cfg.grad_accum_steps, fsdp)
    lines = []

    def log(msg, all_ranks=False):
        lines.append(msg)

    history, stats = train_loop(acc, model, cfg, out, train_ex, val, tok.pad_token_id or 0, log)
    adapter = gather_trainable(acc, stats["module"]) if stats["completed"] else {}
    result = {"step": history.step, "losses": history.losses, "eval_losses": history.eval_losses, "log": lines,
              "eval_rows": len(batching.plan_batches(val, 512, 0, True))}
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        if adapter:
            save_file(adapter, str(out / "adapter.safetensors"))
        (out / "result.json").write_text(json.dumps(result))
    return result


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        out = Path(out)
        run(True, out / "full", grad_accum_steps=2)
        run(True, out / "resumed", grad_accum_steps=2, stop_after_steps=3)  # checkpoint at 2, stop at 3
        run(True, out / "resumed", grad_accum_steps=2, resume_from_checkpoint="auto")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    mp.start_processes(_worker, args=(free_port(), str(out)), nprocs=2, start_method="spawn", join=True)
    return out


def close(a, b, tol=1e-4):
    return all(abs(x - y) < tol for x, y in zip(a, b)) and len(a) == len(b)


@pytest.mark.slow
def test_fsdp2_two_processes_match_one_process_and_resume_exactly(fsdp_runs, tmp_path):
    torch.set_num_threads(1)
    single = run(False, tmp_path / "single", grad_accum_steps=4)
    full = json.loads((fsdp_runs / "full" / "result.json").read_text())
    assert full["eval_rows"] % 2 == 1  # evaluate() had to even out the rows per rank
    assert any(line.startswith("packing check: 3 records") for line in full["log"])
    assert full["step"] == single["step"] == 6
    assert close([l for _, l in full["losses"]], [l for _, l in single["losses"]])
    assert close([l for _, l in full["eval_losses"]], [l for _, l in single["eval_losses"]])
    a, b = load_file(str(fsdp_runs / "full" / "adapter.safetensors")), load_file(str(tmp_path / "single" / "adapter.safetensors"))
    assert sorted(a) == sorted(b) and all(a[k].shape == b[k].shape for k in a)  # gathered, not shards
    assert len(a) == 2 * 2 * 7 and all("lora_" in k for k in a)  # 2 layers x 7 modules x (A, B): no frozen weight
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4

    resumed = json.loads((fsdp_runs / "resumed" / "result.json").read_text())
    assert any("resumed from" in line and "step 2" in line for line in resumed["log"])
    assert close([l for _, l in resumed["losses"]], [l for _, l in full["losses"]])
    assert close([l for _, l in resumed["eval_losses"]][-1:], [l for _, l in full["eval_losses"]][-1:])

    # The FSDP checkpoint holds full (gathered) optimizer tensors, so it resumes on 1 process too.
    ckpt = fsdp_runs / "resumed" / "checkpoints" / "step-00000002"
    opt = load_file(str(ckpt / "optimizer.safetensors"))
    exp_avg = {k.split("/")[1]: v for k, v in opt.items() if k.endswith("/exp_avg")}
    assert sorted(exp_avg) == sorted(a) and all(exp_avg[k].shape == a[k].shape for k in a)
    one = run(False, tmp_path / "one", grad_accum_steps=4, resume_from_checkpoint=str(ckpt))
    assert any("world size 2 -> 1" in line for line in one["log"])
    assert close([l for _, l in one["losses"]], [l for _, l in full["losses"]])


@pytest.mark.skip(reason=ACCELERATE_NO_CPU_FSDP)
def test_fsdp_through_accelerate_launch_on_cpu():
    raise AssertionError("unreachable: skipped")
