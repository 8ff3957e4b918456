"""The FLOP convention of every utilisation figure in BENCHMARKS.md.

LoRA training of a frozen base, per token that goes through the transformer:
forward ≈ 2·N and backward ≈ 2·N (gradients w.r.t. activations only: the frozen base gets no
weight gradients), so ≈ 4·N, with N the *non-embedding* parameters of the base (embedding lookups
are not matmuls; the LoRA adapters add < 1% and are ignored). The LM head is counted apart, per
position at which logits are computed: 2·d·V forward + 2·d·V backward (input gradient only: the
head is frozen/tied). Attention score FLOPs (∝ sequence length) are ignored: at the sequence
lengths used here they are a few percent of 4·N.

Conversation-level training with supervised-only logits computes the head at supervised
positions only; the per-turn baseline (HF/TRL loss) computes it at every position.
"""

from __future__ import annotations

from typing import Any


def non_embedding_params(model: Any) -> int:
    """Parameters of the base model minus the input embedding and an untied LM head."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    seen: set[int] = set()
    total = 0
    for p in base.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    emb = base.get_input_embeddings().weight
    total -= emb.numel()
    head = base.get_output_embeddings()
    if head is not None and head.weight is not emb and head.weight.data_ptr() != emb.data_ptr():
        total -= head.weight.numel()
    # LoRA adapter weights live inside the base modules once peft wraps them: not part of N.
    total -= sum(p.numel() for n, p in base.named_parameters() if "lora_" in n)
    return int(total)


def lora_train_flops(n_non_embedding: int, tokens: int, logit_positions: int, hidden: int, vocab: int) -> float:
    """4·N per token through the transformer + 4·d·V per position whose logits are computed."""
    return 4.0 * n_non_embedding * tokens + 4.0 * hidden * vocab * logit_positions
