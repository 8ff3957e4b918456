"""The training loop: plain torch + accelerate, supervised-only loss, resumable, fails fast on NaN/inf.

One optimizer step = ``grad_accum_steps`` packed rows on each of ``world_size`` processes. The loss
of a step is (sum of token cross-entropies over all its rows on all processes) / (its supervised
tokens on all processes), so every supervised token weighs the same whatever the packing.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from train import batching, checkpoint
from train.config import TrainConfig
from train.loss import SupervisedLoss


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/inf loss or gradient norm."""


@dataclass
class TrainHistory:
    """What the run did, carried across resumes (stored in each checkpoint's state.json)."""

    step: int = 0
    tokens: int = 0  # real (non-pad) tokens processed, all processes
    slots: int = 0  # tensor slots processed (real + pad), all processes
    supervised_tokens: int = 0
    losses: list[list[float]] = field(default_factory=list)  # [step, train loss]
    eval_losses: list[list[float]] = field(default_factory=list)  # [step, validation loss]
    nonpad_shares: list[float] = field(default_factory=list)  # per step

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> Any:
    from transformers import (get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                              get_linear_schedule_with_warmup)

    if cfg.lr_scheduler == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, total_steps)
    if cfg.lr_scheduler == "linear":
        return get_linear_schedule_with_warmup(optimizer, cfg.warmup_steps, total_steps)
    if cfg.lr_scheduler == "constant":
        return get_constant_schedule_with_warmup(optimizer, cfg.warmup_steps)
    raise ValueError(f"lr_scheduler={cfg.lr_scheduler!r}: use cosine, linear or constant")


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def evaluate(accelerator: Any, loss_model: torch.nn.Module, examples: Sequence[dict[str, Any]],
             cfg: TrainConfig, pad_id: int) -> float:
    """Validation loss per supervised token (all processes together); nan without examples."""
    rows = batching.plan_batches(examples, cfg.max_tokens_per_batch, cfg.seed, cfg.packing)
    mine = rows[accelerator.process_index::accelerator.num_processes]
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    # The bare module, not the DDP wrapper: processes may hold different numbers of rows, and a
    # DDP forward would wait for the others (buffer sync) in a collective they never join.
    loss_model = accelerator.unwrap_model(loss_model)
    loss_model.eval()
    with torch.no_grad():
        for row in mine:
            batch = _to_device(batching.collate([examples[i] for i in row], cfg.packing, pad_id), accelerator.device)
            loss_sum, n = loss_model(**batch)
            total += torch.stack([loss_sum.double(), n.double()])
    loss_model.train()
    total = accelerator.reduce(total, reduction="sum")
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")


