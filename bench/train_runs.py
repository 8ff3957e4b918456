"""One training run of one contender, meant to run in a fresh child process (harness.run_isolated).

Contenders, all on the same token-level examples (``{"input_ids", "labels"}`` of conversation-level
records) and the same base model + LoRA settings:

- ``conversation``: ours, through the train stage's own loop (``usersim.train.loop.train_loop``: packed
  padding-free rows from usersim.train.batching, usersim.train.loss.supervised_only_loss, AdamW, grad clipping).
  One sequence per conversation, every user turn supervised, LM head at supervised positions only,
  attention once per record (``packed_attention: per_record``, train/record_attention.py).
- ``conversation_row_mask``: the same with ``packed_attention: row_mask``: transformers' SDPA over the
  whole packed row with a block-diagonal mask (what ``conversation`` did before per-record attention).
- ``per_turn_trl``: TRL's ``SFTTrainer`` on per-turn prompt→completion samples
  (bench.per_turn.per_turn_samples: every user turn one sample carrying its whole history),
  ``completion_only_loss=True``, TRL's default padded batches. The samples are passed
  pre-tokenised (``input_ids`` + ``completion_mask``) so both contenders see identical tokens.
- ``per_turn_plain``: the same per-turn samples through a plain transformers loop: length-grouped
  padded batches (usersim.train.batching, ``packing=False``) and the model's own full-logits loss. This
  separates the cost of the per-turn *formulation* from TRL's trainer overhead.

``per_turn_plain``'s loop is written here (AdamW, constant LR, one optimizer step per padded
batch), since train_loop always uses the supervised-only loss.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from usersim.data_prep.prompt_format import IGNORE_INDEX

from bench.harness import peak_rss_mb
from bench.per_turn import completion_labels, per_turn_samples


def load_model(spec: dict[str, Any], tokenizer: Any) -> Any:
    """The base model of a run: the tiny random Llama, or a local safetensors checkpoint."""
    if spec["kind"] == "tiny":
        from usersim.train.tiny_model import build_tiny_model

        return build_tiny_model(tokenizer, hidden_size=spec.get("hidden", 64), num_layers=spec.get("layers", 2),
                                seed=spec.get("seed", 0))
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(spec["path"], use_safetensors=True, dtype=torch.float32)


def load_tokenizer(tok_dir: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tok_dir)


def lora_model(spec: dict[str, Any], tokenizer: Any, lora: dict[str, Any], seed: int) -> Any:
    from usersim.train.config import LoraSettings
    from usersim.train.lora import wrap_with_lora

    torch.manual_seed(seed)
    return wrap_with_lora(load_model(spec, tokenizer), LoraSettings(**lora))


def per_turn_examples(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-turn samples of every example, with ``labels`` (completion-only) for plain loops."""
    out = []
    for ex in examples:
        for s in per_turn_samples(ex["input_ids"], ex["labels"]):
            out.append({"input_ids": s["input_ids"], "completion_mask": s["completion_mask"],
                        "labels": completion_labels(s)})
    return out


