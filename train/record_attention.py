"""Attention in proportion to each record of a packed row, not to the row.

A packed row (train/batching.py) holds several records back to back with ``position_ids`` restarting
at 0 for each. transformers keeps them apart by turning the restarts into a block-diagonal causal
mask over the *whole row*; SDPA then scores every (query, key) pair of the row and throws most of
them away, and on CPU a masked SDPA cannot take the fused causal kernel. A row of R tokens costs
O(R^2) in attention whatever its records' lengths: 4096-token rows of 260-token records spent ~16x
the attention the records need, which is why conversation-level training lost to a plain per-turn
loop on short chats (BENCHMARKS.md section 1).

Here attention runs **once per record**: the row's query/key/value are sliced at record boundaries
and each slice goes through SDPA with ``is_causal=True`` and no mask (the fused kernel on CPU and
GPU), so the cost is the sum of the records' squared lengths. Everything else of the layer (the
projections, MLP, norms) still runs on the whole row at once, so the matmuls keep their size.

How it is wired:

* :func:`use_record_attention` switches a transformers model to the attention function registered
  here under :data:`RECORD_ATTENTION`. Its mask function is transformers' own SDPA mask, and the
  attention function hands every call that is not a packed row (padded batches, generation with a
  KV cache, a single record) to transformers' SDPA unchanged: the model behaves exactly as with
  ``sdpa`` except on packed rows.
* A packed row tells the attention where its records start through the standard variable-length
  keywords (:func:`packed_row_kwargs`: ``cu_seq_lens_q/k``, ``max_length_q/k``), which the model
  forwards to its attention function; :func:`packed_forward` wraps such a forward so that no
  row-wide mask is built for it. The same keywords make ``flash_attention_2`` run its
  variable-length kernel, so a GPU user who picks that implementation gets the same behaviour.
* Sliding-window layers (Gemma-3's local layers) keep their window inside each record: a record
  longer than the window gets the sliding causal mask of its own length.

``tests/test_train_record_attention.py`` checks logits and gradients against transformers' own
block-diagonal path on Llama- and Gemma-3-shaped models, sliding window included.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator

import torch

RECORD_ATTENTION = "usersim_record_sdpa"
_registered = False
# Set while a packed row goes through the model (packed_forward): the row's mask is not needed, so
# the mask function skips building it (an (n, n) block-diagonal mask: 41 ms of a 180 ms tiny-model
# step at n=4096).
_in_packed_row: contextvars.ContextVar[bool] = contextvars.ContextVar("usersim_in_packed_row", default=False)


def record_starts(position_ids: torch.Tensor) -> torch.Tensor:
    """Cumulative record boundaries ``[0, s1, ..., n]`` (int32) of one packed row's ``position_ids`` (1, n)."""
    if position_ids.dim() != 2 or position_ids.shape[0] != 1:
        raise ValueError(f"record boundaries need one packed row of shape (1, n), got {tuple(position_ids.shape)}")
    pos = position_ids[0]
    starts = torch.nonzero(pos == 0).flatten()
    if starts.numel() == 0 or int(starts[0]) != 0:
        raise ValueError("a packed row must start a record at position 0 (position_ids restart at 0 per record)")
    end = torch.tensor([pos.numel()], device=pos.device)
    return torch.cat([starts, end]).to(torch.int32)


def packed_row_kwargs(position_ids: torch.Tensor | None,
                      attention_mask: torch.Tensor | None) -> dict[str, Any]:
    """The variable-length keywords of a packed row (empty for anything else: padded batches, no positions,
    a row that does not start at position 0, which the model's own masks handle)."""
    if position_ids is None or attention_mask is not None or position_ids.shape[0] != 1:
        return {}
    if position_ids.numel() == 0 or int(position_ids[0, 0]) != 0:
        return {}
    cu = record_starts(position_ids)
    longest = int((cu[1:] - cu[:-1]).max())
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}


@contextlib.contextmanager
def packed_forward(position_ids: torch.Tensor | None, attention_mask: torch.Tensor | None) -> Iterator[dict[str, Any]]:
    """Run one forward of a packed row: yields the keywords to pass to the model (empty if it is not a packed row).

    Inside, a model on :data:`RECORD_ATTENTION` builds no row-wide mask (its attention never reads it).
    """
    kwargs = packed_row_kwargs(position_ids, attention_mask)
    token = _in_packed_row.set(bool(kwargs))
    try:
        yield kwargs
    finally:
        _in_packed_row.reset(token)


def record_mask(*args: Any, **kwargs: Any) -> torch.Tensor | None:
    """Mask function of :data:`RECORD_ATTENTION`: none inside :func:`packed_forward`, else transformers' SDPA mask."""
    from transformers.masking_utils import sdpa_mask

    return None if _in_packed_row.get() else sdpa_mask(*args, **kwargs)


def sliding_causal_mask(n: int, window: int, device: torch.device) -> torch.Tensor:
    """(1, 1, n, n) bool: key j visible to query i iff j <= i and i - j < window (transformers' convention)."""
    i = torch.arange(n, device=device)[:, None]
    j = torch.arange(n, device=device)[None, :]
    return ((j <= i) & (i - j < window))[None, None]


def record_sdpa_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                        sliding_window: int | None = None, cu_seq_lens_q: torch.Tensor | None = None,
                        cu_seq_lens_k: torch.Tensor | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers attention-interface function: per-record SDPA on packed rows, plain SDPA otherwise.

    ``query`` is (1, heads, n, d) and ``key``/``value`` (1, kv_heads, n, d) for a packed row; the
    result is (1, n, heads, d) like every transformers attention function.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    packed = (cu_seq_lens_q is not None and query.shape[0] == 1 and query.shape[2] == key.shape[2]
              and (cu_seq_lens_k is None or torch.equal(cu_seq_lens_k, cu_seq_lens_q)))
    if not packed:
        if attention_mask is None and _in_packed_row.get():
            raise RuntimeError("a packed row reached attention without its record boundaries (cu_seq_lens_q)")
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      sliding_window=sliding_window, **kwargs)
    kwargs.pop("is_causal", None)
    bounds = cu_seq_lens_q.tolist()
    if bounds[-1] != query.shape[2]:
        raise ValueError(f"cu_seq_lens end at {bounds[-1]} but the row has {query.shape[2]} tokens")
    outs = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        n = end - start
        mask = sliding_causal_mask(n, sliding_window, query.device) if sliding_window and n > sliding_window else None
        out, _ = sdpa_attention_forward(module, query[:, :, start:end], key[:, :, start:end], value[:, :, start:end],
                                        mask, dropout=dropout, scaling=scaling, is_causal=mask is None, **kwargs)
        outs.append(out)
    return torch.cat(outs, dim=1), None


def register() -> None:
    """Make :data:`RECORD_ATTENTION` a valid ``attn_implementation`` (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(RECORD_ATTENTION, record_sdpa_forward)
    AttentionMaskInterface.register(RECORD_ATTENTION, record_mask)
    _registered = True


def use_record_attention(model: torch.nn.Module) -> bool:
    """Switch ``model`` (a transformers model, possibly under peft) to per-record attention.

    Only models whose attention is SDPA are switched (eager, flash or flex implementations chosen on
    purpose are left alone; flash_attention_2 already runs packed rows per record from the same
    keywords). Returns whether the model now uses it.
    """
    base = model.get_base_model() if callable(getattr(model, "get_base_model", None)) else model
    config = getattr(base, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return getattr(config, "_attn_implementation", None) == RECORD_ATTENTION
    register()
    base.set_attn_implementation(RECORD_ATTENTION)
    return True
