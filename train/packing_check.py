"""Startup self-check: do packed rows really keep records apart?

Packing (train/batching.py) puts several records into one row with ``position_ids`` restarting at 0
for each and no attention mask. Records are kept from attending to each other only because the
attention honours the row's record boundaries: per-record attention (train/record_attention.py,
the default) and flash_attention_2 through the ``cu_seq_lens`` keywords, SDPA/eager through the
block-diagonal mask transformers (>= 4.54, ``masking_utils.find_packed_sequence_indices``) derives
from restarting position_ids. With an older transformers, a custom model or an attention
implementation that ignores both, every record would silently attend to the ones before it in its row.

So before the first step, on a tiny slice of the real data (the first packed row of the run,
``max_records`` records cut to ``max_tokens_per_record`` tokens each), the logits of each record
inside the packed row are compared with the logits of the same record run alone. Training is
refused (:class:`PackingMaskError`) if they differ beyond a tolerance. The forwards go through the
prepared module, the same number on every process, so FSDP's collective gathers stay in step.
"""

from __future__ import annotations

import types
from typing import Any, Sequence

import torch
from torch import nn

from usersim.train.record_attention import packed_forward

# Largest |packed - alone| logit difference allowed, relative to the largest |logit| of the reference.
# float32 runs agree to ~1e-6; bf16 kernels reorder sums for different row lengths (~1e-2).
TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-6}
LOW_PRECISION_TOLERANCE = 3e-2


class PackingMaskError(RuntimeError):
    """Records in a packed row influence each other: packed training would be wrong."""


def _probe_forward(self: nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor,
                   keep: torch.Tensor) -> torch.Tensor:
    """Stands in for SupervisedLoss.forward during the check: logits (float32) at the ``keep`` positions."""
    model = self.model
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    with packed_forward(position_ids, None) as varlen:  # the same keywords training passes
        if hasattr(base, "get_decoder") and base.get_output_embeddings() is not None:
            hidden = base.get_decoder()(input_ids=input_ids, position_ids=position_ids, use_cache=False,
                                        **varlen).last_hidden_state
            return base.get_output_embeddings()(hidden[keep]).float()
        return model(input_ids=input_ids, position_ids=position_ids, use_cache=False, **varlen).logits[keep].float()


def pick_records(examples: Sequence[dict[str, Any]], first_row: Sequence[int], max_records: int,
                 max_tokens_per_record: int) -> list[list[int]]:
    """Token ids of up to ``max_records`` records: those of ``first_row``, then the following examples."""
    order = list(first_row) + [i for i in range(len(examples)) if i not in set(first_row)]
    return [list(examples[i]["input_ids"][:max_tokens_per_record]) for i in order[:max_records]
            if len(examples[i]["input_ids"]) > 1]


def tolerance_for(dtype: torch.dtype) -> float:
    return TOLERANCE.get(dtype, LOW_PRECISION_TOLERANCE)


def check_packing(loss_model: nn.Module, inner: nn.Module, examples: Sequence[dict[str, Any]],
                  first_row: Sequence[int], device: torch.device, max_records: int = 3,
                  max_tokens_per_record: int = 48) -> str:
    """Compare packed vs per-record logits; raise PackingMaskError if they differ, else return a one-line report.

    ``loss_model`` is the prepared training module (what accelerate returned), ``inner`` the bare
    SupervisedLoss under it (``accelerator.unwrap_model(loss_model)``).
    """
    records = pick_records(examples, first_row, max_records, max_tokens_per_record)
    if len(records) < 2:
        return "skipped (fewer than two records to pack)"
    dtype = next(p.dtype for p in inner.parameters() if p.is_floating_point())
    was_training = loss_model.training
    inner.forward = types.MethodType(_probe_forward, inner)  # the prepared wrapper calls inner.forward
    loss_model.eval()
    try:
        with torch.no_grad():
            packed_ids = torch.tensor([[t for r in records for t in r]], device=device)
            packed_pos = torch.tensor([[p for r in records for p in range(len(r))]], device=device)
            keep = torch.ones_like(packed_ids, dtype=torch.bool)
            packed = loss_model(input_ids=packed_ids, position_ids=packed_pos, keep=keep)
            alone = torch.cat([loss_model(input_ids=torch.tensor([r], device=device),
                                          position_ids=torch.arange(len(r), device=device)[None],
                                          keep=torch.ones(1, len(r), dtype=torch.bool, device=device))
                               for r in records])
    finally:
        del inner.forward
        loss_model.train(was_training)
    diff = float((packed - alone).abs().max())
    scale = float(alone.abs().max()) or 1.0
    tol = tolerance_for(dtype)
    summary = (f"{len(records)} records ({packed_ids.shape[1]} tokens) packed vs alone: max |logit diff| "
               f"{diff:.2e}, {diff / scale:.2e} of max |logit| (tolerance {tol:.0e}, {dtype})")
    if not diff <= tol * scale:
        import transformers

        config = getattr(getattr(inner, "model", inner), "config", None)
        attn = getattr(config, "_attn_implementation", "?")
        raise PackingMaskError(
            f"packed rows are not isolated: {summary}. Records in one packed row attend to each other, so "
            f"training on packed rows would be wrong. transformers {transformers.__version__} with "
            f"attn_implementation={attn!r} does not build a block-diagonal mask from position_ids for this model. "
            "Install the transformers range in pyproject.toml (packed masks arrived in 4.54), use an attention "
            "implementation that honours packed position_ids (sdpa, eager, flex_attention, flash_attention_2), "
            "or set packing: false (padded batches)")
    return summary
