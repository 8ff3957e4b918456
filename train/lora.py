"""LoRA adapters via peft, with per-architecture default target modules."""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from usersim.train.config import LoraSettings

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]
# model_type -> module names adapted when lora.target_modules is empty.
DEFAULT_TARGET_MODULES = {
    **{t: ATTENTION + MLP for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3",
                                    "gemma3_text", "olmo2", "smollm3", "granite", "cohere", "cohere2")},
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
}


def target_modules_for(model: nn.Module, settings: LoraSettings) -> list[str]:
    if settings.target_modules:
        return list(settings.target_modules)
    model_type = getattr(model.config, "model_type", "")
    if model_type not in DEFAULT_TARGET_MODULES:
        raise ValueError(f"no default LoRA target modules for model_type={model_type!r}; "
                         "set lora.target_modules=[...] in the train config")
    return DEFAULT_TARGET_MODULES[model_type]


def adapted_layers(model: nn.Module, settings: LoraSettings) -> list[int] | None:
    """Indices of the decoder layers that get adapters (None = all): the top ``settings.top_layers``."""
    if settings.top_layers < 0:
        raise ValueError(f"lora.top_layers={settings.top_layers}: use 0 (every layer) or a positive count")
    if not settings.top_layers:
        return None
    n_layers = getattr(model.config, "num_hidden_layers", None)
    if not n_layers:
        raise ValueError("lora.top_layers needs config.num_hidden_layers, which this model does not declare")
    if settings.top_layers > n_layers:
        raise ValueError(f"lora.top_layers={settings.top_layers} but the model has {n_layers} layers")
    return list(range(n_layers - settings.top_layers, n_layers))


def wrap_with_lora(model: nn.Module, settings: LoraSettings) -> Any:
    """A peft model with fresh LoRA adapters; the base weights are frozen."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=target_modules_for(model, settings),
                        layers_to_transform=adapted_layers(model, settings), task_type="CAUSAL_LM")
    # peft (0.21) reads the model's `is_gradient_checkpointing` inside PeftModel.__init__, a property
    # transformers 5 deprecated with a FutureWarning on every read. The read is peft's, not ours, and
    # has no alternative entry point, so this one warning is silenced for this call only. Drop the
    # filter once peft reads `is_activation_checkpointing` instead.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                                category=FutureWarning)
        return get_peft_model(model, config)