def _loop(model: Any, examples: list[dict[str, Any]], *, packing: bool, supervised_only: bool, max_tokens: int,
          epochs: int, seed: int, pad_id: int, lr: float) -> dict[str, Any]:
    from usersim.train.batching import batch_token_counts, collate, plan_batches
    from usersim.train.loss import supervised_only_loss

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    model.train()
    epoch_s, losses = [], []
    real = slots = supervised = steps = 0
    for epoch in range(epochs):
        plan = plan_batches(examples, max_tokens, seed + epoch, packing)
        t0 = time.perf_counter()
        loss_sum = 0.0
        n_sum = 0
        for idx in plan:
            batch = collate([examples[i] for i in idx], packing, pad_id)
            r, s, n = batch_token_counts(batch)
            if supervised_only:
                total, count = supervised_only_loss(model, **batch)
                loss = total / count.clamp(min=1)
            else:
                loss = model(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss_sum += float(loss.detach()) * n
            n_sum += n
            if epoch == 0:
                real, slots, supervised, steps = real + r, slots + s, supervised + n, steps + 1
        epoch_s.append(time.perf_counter() - t0)
        losses.append(loss_sum / max(1, n_sum))
    return {"epoch_seconds": epoch_s, "train_loss_per_epoch": losses, "tokens_real": real, "tokens_slots": slots,
            "tokens_supervised": supervised, "steps_per_epoch": steps}


def run_contender(contender: str, spec: dict[str, Any], tok_dir: str, examples: list[dict[str, Any]], *,
                  epochs: int, max_tokens: int, lora: dict[str, Any], seed: int, lr: float = 2e-4,
                  trl_batch_size: int = 4, threads: int = 1) -> dict[str, Any]:
    """Train one contender for ``epochs`` epochs; timings, token counts and RSS (child process)."""
    if threads:
        torch.set_num_threads(threads)
    tokenizer = load_tokenizer(tok_dir)
    model = lora_model(spec, tokenizer, lora, seed)
    rss_before = peak_rss_mb()
    if contender in ("conversation", "conversation_row_mask"):
        attention = "row_mask" if contender == "conversation_row_mask" else "per_record"
        out = _run_train_loop(model, examples, max_tokens=max_tokens, epochs=epochs, seed=seed,
                              pad_id=tokenizer.pad_token_id, lr=lr, packed_attention=attention)
    elif contender == "per_turn_plain":
        samples = [{"input_ids": s["input_ids"], "labels": s["labels"]} for s in per_turn_examples(examples)]
        out = _loop(model, samples, packing=False, supervised_only=False, max_tokens=max_tokens, epochs=epochs,
                    seed=seed, pad_id=tokenizer.pad_token_id, lr=lr)
    elif contender == "per_turn_trl":
        out = _run_trl(model, tokenizer, per_turn_examples(examples), epochs=epochs, seed=seed, lr=lr,
                       batch_size=trl_batch_size)
    else:
        raise ValueError(f"unknown contender {contender!r}")
    out["rss_before_train_mb"] = rss_before
    out["seconds_per_epoch"] = sorted(out["epoch_seconds"])[len(out["epoch_seconds"]) // 2]
    return out


def _run_train_loop(model: Any, examples: list[dict[str, Any]], *, max_tokens: int, epochs: int, seed: int,
                    pad_id: int, lr: float, packed_attention: str = "per_record") -> dict[str, Any]:
    """Ours: usersim.train.loop.train_loop on the conversation-level examples (no eval set, no checkpoints)."""
    import tempfile
    from pathlib import Path

    from accelerate import Accelerator

    from usersim.train.config import TrainConfig
    from usersim.train.loop import train_loop

    cfg = TrainConfig(seed=seed, epochs=epochs, max_tokens_per_batch=max_tokens, max_seq_len=max_tokens, packing=True,
                      learning_rate=lr, lr_scheduler="constant", warmup_steps=0, logging_steps=10**9,
                      packed_attention=packed_attention)
    with tempfile.TemporaryDirectory() as tmp:
        history, run = train_loop(Accelerator(cpu=True), model, cfg, Path(tmp), lambda epoch: list(examples), [],
                                  pad_id, lambda *msg, **kw: None)
    steps = history.step // epochs
    losses = [l for _, l in history.losses]
    return {"epoch_seconds": [run["wall_s"] / epochs] * epochs,
            "train_loss_per_epoch": [sum(losses[-steps:]) / max(1, steps)],
            "tokens_real": history.tokens // epochs, "tokens_slots": history.slots // epochs,
            "tokens_supervised": history.supervised_tokens // epochs, "steps_per_epoch": steps}


def _run_trl(model: Any, tokenizer: Any, samples: list[dict[str, Any]], *, epochs: int, seed: int, lr: float,
             batch_size: int) -> dict[str, Any]:
    import tempfile

    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    class CountingCollator(DataCollatorForLanguageModeling):
        """TRL's own collator, counting the token slots (pads included) it hands to the model."""

        counts = {"slots": 0, "real": 0, "supervised": 0, "steps": 0}

        def torch_call(self, examples):
            batch = super().torch_call(examples)
            c = self.counts
            c["slots"] += batch["input_ids"].numel()
            c["real"] += int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
            c["supervised"] += int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            c["steps"] += 1
            return batch

    class EpochTimer(TrainerCallback):
        def __init__(self):
            self.starts, self.seconds = [], []

        def on_epoch_begin(self, args, state, control, **kw):
            self.starts.append(time.perf_counter())

        def on_epoch_end(self, args, state, control, **kw):
            self.seconds.append(time.perf_counter() - self.starts[-1])

    data = Dataset.from_list([{"input_ids": s["input_ids"], "completion_mask": s["completion_mask"]} for s in samples])
    collator = CountingCollator(pad_token_id=tokenizer.pad_token_id)
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as tmp:
        args = SFTConfig(output_dir=tmp, per_device_train_batch_size=batch_size, num_train_epochs=epochs,
                         learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                         completion_only_loss=True, packing=False, max_length=None, save_strategy="no",
                         report_to="none", logging_steps=10**9, use_cpu=True, seed=seed, data_seed=seed,
                         disable_tqdm=True, dataloader_num_workers=0, bf16=False, fp16=False)
        trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                             data_collator=collator, callbacks=[timer])
        result = trainer.train()
    c = CountingCollator.counts
    per_epoch = {k: v // epochs for k, v in c.items()}
    return {"epoch_seconds": timer.seconds, "train_loss_per_epoch": [float(result.training_loss)],
            "tokens_real": per_epoch["real"], "tokens_slots": per_epoch["slots"],
            "tokens_supervised": per_epoch["supervised"], "steps_per_epoch": per_epoch["steps"]}


@torch.no_grad()
def loss_equality(spec: dict[str, Any], tok_dir: str, examples: list[dict[str, Any]], *, lora: dict[str, Any],
                  seed: int, max_tokens: int, threads: int = 1) -> dict[str, Any]:
    """Per-token mean NLL of all user-turn tokens, both formulations, at identical LoRA weights.

    The LoRA B matrices (zero at init) are set to seeded random values first, so the adapter is
    part of the function being compared. Conversation-level: packed rows, supervised-only logits
    (usersim.train.loss), sum over supervised tokens / their count. Per-turn: every sample separately
    through the model's own full-logits loss, sum over completion tokens / their count.
    """
    from usersim.train.batching import collate, plan_batches
    from usersim.train.loss import supervised_only_loss
    from usersim.train.record_attention import use_record_attention

    if threads:
        torch.set_num_threads(threads)
    tokenizer = load_tokenizer(tok_dir)
    model = lora_model(spec, tokenizer, {**lora, "dropout": 0.0}, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    model.eval()
    use_record_attention(model)  # the conversation-level side as training runs it (per-record attention)
    conv_sum, conv_n = 0.0, 0
    for idx in plan_batches(examples, max_tokens, seed, packing=True):
        batch = collate([examples[i] for i in idx], True, tokenizer.pad_token_id)
        s, n = supervised_only_loss(model, **batch)
        conv_sum, conv_n = conv_sum + float(s.double()), conv_n + int(n)
    turn_sum, turn_n, n_samples = 0.0, 0, 0
    for ex in per_turn_examples(examples):
        ids = torch.tensor([ex["input_ids"]])
        labels = torch.tensor([ex["labels"]])
        n = int((labels[:, 1:] != IGNORE_INDEX).sum())
        turn_sum += float(model(input_ids=ids, labels=labels).loss.double()) * n
        turn_n += n
        n_samples += 1
    conv, turn = conv_sum / conv_n, turn_sum / turn_n
    return {"conversation_level_nll": conv, "per_turn_nll": turn, "abs_diff": abs(conv - turn),
            "supervised_tokens_conversation_level": conv_n, "supervised_tokens_per_turn": turn_n,
            "per_turn_samples": n_samples, "conversations": len(examples), "agree_within_1e-4": abs(conv - turn) < 1e-4}
