"""The engine's explicit end decision and banned tokens (usersim.engine.EndControl, control_token_ids)."""

from __future__ import annotations

import math

import torch

from usersim.data_prep.prompt_format import END_OF_CONVERSATION, end_of_conversation_ids
from usersim.engine import EndControl, RowwiseSampler, control_token_ids, decode_rows
from usersim.eval.decoding_choice import calibrate_end_bias

torch.set_num_threads(1)


def _prompts(sim):
    from tiny_run import tiny_records

    recs = tiny_records()
    return [sim.prompt_ids(recs[0]["turns"][:2]), sim.prompt_ids([]), sim.prompt_ids(recs[2]["turns"]),
            sim.prompt_ids(recs[0]["turns"][:2])]


def _teacher_forced_logprob(model, prompt, continuation):
    ids = torch.tensor([prompt + continuation])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    return sum(float(logp[len(prompt) - 1 + k, t]) for k, t in enumerate(continuation))


def test_end_ids_are_the_trained_target(tiny_sim):
    tok = tiny_sim.tokenizer
    ids = end_of_conversation_ids(tok)
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids[:-1]).strip() == END_OF_CONVERSATION


def test_end_logprob_is_the_models_probability_of_the_whole_marker(tiny_sim):
    tok, model = tiny_sim.tokenizer, tiny_sim.model
    prompts = _prompts(tiny_sim)
    end = EndControl(end_of_conversation_ids(tok), bias=0.0)
    decode_rows(model, prompts, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, max_new_tokens=4, end=end)
    assert len(end.logprobs) == len(prompts)
    for prompt, got in zip(prompts, end.logprobs):
        want = _teacher_forced_logprob(model, prompt, list(end.ids))
        assert math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-4), (got, want)
    assert end.logprobs[0] == end.logprobs[3]  # the same prompt, prefilled once


def test_bias_extremes_end_every_row_or_none_and_a_row_that_goes_on_never_opens_the_marker(tiny_sim):
    tok, model = tiny_sim.tokenizer, tiny_sim.model
    prompts = _prompts(tiny_sim) * 4
    kw = dict(pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, max_new_tokens=6)
    ids = end_of_conversation_ids(tok)
    rows = decode_rows(model, prompts, sampler=RowwiseSampler(range(len(prompts))), end=EndControl(ids, 60.0), **kw)
    assert all(r == ids for r in rows)
    # bias -60 and a model pushed to open the marker: no row ends, none starts with the marker's first token
    pushed = _Pushed(model, ids[0])
    rows = decode_rows(pushed, prompts, sampler=RowwiseSampler(range(len(prompts))), end=EndControl(ids, -60.0), **kw)
    assert all(r and r[0] != ids[0] for r in rows)
    # without the end control the pushed model opens the marker on every row: the ban is what stopped it
    rows = decode_rows(pushed, prompts, sampler=RowwiseSampler(range(len(prompts))), **kw)
    assert all(r[0] == ids[0] for r in rows)


def test_end_rate_follows_the_calibrated_bias(tiny_sim):
    """Over many sampled rows the share that ends is mean sigmoid(logit p + b), and calibrate_end_bias
    finds the b for a wanted rate."""
    tok, model = tiny_sim.tokenizer, tiny_sim.model
    prompts = _prompts(tiny_sim)
    probe = EndControl(end_of_conversation_ids(tok), bias=0.0)
    decode_rows(model, prompts, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, max_new_tokens=1, end=probe)
    bias = calibrate_end_bias(probe.logprobs, 0.3)
    odds = [lp - math.log(-math.expm1(lp)) for lp in probe.logprobs]
    assert math.isclose(sum(1 / (1 + math.exp(-(o + bias))) for o in odds) / len(odds), 0.3, abs_tol=1e-3)
    many = prompts * 100
    end = EndControl(probe.ids, bias)
    rows = decode_rows(model, many, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, max_new_tokens=1,
                       sampler=RowwiseSampler(range(len(many))), end=end)
    rate = sum(r == list(end.ids) for r in rows) / len(rows)
    assert abs(rate - 0.3) < 4 * math.sqrt(0.3 * 0.7 / len(rows)), rate  # 4 standard errors


def test_banned_tokens_are_never_generated(tiny_sim):
    tok, model = tiny_sim.tokenizer, tiny_sim.model
    prompts = _prompts(tiny_sim)
    kw = dict(pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, max_new_tokens=8)
    free = decode_rows(model, prompts, sampler=RowwiseSampler(range(4), temperature=2.0), **kw)
    banned = sorted({t for r in free for t in r if t != tok.eos_token_id})
    assert banned
    rows = decode_rows(model, prompts, sampler=RowwiseSampler(range(4), temperature=2.0), banned_ids=banned, **kw)
    assert any(rows) and not {t for r in rows for t in r} & set(banned)


def test_control_token_ids_cover_unused_and_special_tokens_but_not_text_or_eos():
    class Tok:
        eos_token_id = 1
        all_special_ids = [0, 1, 2]

        def get_vocab(self):
            return {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unused0>": 3, "<unused17>": 4, "<start_of_image>": 5,
                    "<|im_start|>": 6, "<em>": 7, "<a>": 8, "hello": 9, "[": 10, "<end_of_turn>": 11}

    assert control_token_ids(Tok()) == [0, 2, 3, 4, 5, 6, 11]


class _Pushed(torch.nn.Module):
    """A model whose next-token logits put +50 on one token (to test the ban), otherwise the wrapped model."""

    def __init__(self, model, token):
        super().__init__()
        self.model, self.token = model, token

    def get_base_model(self):  # usersim.engine.cache_kwarg reads the wrapped model's forward signature
        inner = self.model
        return inner.get_base_model() if hasattr(inner, "get_base_model") else inner

    def forward(self, *args, **kwargs):
        out = self.model(*args, **kwargs)
        out.logits[..., self.token] += 50.0
        return out


def test_counter_uniforms_are_splitmix64_and_uniform():
    """The sampler's counter-based stream: int64 arithmetic wraps like the unsigned reference, and the numbers
    are uniform and independent of which other ids are drawn with them."""
    from usersim.engine import _int64, counter_uniforms, mix64

    mask = (1 << 64) - 1

    def reference(x):
        x &= mask
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
        return x ^ (x >> 31)

    for v in (0, 1, 12345, 2 ** 62 + 7, -5, 2 ** 63 - 1, 2 ** 64 - 3):
        assert int(mix64(torch.tensor([_int64(v)]))[0]) & mask == reference(v)
    keys, steps = mix64(torch.arange(4)), torch.zeros(4, dtype=torch.long)
    ids = torch.arange(50_000).expand(4, -1)
    u = counter_uniforms(keys, steps, ids)
    assert 0 < float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    hist = torch.histc(u, bins=10, min=0, max=1) / u.numel()
    assert float((hist - 0.1).abs().max()) < 0.005
    # a subset of ids draws exactly the numbers the full draw gave those ids
    some = torch.tensor([[7, 49_999, 3]] * 4)
    assert torch.equal(counter_uniforms(keys, steps, some), u.gather(-1, some))
    assert not torch.equal(counter_uniforms(keys, steps + 1, some), u.gather(-1, some))
