"""``usersim train`` / ``accelerate launch -m usersim.train.main``: LoRA-train a base LM into a user simulator.

Reads ``DATA_DIR/dataset`` (train + validation conversation records), writes RUN_DIR with the
adapter, tokenizer, base_model.json, config.yaml + run_info.json, train_metrics.json and
loss_curve.png (docs/contracts.md).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from usersim.data_prep.run_info import write_run_dir_header
from usersim.data_prep.stage_config import run_stage_cli
from usersim.train.base_model import TINY_RANDOM, base_model_sha256, prepare_base_model, write_base_model_json
from usersim.train.config import TrainConfig
from usersim.train.examples import records_to_examples
from usersim.train.lora import wrap_with_lora
from usersim.train.checkpoint import gather_trainable
from usersim.train.loop import train_loop
from usersim.train.outputs import plot_loss_curve, train_metrics


DTYPE_NAMES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
               "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None, device: str | None = None) -> torch.dtype:
    """The torch dtype for a config value: a ``torch.dtype``, a name in DTYPE_NAMES, or auto.

    ``"auto"``, ``""`` and None mean bfloat16 where it runs fast (a bf16-capable CUDA GPU, when
    ``device`` is None or a cuda device), else float32. Train and the runtime both resolve here.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "", "auto"):
        on_cuda = device is None or str(device).startswith("cuda")
        if on_cuda and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return DTYPE_NAMES[str(dtype)]
    except KeyError:
        raise ValueError(f"dtype {dtype!r} not understood; use auto, float32, bfloat16 or float16") from None