def train_loop(accelerator: Any, peft_model: torch.nn.Module, cfg: TrainConfig, run_dir: Path,
               examples_for_epoch: Callable[[int], list[dict[str, Any]]], eval_examples: Sequence[dict[str, Any]],
               pad_id: int, log: Callable[..., None]) -> tuple[TrainHistory, dict[str, Any]]:
    """Train ``peft_model`` in place; returns the history and this run's ``{wall_s, tokens, completed}``."""
    world, rank = accelerator.num_processes, accelerator.process_index
    # The plan of epoch 0 fixes the number of steps per epoch (later epochs differ only slightly).
    plans: dict[int, list[list[list[int]]]] = {}
    epoch_examples: dict[int, list[dict[str, Any]]] = {}

    def steps_of(epoch: int) -> list[list[list[int]]]:
        if epoch not in plans:
            plans.clear()
            epoch_examples.clear()
            epoch_examples[epoch] = examples_for_epoch(epoch)
            rows = batching.plan_batches(epoch_examples[epoch], cfg.max_tokens_per_batch, cfg.seed + epoch, cfg.packing)
            plans[epoch] = batching.steps_for_rank(rows, world, rank, cfg.grad_accum_steps)
        return plans[epoch]

    steps_per_epoch = len(steps_of(0))
    total_steps = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * steps_per_epoch
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                  betas=(cfg.adam_beta1, cfg.adam_beta2))
    scheduler = build_scheduler(optimizer, cfg, total_steps)
    loss_model, optimizer = accelerator.prepare(SupervisedLoss(peft_model), optimizer)

    history = TrainHistory()
    resume = checkpoint.resolve_resume(run_dir, cfg.resume_from_checkpoint)
    if resume is not None:
        progress = checkpoint.load_checkpoint(resume, peft_model, optimizer, scheduler, rank)
        history = TrainHistory(**progress)
        log(f"resumed from {resume} at step {history.step}")
    elif cfg.resume_from_checkpoint == "auto":
        log("resume_from_checkpoint=auto: no complete checkpoint found, starting fresh")
    log(f"rank {rank}/{world}: {steps_per_epoch} steps/epoch, {total_steps} steps in total", all_ranks=True)
    if cfg.eval_at_start and history.step == 0:
        val = evaluate(accelerator, loss_model, eval_examples, cfg, pad_id)
        history.eval_losses.append([0, val])
        log(f"step 0 (base model) eval_loss {val:.4f}")

    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=history.step, desc="train", disable=not accelerator.is_main_process,
               mininterval=5)
    start, steps_this_run, tokens_at_start = time.perf_counter(), 0, history.tokens
    while history.step < total_steps:
        epoch, index = divmod(history.step, steps_per_epoch)
        plan = steps_of(epoch)
        micro = plan[index % len(plan)]
        examples = epoch_examples[epoch]
        batches = [batching.collate([examples[i] for i in row], cfg.packing, pad_id) for row in micro]
        counts = torch.tensor([[*batching.batch_token_counts(b)] for b in batches], dtype=torch.float64).sum(0)
        counts = accelerator.reduce(counts.to(accelerator.device), reduction="sum")
        global_supervised = counts[2].clamp(min=1)
        step_loss = torch.zeros((), dtype=torch.float64, device=accelerator.device)
        for k, batch in enumerate(batches):
            sync = accelerator.no_sync(loss_model) if k < len(batches) - 1 else nullcontext()
            with sync:
                loss_sum, _ = loss_model(**_to_device(batch, accelerator.device))
                # DDP averages gradients over processes: scale so the result is the per-token mean.
                accelerator.backward(loss_sum * world / global_supervised)
            step_loss += loss_sum.detach().double()
        step_loss = float(accelerator.reduce(step_loss, reduction="sum") / global_supervised)
        step_no = history.step + 1
        if not math.isfinite(step_loss):
            raise NonFiniteLossError(f"non-finite training loss ({step_loss}) at step {step_no}; "
                                     "lower learning_rate, check the data, or use dtype=float32")
        grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf"))
        if grad_norm is not None and not math.isfinite(float(grad_norm)):
            raise NonFiniteLossError(f"non-finite gradient norm ({float(grad_norm)}) at step {step_no}; "
                                     "lower learning_rate or set max_grad_norm")
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        history.step = step_no
        history.tokens += int(counts[0])
        history.slots += int(counts[1])
        history.supervised_tokens += int(counts[2])
        history.losses.append([step_no, step_loss])
        history.nonpad_shares.append(float(counts[0] / counts[1]))
        steps_this_run += 1
        bar.update(1)
        if step_no % max(cfg.logging_steps, 1) == 0 or step_no == total_steps:
            log(f"rank {rank} step {step_no}/{total_steps} loss {step_loss:.4f} lr {scheduler.get_last_lr()[0]:.2e} "
                f"tokens {int(counts[0])} nonpad {float(counts[0] / counts[1]):.3f}", all_ranks=True)
        if cfg.eval_steps and step_no % cfg.eval_steps == 0 and step_no < total_steps:
            val = evaluate(accelerator, loss_model, eval_examples, cfg, pad_id)
            history.eval_losses.append([step_no, val])
            log(f"step {step_no} eval_loss {val:.4f}")
        if cfg.save_steps and step_no % cfg.save_steps == 0 and step_no < total_steps:
            _save(accelerator, peft_model, optimizer, scheduler, history, run_dir, cfg)
            log(f"saved checkpoint at step {step_no}")
        if cfg.stop_after_steps and steps_this_run >= cfg.stop_after_steps and step_no < total_steps:
            log(f"stop_after_steps={cfg.stop_after_steps}: stopping at step {step_no} (resume with "
                "resume_from_checkpoint=auto)")
            break
    bar.close()
    wall = time.perf_counter() - start
    completed = history.step >= total_steps
    if completed:
        val = evaluate(accelerator, loss_model, eval_examples, cfg, pad_id)
        history.eval_losses.append([history.step, val])
        log(f"final eval_loss {val:.4f}")
    return history, {"wall_s": wall, "tokens": history.tokens - tokens_at_start, "completed": completed}


def _save(accelerator: Any, peft_model: torch.nn.Module, optimizer: Any, scheduler: Any, history: TrainHistory,
          run_dir: Path, cfg: TrainConfig) -> None:
    ckpt = checkpoint.checkpoint_dir(run_dir, history.step)
    accelerator.wait_for_everyone()
    checkpoint.save_rng(ckpt, accelerator.process_index)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        checkpoint.save_checkpoint(ckpt, peft_model, optimizer, scheduler, history.to_json())
        checkpoint.prune_checkpoints(run_dir, cfg.save_total_limit)
    accelerator.wait_for_everyone()
