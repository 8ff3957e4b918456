"""The lm judge (usersim.eval.lm_judge): the context is read once and shared, exactly; a planted difference
is found, two samples of the same humans are not told apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from usersim.eval.judges import Context, build_judges, item_context
from usersim.eval.lm_judge import LMFeaturiser, LMJudgeConfig, lm_judge, transcript
from usersim.eval.paired import paired_discrimination


class CharTokenizer:
    """Bytes as ids (+3), BOS 1, pad 0: enough for a random-initialised model."""

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2

    def encode(self, text, add_special_tokens=False):
        return [3 + (b % 250) for b in text.encode("utf-8")]


def tiny_model(arch: str):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                            num_attention_heads=4, num_key_value_heads=2)).eval()
    return Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=1, head_dim=8, sliding_window=16,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"])).eval()


@pytest.mark.parametrize("arch", ["llama", "gemma3-sliding"])
def test_shared_context_features_equal_one_full_forward(arch):
    """Each candidate's features from the repeated KV cache equal those of [context + candidate] run alone,
    also when a sliding window (16) is shorter than the context."""
    model, tok = tiny_model(arch), CharTokenizer()
    cfg = LMJudgeConfig(max_context_tokens=40, max_turn_tokens=20, batch_rows=2)
    feat = LMFeaturiser(model, tok, cfg)
    ctx = Context("do you like music?", "hi there",
                  (("user", "hi there"), ("assistant", "hello! do you like music?")))
    texts = ["yes a lot", "not really, I prefer silence and long walks by the sea", "ok"]
    cached = feat.raw(texts, [ctx] * 3)
    for text, row in zip(texts, cached):
        ids = feat._context_ids(ctx) + feat._turn_ids(text) + feat._newline
        n_turn = len(feat._turn_ids(text))
        with torch.no_grad():
            hs = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        start = len(feat._context_ids(ctx))
        ref = [hs[layer][0, start:start + n_turn].mean(0) for layer in feat.layers]
        ref.append(hs[feat.layers[1]][0, len(ids) - 1])
        expected = np.concatenate([*(r.numpy() for r in ref), [np.log1p(n_turn)]])
        np.testing.assert_allclose(row, expected, atol=2e-5, rtol=1e-4)
    assert len(feat._context_ids(ctx)) == 41  # BOS + the last 40 transcript tokens


def test_transcript_names_the_sides_and_keeps_the_last_turns():
    ctx = item_context([{"role": "assistant", "text": "hi"}, {"role": "user", "text": "hey  you"},
                        {"role": "assistant", "text": "how are\nyou?"}])
    assert transcript(ctx, 6, 600) == "Other: hi\nUser: hey you\nOther: how are you?\n"
    assert transcript(ctx, 1, 600) == "Other: how are you?\n"
    assert transcript(Context("prev", "own"), 6, 600) == "User: own\nOther: prev\n"  # no history: the two turns
    assert transcript(Context(), 6, 600) == ""


def test_context_changes_a_turns_features_and_features_are_cached_per_context_and_text():
    model, tok = tiny_model("llama"), CharTokenizer()
    judge = lm_judge(model, tok)
    ctx_a, ctx_b = Context("a?", ""), Context("b?", "")
    x = judge.features(["same text", "same text"], [ctx_a, ctx_b])
    assert x.shape[0] == 2 and not np.allclose(x[0], x[1])  # the context changes the features of one text
    judge.warm(["other"], [ctx_a])
    assert len(judge.features._cache) == 3
    assert "lm" in build_judges(neural=False, lm=judge)


def _real_pairs(n_users: int, per_user: int, seed: int):
    from real_turns import chitchat_user_turns, disjoint_user_samples  # noqa: F401

    import random

    by_user = chitchat_user_turns()
    rng = random.Random(seed)
    users = rng.sample(sorted(u for u, ts in by_user.items() if len(ts) >= 2 * per_user), 2 * n_users)
    a, b = users[:n_users], users[n_users:]
    rows_a = [x for u in a for x in rng.sample(by_user[u], per_user)]
    rows_b = [x for u in b for x in rng.sample(by_user[u], per_user)]
    owners = [u for u in a for _ in range(per_user)]
    return rows_a, rows_b, owners


def test_planted_difference_is_found_and_same_humans_are_not_told_apart():
    """Real chitchat turns in their real contexts. Planted: the candidate is the same turn with a stock tail
    a simulator might append; caught. Null: a turn of another group of the same humans, each read in its
    own context (exchangeable under the null); not rejected."""
    model, tok = tiny_model("llama"), CharTokenizer()
    judge = lm_judge(model, tok, LMJudgeConfig(max_context_tokens=64, max_turn_tokens=32))
    rows_a, rows_b, owners = _real_pairs(24, 2, seed=1)
    real = [t for t, _ in rows_a]
    ctx = [c for _, c in rows_a]
    planted = [t + " haha what about you?" for t in real]
    caught = paired_discrimination(judge, real, planted, ctx, owners, n_permutations=300, seed=0)
    # a random 3-layer model reading bytes: the tell is found (p < 0.01), not by a wide margin
    assert caught.inference.accuracy > 0.55 and caught.inference.p_value < 0.01
    null = paired_discrimination(judge, real, [t for t, _ in rows_b], ctx, owners, n_permutations=300, seed=0,
                                 candidate_contexts=[c for _, c in rows_b])
    assert null.inference.p_value > 0.05
    assert null.inference.ci_low <= 0.5 <= null.inference.ci_high
