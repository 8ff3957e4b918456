"""``TrainConfig``: every key of the train stage, with its default and meaning.

YAML files under ``configs/train/`` set these; ``usersim train --config F key=value`` (or
``accelerate launch -m usersim.train.main --config F key=value``) overrides them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LoraSettings:
    """The LoRA adapter (peft)."""

    r: int = 16  # adapter rank
    alpha: int = 32  # scaling numerator (scale = alpha / r)
    dropout: float = 0.05  # dropout on the adapter input
    # Module names to adapt; [] = the architecture's default (usersim.train.lora.DEFAULT_TARGET_MODULES):
    # q/k/v/o + gate/up/down projections for the llama and gemma families.
    target_modules: list[str] = field(default_factory=list)
    # Adapt only the top N decoder layers (0 = every layer). The backward pass then stops at the lowest
    # adapted layer, so a step costs about half as much with N = half the layers (one profile: 2.1 s vs
    # 4.3 s per 512-token step for Gemma-3-270M on 2 CPU cores, fp32; at equal time it learned less).
    top_layers: int = 0


@dataclass
class TrainConfig:
    """LoRA fine-tune a base causal LM into a user simulator."""

    data_dir: str = "runs/default/data"  # a data run dir holding dataset/ (train + validation splits)
    output_dir: str = "runs/default/train"  # the run directory this stage writes
    seed: int = 0  # the one seed; every random choice (dropout of conditions, batch order) derives from it

    # --- base model ---
    # HF id or local checkpoint dir; "gemma3-270m-gguf" = the packaged Gemma-3-270M base (GGUF,
    # dequantised once into cache_dir); "tiny-random" = 2-layer random Llama + tokenizer trained
    # on the training texts (smoke profile), saved under RUN_DIR/base_model/.
    base_model: str = "gemma3-270m-gguf"
    allow_instruct_base: bool = False  # train on a chat/instruct-tuned base anyway (normally refused)
    trust_remote_code: bool = False  # let transformers run model code shipped with the checkpoint
    cache_dir: str = ""  # where converted checkpoints live; "" = ~/.cache/usersim/models
    tiny_vocab_size: int = 512  # tiny-random: BPE vocabulary size
    tiny_hidden_size: int = 64  # tiny-random: hidden size
    tiny_num_layers: int = 2  # tiny-random: transformer layers
    # tiny-random: std of the random weights; 0.2 (not 0.02) so the frozen tied head is large enough
    # for LoRA to move the logits at all.
    tiny_initializer_range: float = 0.2
    dtype: str = "auto"  # auto | float32 | bfloat16 (auto: bfloat16 on a bf16-capable GPU, else float32)
    gradient_checkpointing: bool = False  # recompute activations in backward (less memory, ~30% slower)

    lora: LoraSettings = field(default_factory=LoraSettings)  # LoRA rank, alpha, dropout, target modules (LoraSettings above)

    # --- data ---
    max_seq_len: int = 1024  # longer records are cut from the left at turn boundaries, header kept
    condition_dropout: float = 0.3  # probability of blanking each conditioning field, per record and epoch
    max_train_records: int = 0  # use a seeded random sample of N training records (0 = all)
    max_eval_records: int = 0  # use a seeded random sample of N validation records (0 = all)
    # Tokens per packed row (one micro-batch): records are concatenated, position_ids restart per
    # record and attention never crosses a record boundary. Must be >= max_seq_len.
    max_tokens_per_batch: int = 4096
    packing: bool = True  # false = length-grouped padded batches of up to max_tokens_per_batch tokens
    # Attention on packed rows: "per_record" = once per record (train/record_attention.py; cost follows
    # each record's length, not the row's), "row_mask" = transformers' block-diagonal mask over the
    # whole row (the model's own implementation; cost grows with the row length squared). Only models on
    # SDPA are switched; flash_attention_2 runs records separately from the same boundaries anyway.
    packed_attention: str = "per_record"
    # Before the first step, compare packed vs per-record logits on a few records of the first row and
    # refuse to train if records leak into each other (train/packing_check.py); false = skip the check.
    packing_check: bool = True

    # --- optimisation ---
    learning_rate: float = 2e-4  # peak AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    adam_beta1: float = 0.9  # AdamW beta1
    adam_beta2: float = 0.999  # AdamW beta2
    lr_scheduler: str = "cosine"  # cosine | linear | constant (after warmup)
    warmup_steps: int = 10  # linear warmup from 0 to learning_rate
    grad_accum_steps: int = 1  # micro-batches (packed rows) per optimizer step
    max_grad_norm: float = 1.0  # clip the global gradient norm (0 = off)
    epochs: int = 1  # passes over the training records (ignored when max_steps > 0)
    max_steps: int = 0  # optimizer steps to run (0 = epochs x steps per epoch); epochs repeat as needed

    # --- logging, eval, checkpoints ---
    logging_steps: int = 10  # print a progress line every N steps
    eval_steps: int = 0  # validation loss every N steps (0 = only at the end)
    eval_at_start: bool = False  # also measure the validation loss of the untouched base (step 0)
    save_steps: int = 0  # checkpoint every N steps under RUN_DIR/checkpoints/ (0 = none)
    save_total_limit: int = 2  # keep only the newest N checkpoints
    resume_from_checkpoint: str = ""  # "" = fresh, "auto" = newest complete checkpoint in RUN_DIR, or a path
    # Stop (without final save) after N steps; for testing resume after an interruption (0 = off).
    stop_after_steps: int = 0
