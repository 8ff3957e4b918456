"""Per-record attention on packed rows equals transformers' block-diagonal path, and changes nothing else."""

import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

from usersim.train.loss import supervised_only_loss
from usersim.train.record_attention import (RECORD_ATTENTION, packed_forward, packed_row_kwargs, record_starts,
                                            sliding_causal_mask, use_record_attention)

torch.set_num_threads(1)
LENGTHS = [5, 20, 9, 31, 3]  # the 20- and 31-token records are longer than Gemma's window of 8 below


def llama():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2,
                                        attn_implementation="sdpa")).eval()


def gemma():
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                           num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=8,
                           layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                           attn_implementation="sdpa")
    return Gemma3ForCausalLM(cfg).eval()


def packed_row(lengths=LENGTHS, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (1, sum(lengths)), generator=g)
    pos = torch.cat([torch.arange(n) for n in lengths])[None]
    return ids, pos


def per_record_logits(model, ids, lengths=LENGTHS):
    out, start = [], 0
    for n in lengths:
        out.append(model(input_ids=ids[:, start:start + n], use_cache=False).logits)
        start += n
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("make", [llama, gemma], ids=["llama", "gemma3-sliding"])
def test_packed_row_logits_equal_each_record_alone_and_the_row_mask_path(make):
    model = make()
    ids, pos = packed_row()
    alone = per_record_logits(model, ids)
    row_mask = model(input_ids=ids, position_ids=pos, use_cache=False).logits  # transformers' own path
    assert use_record_attention(model) and model.config._attn_implementation == RECORD_ATTENTION
    with packed_forward(pos, None) as kw:
        ours = model(input_ids=ids, position_ids=pos, use_cache=False, **kw).logits
    assert (ours - alone).abs().max() < 1e-5
    assert (ours - row_mask).abs().max() < 1e-5
    # Control: without the per-record split the records would see each other (the check can fail).
    leaked = model(input_ids=ids, use_cache=False).logits
    assert (leaked - alone).abs().max() > 1e-2


@pytest.mark.parametrize("make", [llama, gemma], ids=["llama", "gemma3-sliding"])
def test_gradients_equal_the_row_mask_path(make):
    ids, pos = packed_row()
    grads = {}
    for mode in ("row_mask", "per_record"):
        model = make().train()
        if mode == "per_record":
            use_record_attention(model)
        with packed_forward(pos, None) as kw:
            out = model(input_ids=ids, position_ids=pos, use_cache=False, **(kw if mode == "per_record" else {}))
        (out.logits.float() ** 2).mean().backward()
        grads[mode] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads["row_mask"].keys() == grads["per_record"].keys() and grads["row_mask"]
    for name, g in grads["row_mask"].items():
        assert torch.allclose(grads["per_record"][name], g, atol=1e-6, rtol=1e-4), name


def test_supervised_loss_is_the_same_with_either_attention():
    ids, pos = packed_row()
    labels = ids.clone()
    labels[:, ::3] = -100
    with torch.no_grad():
        ref = supervised_only_loss(llama(), ids, labels, position_ids=pos)
    model = llama()
    use_record_attention(model)
    with torch.no_grad():
        ours = supervised_only_loss(model, ids, labels, position_ids=pos)
    assert int(ours[1]) == int(ref[1]) > 0
    assert abs(float(ours[0]) - float(ref[0])) < 1e-4


@pytest.mark.parametrize("make", [llama, gemma], ids=["llama", "gemma3-sliding"])
def test_everything_but_packed_rows_is_plain_sdpa(make):
    """Padded batches and cached generation go through transformers' SDPA unchanged."""
    ref, model = make(), make()
    use_record_attention(model)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 256, (2, 14), generator=g)
    mask = torch.ones(2, 14, dtype=torch.long)
    mask[1, :5] = 0  # left padding
    assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, ref(input_ids=ids, attention_mask=mask).logits)
    kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(**kwargs), ref.generate(**kwargs))


def test_a_packed_row_that_loses_its_boundaries_is_an_error():
    model = llama()
    use_record_attention(model)
    ids, pos = packed_row()
    with packed_forward(pos, None):  # keywords not passed on: the records would attend to each other
        with pytest.raises(RuntimeError, match="without its record boundaries"):
            model(input_ids=ids, position_ids=pos, use_cache=False)


def test_record_boundaries_and_masks():
    _, pos = packed_row([3, 1, 4])
    assert record_starts(pos).tolist() == [0, 3, 4, 8]
    kw = packed_row_kwargs(pos, None)
    assert kw["max_length_q"] == 4 and kw["cu_seq_lens_k"].dtype == torch.int32
    assert packed_row_kwargs(pos, torch.ones_like(pos)) == {}  # a padded batch is not a packed row
    assert packed_row_kwargs(None, None) == {}
    assert packed_row_kwargs(torch.tensor([[7, 8, 9]]), None) == {}  # continues a sequence: not a packed row
    with pytest.raises(ValueError, match="start a record at position 0"):
        record_starts(torch.tensor([[1, 2, 0]]))
    m = sliding_causal_mask(5, 2, torch.device("cpu"))[0, 0].int().tolist()
    assert m == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 1]]


def test_models_on_other_attention_are_left_alone():
    model = llama()
    model.set_attn_implementation("eager")
    assert not use_record_attention(model)
    assert model.config._attn_implementation == "eager"
