"""The training loop: plain torch + accelerate, supervised-only loss, resumable, fails fast on NaN/inf.

One optimizer step = ``grad_accum_steps`` packed rows on each of ``world_size`` processes. The loss
of a step is (sum of token cross-entropies over all its rows on all processes) / (its supervised
tokens on all processes), so every supervised token weighs the same whatever the packing.

Accumulation runs through ``accelerator.accumulate``: it skips the gradient all-reduce (DDP) or
reduce-scatter (FSDP) on all but the last micro-batch of a step, and under DeepSpeed it tells the
engine where the accumulation boundary is, so the engine steps its optimizer once per step (in
accelerate 1.16, ``DeepSpeedEngineWrapper.backward`` calls ``engine.step()`` only when
``sync_gradients`` is true). The LR scheduler is not handed to accelerate: it is stepped here, once
per optimizer step, under every engine (accelerate's wrapper would step it ``num_processes`` times).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from usersim.train import batching, checkpoint
from usersim.train.config import TrainConfig
from usersim.train.loss import SupervisedLoss
from usersim.train.record_attention import RECORD_ATTENTION, use_record_attention


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
    """Validation loss per supervised token (all processes together); nan without examples.

    Every process runs the same number of forwards through the prepared module: under FSDP each
    forward gathers parameter shards collectively, so a process with one row fewer would leave the
    others waiting. Processes short of rows repeat their first row (or row 0) with weight 0.
    """
    rows = batching.plan_batches(examples, cfg.max_tokens_per_batch, cfg.seed, cfg.packing)
    if not rows:
        return float("nan")
    world, rank = accelerator.num_processes, accelerator.process_index
    mine = rows[rank::world]
    per_rank = math.ceil(len(rows) / world)
    padded = [(row, 1.0) for row in mine] + [(mine[0] if mine else rows[0], 0.0)] * (per_rank - len(mine))
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    loss_model.eval()
    with torch.no_grad():
        for row, weight in padded:
            batch = _to_device(batching.collate([examples[i] for i in row], cfg.packing, pad_id), accelerator.device)
            loss_sum, n = loss_model(**batch)
            total += weight * torch.stack([loss_sum.double(), n.double()])
    loss_model.train()
    total = accelerator.reduce(total, reduction="sum")
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")


def training_plan(accelerator: Any, cfg: TrainConfig) -> dict[str, Any]:
    """What a resume must match (usersim.train.checkpoint.check_resumable): the process layout and the data settings."""
    return {"world_size": accelerator.num_processes, "grad_accum_steps": cfg.grad_accum_steps,
            "engine": checkpoint.engine_of(accelerator), "seed": cfg.seed, "packing": cfg.packing,
            "max_tokens_per_batch": cfg.max_tokens_per_batch, "max_seq_len": cfg.max_seq_len,
            "condition_dropout": cfg.condition_dropout, "max_train_records": cfg.max_train_records}


def check_accumulation(accelerator: Any, cfg: TrainConfig) -> None:
    """The accelerator must accumulate exactly grad_accum_steps micro-batches (an accelerate config can override it)."""
    if accelerator.gradient_accumulation_steps != cfg.grad_accum_steps:
        raise ValueError(f"the accelerator accumulates {accelerator.gradient_accumulation_steps} micro-batches per "
                         f"step but the train config says grad_accum_steps={cfg.grad_accum_steps}: remove "
                         "gradient_accumulation_steps from the accelerate config (and ACCELERATE_GRADIENT_"
                         "ACCUMULATION_STEPS from the environment); the train config decides it")


def prepare_deepspeed_config(accelerator: Any, cfg: TrainConfig) -> None:
    """Fill the DeepSpeed config from the train config before prepare(): one packed row per micro-batch,
    grad_accum_steps micro-batches per step, clipping at max_grad_norm. Refuses conflicting values."""
    plugin = accelerator.state.deepspeed_plugin
    ds = plugin.deepspeed_config
    wanted = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": cfg.grad_accum_steps,
              "gradient_clipping": cfg.max_grad_norm if cfg.max_grad_norm > 0 else 0.0,
              "train_batch_size": accelerator.num_processes * cfg.grad_accum_steps}
    for key, value in wanted.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
        elif float(ds[key]) != float(value):
            raise ValueError(f"the DeepSpeed config sets {key}={ds[key]} but the train config implies {value}; "
                             "set it to auto (or remove it) in the accelerate config")


def choose_packed_attention(model: torch.nn.Module, cfg: TrainConfig) -> str:
    """Apply ``cfg.packed_attention`` to the model; returns a description ("" without packing)."""
    if cfg.packed_attention not in ("per_record", "row_mask"):
        raise ValueError(f"packed_attention={cfg.packed_attention!r}: use per_record or row_mask")
    if not cfg.packing:
        return ""
    if cfg.packed_attention == "per_record" and use_record_attention(model):
        return "attention per record (train/record_attention.py)"
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    impl = getattr(getattr(base, "config", None), "_attn_implementation", "?")
    if cfg.packed_attention == "row_mask" and impl == RECORD_ATTENTION:
        base.set_attn_implementation("sdpa")
        impl = "sdpa"
    return f"attn_implementation={impl!r} with the record boundaries of each row"


def train_loop(accelerator: Any, peft_model: torch.nn.Module, cfg: TrainConfig, run_dir: Path,
               examples_for_epoch: Callable[[int], list[dict[str, Any]]], eval_examples: Sequence[dict[str, Any]],
               pad_id: int, log: Callable[..., None]) -> tuple[TrainHistory, dict[str, Any]]:
    """Train ``peft_model`` in place; returns the history and this run's ``{wall_s, tokens, completed, module}``
    (``module``: the prepared training module, which a collective final save needs)."""
    from usersim.train.packing_check import check_packing

    world, rank = accelerator.num_processes, accelerator.process_index
    check_accumulation(accelerator, cfg)
    attention = choose_packed_attention(peft_model, cfg)
    if attention:
        log(f"packed rows: {attention}")
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
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=cfg.learning_rate,
                                  weight_decay=cfg.weight_decay, betas=(cfg.adam_beta1, cfg.adam_beta2))
    scheduler = build_scheduler(optimizer, cfg, total_steps)
    if checkpoint.engine_of(accelerator) == checkpoint.DEEPSPEED:
        prepare_deepspeed_config(accelerator, cfg)
    wrapper = SupervisedLoss(peft_model)
    # FSDP's transformer-based auto wrap reads _no_split_modules from the module it prepares: without it
    # the whole model would be one FSDP unit (all parameters gathered at once).
    base = peft_model.get_base_model() if hasattr(peft_model, "get_base_model") else peft_model
    wrapper._no_split_modules = getattr(base, "_no_split_modules", None)
    loss_model, optimizer = accelerator.prepare(wrapper, optimizer)
    # FSDP replaces the parameters by sharded ones in prepare(): take them from the prepared module.
    params = [p for p in loss_model.parameters() if p.requires_grad]
    plan = training_plan(accelerator, cfg)

    if cfg.packing_check and cfg.packing:
        # The first row of the global plan (not this rank's): every process runs the same forwards.
        rows = batching.plan_batches(epoch_examples[0], cfg.max_tokens_per_batch, cfg.seed, cfg.packing)
        report = check_packing(loss_model, accelerator.unwrap_model(loss_model), epoch_examples[0],
                               rows[0] if rows else [], accelerator.device)
        log(f"packing check: {report}")

    history = TrainHistory()
    resume = checkpoint.resolve_resume(run_dir, cfg.resume_from_checkpoint)
    if resume is not None:
        progress, note = checkpoint.load_checkpoint(accelerator, resume, loss_model, optimizer, scheduler, plan,
                                                    cfg.seed)
        history = TrainHistory(**progress)
        log(f"resumed from {resume} at step {history.step} ({note})")
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
        plan_of_epoch = steps_of(epoch)
        micro = plan_of_epoch[index % len(plan_of_epoch)]
        examples = epoch_examples[epoch]
        batches = [batching.collate([examples[i] for i in row], cfg.packing, pad_id) for row in micro]
        counts = torch.tensor([[*batching.batch_token_counts(b)] for b in batches], dtype=torch.float64).sum(0)
        counts = accelerator.reduce(counts.to(accelerator.device), reduction="sum")
        global_supervised = counts[2].clamp(min=1)
        step_loss = torch.zeros((), dtype=torch.float64, device=accelerator.device)
        step_no = history.step + 1
        for batch in batches:
            with accelerator.accumulate(loss_model):
                loss_sum, _ = loss_model(**_to_device(batch, accelerator.device))
                # The gradient wanted is d(step loss) = d(sum over all rows and processes / global tokens).
                # The data-parallel reduction averages over processes (x world) and accelerate (or the
                # DeepSpeed engine) divides each micro-batch's loss by grad_accum_steps (x accum).
                accelerator.backward(loss_sum * (world * cfg.grad_accum_steps) / global_supervised)
            step_loss += loss_sum.detach().double()
        if not accelerator.sync_gradients:
            raise RuntimeError(f"step {step_no}: the accelerator did not reach an accumulation boundary after "
                               f"{len(batches)} micro-batches (grad_accum_steps={cfg.grad_accum_steps})")
        step_loss = float(accelerator.reduce(step_loss, reduction="sum") / global_supervised)
        if not math.isfinite(step_loss):
            raise NonFiniteLossError(f"non-finite training loss ({step_loss}) at step {step_no}; "
                                     "lower learning_rate, check the data, or use dtype=float32")
        # Under DeepSpeed the engine already clipped and stepped inside backward(); this returns its norm.
        grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf"))
        if grad_norm is not None and not math.isfinite(float(grad_norm)):
            raise NonFiniteLossError(f"non-finite gradient norm ({float(grad_norm)}) at step {step_no}; "
                                     "lower learning_rate or set max_grad_norm")
        optimizer.step()  # a no-op under DeepSpeed (the engine stepped at the boundary)
        scheduler.step()  # once per optimizer step, whatever the engine
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
            _save(accelerator, loss_model, optimizer, scheduler, history, run_dir, cfg, plan)
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
    return history, {"wall_s": wall, "tokens": history.tokens - tokens_at_start, "completed": completed,
                     "module": loss_model}


def _save(accelerator: Any, loss_model: torch.nn.Module, optimizer: Any, scheduler: Any, history: TrainHistory,
          run_dir: Path, cfg: TrainConfig, plan: dict[str, Any]) -> None:
    ckpt = checkpoint.checkpoint_dir(run_dir, history.step)
    accelerator.wait_for_everyone()
    checkpoint.save_checkpoint(accelerator, ckpt, loss_model, optimizer, scheduler, history.to_json(), plan)
    if accelerator.is_main_process:
        checkpoint.prune_checkpoints(run_dir, cfg.save_total_limit)
    accelerator.wait_for_everyone()