def load_records(cfg: TrainConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from datasets import load_from_disk

    path = Path(cfg.data_dir) / "dataset"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the data stage first (make data, or usersim data "
                                f"--output_dir {cfg.data_dir}), or set data_dir=")
    ds = load_from_disk(str(path))
    train, val = ds["train"], ds["validation"]
    # Subsets are seeded random samples, not the first rows (the data stage writes both participant
    # views of a chat next to each other).
    if cfg.max_train_records and cfg.max_train_records < len(train):
        train = train.shuffle(seed=cfg.seed).select(range(cfg.max_train_records))
    if cfg.max_eval_records and cfg.max_eval_records < len(val):
        val = val.shuffle(seed=cfg.seed).select(range(cfg.max_eval_records))
    return train.to_list(), val.to_list()


def base_checkpoint(cfg: TrainConfig, run_dir: Path, accelerator: Any, train_records: list[dict[str, Any]]) -> tuple[Path, Any]:
    """The main process prepares the base (convert / build) once; every process loads what it recorded."""
    from transformers import AutoTokenizer

    record = run_dir / "base_model.json"
    with accelerator.main_process_first():
        if accelerator.is_main_process:
            reuse = (cfg.base_model == TINY_RANDOM and cfg.resume_from_checkpoint and record.is_file()
                     and Path(json.loads(record.read_text())["path"]).is_dir())
            if not reuse:
                texts = [t["text"] for r in train_records for t in r["turns"]]
                path, _ = prepare_base_model(cfg, texts=texts)
                write_base_model_json(run_dir, path, cfg.base_model, base_model_sha256(path))
    path = Path(json.loads(record.read_text())["path"])
    return path, AutoTokenizer.from_pretrained(str(path), trust_remote_code=cfg.trust_remote_code)


def idle_cpu_note(device_type: str, processes: int) -> str:
    """A warning when CPU training leaves cores idle (accelerate launch exports OMP_NUM_THREADS=1 by default)."""
    cores = os.cpu_count() or 1
    threads = torch.get_num_threads()
    if device_type != "cpu" or threads * processes >= cores:
        return ""
    return (f"torch uses {threads} thread(s) per process on {cores} CPU cores (OMP_NUM_THREADS="
            f"{os.environ.get('OMP_NUM_THREADS', 'unset')}); training runs up to {cores // max(processes, 1)}x "
            f"faster with `accelerate launch --num_cpu_threads_per_process {cores // max(processes, 1)}` "
            "(make train passes TRAIN_THREADS, default: every core)")


def main(cfg: TrainConfig) -> Path:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import AutoModelForCausalLM

    set_seed(cfg.seed)
    started = time.perf_counter()
    # cpu=True without a GPU: lets torchrun/mpirun start several CPU processes (gloo) as well.
    # Accumulation goes through accelerator.accumulate (train/loop.py), so the accelerator must know it.
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), gradient_accumulation_steps=cfg.grad_accum_steps)
    run_dir = Path(cfg.output_dir)

    def log(msg: str, all_ranks: bool = False) -> None:
        if all_ranks or accelerator.is_main_process:
            print(f"[train] {msg}", flush=True)

    if cfg.max_tokens_per_batch < cfg.max_seq_len:
        raise ValueError(f"max_tokens_per_batch={cfg.max_tokens_per_batch} < max_seq_len={cfg.max_seq_len}")
    dtype = resolve_dtype(cfg.dtype)
    if dtype == torch.float16:  # no loss scaling here: float16 gradients under/overflow
        raise ValueError(f"dtype={cfg.dtype!r}: train in bfloat16 or float32 (or auto)")
    if accelerator.is_main_process:
        write_run_dir_header(run_dir, cfg, cfg.seed, "train", {"world_size": accelerator.num_processes})
        if not cfg.resume_from_checkpoint and (run_dir / "checkpoints").is_dir():
            # A fresh run: an older run's checkpoints must not be picked up by a later resume=auto.
            shutil.rmtree(run_dir / "checkpoints")
    accelerator.wait_for_everyone()
    train_records, val_records = load_records(cfg)
    log(f"{len(train_records)} training / {len(val_records)} validation records from {cfg.data_dir}")
    idle = idle_cpu_note(accelerator.device.type, accelerator.num_processes)
    if idle:
        log(idle)

    base_path, tokenizer = base_checkpoint(cfg, run_dir, accelerator, train_records)
    model = AutoModelForCausalLM.from_pretrained(str(base_path), use_safetensors=True, dtype=dtype,
                                                 trust_remote_code=cfg.trust_remote_code)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    # The adapter's initial weights, dropout masks and everything after come from the seed alone, not from what the
    # base-model step drew: a first run on a machine converts the GGUF base, which builds a randomly initialised model
    # before copying the weights in, and without this the first run trained another model than every later one.
    set_seed(cfg.seed)
    peft_model = wrap_with_lora(model, cfg.lora)
    n_train = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    log(f"base {cfg.base_model} ({base_path}), dtype {dtype}, {n_train:,} trainable LoRA parameters")

    def examples_for_epoch(epoch: int) -> list[dict[str, Any]]:
        return records_to_examples(train_records, tokenizer, max_seq_len=cfg.max_seq_len,
                                   condition_dropout=cfg.condition_dropout, seed=cfg.seed, epoch=epoch,
                                   progress=accelerator.is_main_process)

    eval_examples = records_to_examples(val_records, tokenizer, max_seq_len=cfg.max_seq_len)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    history, run_stats = train_loop(accelerator, peft_model, cfg, run_dir, examples_for_epoch, eval_examples,
                                    pad_id, log)
    log(f"rank {accelerator.process_index} of {accelerator.num_processes} done: trained up to step {history.step}",
        all_ranks=True)
    accelerator.wait_for_everyone()
    # Collective: under FSDP every rank holds a shard of the adapter and all must join the gather.
    adapter = gather_trainable(accelerator, run_stats["module"]) if run_stats["completed"] else {}
    if accelerator.is_main_process and run_stats["completed"]:
        # Names in the training module start with "model." (SupervisedLoss.model = the peft model).
        state = {name.removeprefix("model."): t for name, t in adapter.items()}
        peft_model.save_pretrained(run_dir, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(run_dir)
        log(f"wrote adapter and tokenizer to {run_dir}")
        metrics = train_metrics(history, run_stats, time.perf_counter() - started, accelerator.num_processes)
        (run_dir / "train_metrics.json").write_text(json.dumps(metrics, indent=2))
        plot_loss_curve(history, run_dir / "loss_curve.png")
        log(f"final_loss {metrics['final_loss']:.4f} eval_loss {metrics['eval_loss']:.4f} "
            f"{metrics['tokens_per_second']:.0f} tokens/s nonpad {metrics['nonpad_share']:.3f} "
            f"peak RSS {metrics['peak_rss_mb']:.0f} MB")
    accelerator.wait_for_everyone()
    return run_dir


def cli(argv: list[str] | None = None) -> int:
    return run_stage_cli(list(sys.argv[1:] if argv is None else argv), TrainConfig, main, prog="usersim train",
                         default_config="configs/train/gemma-270m.yaml")


if __name__ == "__main__":
    sys.exit(cli())
