"""Supervised-only LM head: logits only where a label exists.

Only user-turn tokens are supervised, a minority of every sequence, and the LM head is by far the
largest activation for big vocabularies (Gemma-3: 262,144 columns; a 4,096-token row in float32
is 4 GiB of logits before the softmax copy). So the body runs to its final hidden states, the
hidden states at positions whose *next* token is supervised are gathered, and only those rows go
through the LM head (plus the architecture's final-logit transform) into cross-entropy.

The result equals the model's own full-logits loss (tests check it to 1e-5). Architectures whose
head is not a plain projection + known transform fall back to the model's own loss (and say so).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from usersim.data_prep.prompt_format import IGNORE_INDEX
from usersim.train.record_attention import packed_forward

# model_type -> how the final logits are transformed after the LM head projection.
# "softcap": tanh(x / c) * c with c = config.final_logit_softcapping (when set);
# "scale": x * config.logit_scale (Cohere); "divide": x / config.logits_scaling (Granite).
SUPPORTED_HEADS = {
    "llama": (), "mistral": (), "qwen2": (), "qwen3": (), "phi3": (), "olmo2": (), "smollm3": (),
    "gemma": ("softcap",), "gemma2": ("softcap",), "gemma3": ("softcap",), "gemma3_text": ("softcap",),
    "cohere": ("scale",), "cohere2": ("scale",), "granite": ("divide",),
}
_warned: set[str] = set()


def _base(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def supports_supervised_only(model: nn.Module) -> bool:
    base = _base(model)
    return getattr(base.config, "model_type", None) in SUPPORTED_HEADS and hasattr(base, "get_decoder")


def final_logit_transform(config: Any, logits: torch.Tensor) -> torch.Tensor:
    for kind in SUPPORTED_HEADS.get(getattr(config, "model_type", ""), ()):
        if kind == "softcap" and getattr(config, "final_logit_softcapping", None):
            cap = config.final_logit_softcapping
            logits = torch.tanh(logits / cap) * cap
        elif kind == "scale" and getattr(config, "logit_scale", None):
            logits = logits * config.logit_scale
        elif kind == "divide" and getattr(config, "logits_scaling", None):
            logits = logits / config.logits_scaling
    return logits


def supervised_only_loss(model: nn.Module, input_ids: torch.Tensor, labels: torch.Tensor,
                         position_ids: torch.Tensor | None = None,
                         attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum of token cross-entropies, number of supervised tokens)`` for a (packed or padded) batch.

    ``labels`` are aligned with ``input_ids`` (IGNORE_INDEX = not supervised); token t is predicted from
    position t-1, as in transformers' own causal-LM loss. The sum (not the mean) lets callers
    normalise over gradient accumulation and processes.
    """
    base = _base(model)
    target = labels[:, 1:]
    keep = target != IGNORE_INDEX
    n_tokens = keep.sum()
    if not supports_supervised_only(model):
        model_type = getattr(base.config, "model_type", "?")
        if model_type not in _warned:
            _warned.add(model_type)
            print(f"[train] supervised-only logits not implemented for model_type={model_type!r}: "
                  "using the model's own full-logits loss")
        with packed_forward(position_ids, attention_mask) as varlen:
            out = model(input_ids=input_ids, labels=labels, position_ids=position_ids, attention_mask=attention_mask,
                        use_cache=False, **varlen)
        return out.loss.float() * n_tokens, n_tokens
    # use_cache=False also matters for packed rows: transformers only isolates records by position_ids
    # (block-diagonal mask) when no KV cache is in use.
    # A packed row names its record boundaries (train/record_attention.py): per-record attention and
    # flash_attention_2 use them; plain SDPA ignores them and keeps its block-diagonal mask.
    with packed_forward(position_ids, attention_mask) as varlen:
        hidden = base.get_decoder()(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                                    use_cache=False, **varlen).last_hidden_state
    picked = hidden[:, :-1][keep]
    logits = final_logit_transform(base.config, base.get_output_embeddings()(picked))
    loss_sum = F.cross_entropy(logits.float(), target[keep], reduction="sum")
    return loss_sum, n_tokens


class SupervisedLoss(nn.Module):
    """The model with the supervised-only loss as its forward.

    Wrapping (rather than calling the body from outside) keeps DDP/FSDP correct: accelerate wraps
    *this* module, so its forward is the one the distributed wrapper sees.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, position_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return supervised_only_loss(self.model, input_ids, labels, position_ids, attention_mask)
