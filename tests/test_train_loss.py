"""Supervised-only logits == the model's own full-logits loss; packed rows never attend across records."""

import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from usersim.train.batching import collate_packed, collate_padded
from usersim.train.loss import SupervisedLoss, supervised_only_loss
from usersim.train.tiny_model import build_tiny_model, train_tiny_tokenizer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tiny_tokenizer(["hello there how are you", "fine thanks and you", "lol ok"] * 5, vocab_size=300)


def tiny_llama(tokenizer):
    return build_tiny_model(tokenizer, hidden_size=32, num_layers=2, num_heads=4, seed=1).eval()


def tiny_gemma3(vocab_size: int, softcap: float | None):
    config = Gemma3TextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=4,
                              layer_types=["sliding_attention", "full_attention"], final_logit_softcapping=softcap,
                              max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(2)
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():  # make the head large enough that softcapping changes the logits
        model.lm_head.weight.mul_(50)
    return model


def examples(vocab_size: int, lengths=(7, 12, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(3, vocab_size, (n,), generator=g).tolist()
        labels = [-100] * n
        for i in range(2, n, 2):  # supervise every other token, never the first
            labels[i] = ids[i]
        out.append({"input_ids": ids, "labels": labels})
    return out


def full_loss(model, batch):
    # use_cache=False: with a KV cache transformers skips packed-sequence detection (masking_utils).
    out = model(**batch, use_cache=False)
    n = (batch["labels"][:, 1:] != -100).sum()
    return out.loss * n, n


MODELS = {
    "llama": lambda tok: tiny_llama(tok),
    "gemma3": lambda tok: tiny_gemma3(len(tok), softcap=None),
    "gemma3-softcap": lambda tok: tiny_gemma3(len(tok), softcap=3.0),
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("packed", [True, False])
def test_supervised_only_loss_equals_full_loss(tokenizer, name, packed):
    model = MODELS[name](tokenizer)
    exs = examples(len(tokenizer))
    batch = collate_packed(exs) if packed else collate_padded(exs, pad_id=0)
    with torch.no_grad():
        loss_sum, n = supervised_only_loss(model, **batch)
        ref_sum, ref_n = full_loss(model, batch)
    assert int(n) == int(ref_n) == sum(sum(1 for x in e["labels"][1:] if x != -100) for e in exs)
    assert abs(float(loss_sum / n) - float(ref_sum / ref_n)) < 1e-5


def test_softcapping_is_applied(tokenizer):
    capped, plain = tiny_gemma3(len(tokenizer), 3.0), tiny_gemma3(len(tokenizer), None)
    batch = collate_packed(examples(len(tokenizer)))
    with torch.no_grad():
        a = supervised_only_loss(capped, **batch)[0]
        b = supervised_only_loss(plain, **batch)[0]
    assert abs(float(a) - float(b)) > 1e-3  # same weights; only the final-logit transform differs


@pytest.mark.parametrize("name", ["llama", "gemma3"])
def test_packed_rows_do_not_attend_across_records(tokenizer, name):
    model = MODELS[name](tokenizer)
    exs = examples(len(tokenizer), lengths=(9, 6, 11), seed=3)
    with torch.no_grad():
        row = {k: v for k, v in collate_packed(exs).items() if k != "labels"}
        packed = model(**row, use_cache=False).logits[0]
        start = 0
        for ex in exs:
            alone = model(input_ids=torch.tensor([ex["input_ids"]]), use_cache=False).logits[0]
            n = len(ex["input_ids"])
            torch.testing.assert_close(packed[start:start + n], alone, atol=1e-5, rtol=1e-4)
            start += n
        # Control: with a KV cache the packed row is one long sequence, so later records differ.
        leaky = model(**row).logits[0]
        assert (leaky[len(exs[0]["input_ids"]):] - packed[len(exs[0]["input_ids"]):]).abs().max() > 1e-4


def test_unsupported_architecture_falls_back_to_model_loss(tokenizer, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2)).eval()
    exs = examples(len(tokenizer))
    batch = collate_padded(exs, pad_id=0)
    batch.pop("position_ids")
    with torch.no_grad():
        loss_sum, n = SupervisedLoss(model)(**batch)
        ref_sum, ref_n = full_loss(model, batch)
    assert abs(float(loss_sum) - float(ref_sum)) < 1e-4 and int(n) == int(ref_n)
    assert "full-logits loss" in capsys.readouterr().out
