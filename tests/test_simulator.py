"""UserSimulator: loading, prompts, batched generation, seeds and the adapter switch (tiny model)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM

from usersim.data_prep.prompt_format import (END_OF_CONVERSATION, HEADER, USER_MARKER, Condition, render_generation_prompt,
                                             tokenize_conversation, tokenize_segments)
from usersim.data_prep.schema import Turn
from tiny_run import TINY_CONDITION, tiny_records
from usersim.train.config import TrainConfig
from usersim.train.main import resolve_dtype
from usersim.engine import RowwiseSampler, left_pad
from usersim.simulator import SimulatorTurn, UserSimulator, clean_generated_text, derive_seed, make_condition

torch.set_num_threads(1)


def histories():
    recs = tiny_records()
    return [recs[0]["turns"][:2], [], recs[2]["turns"], recs[1]["turns"][:1]]


def test_respond_returns_text_or_explicit_end(tiny_sim):
    for seed in range(4):
        turn = tiny_sim.respond(histories()[0], persona="country: US", goal="walks", knowledge=["I have two dogs"],
                           style={"length": "short"}, seed=seed, max_new_tokens=12)
        assert isinstance(turn, SimulatorTurn)
        assert 1 <= turn.tokens <= 12
        assert isinstance(turn.text, str)
        if turn.ends_conversation:
            assert turn.text == ""


def test_end_marker_becomes_ends_conversation(tiny_sim):
    tok = tiny_sim.tokenizer
    end_ids = tok(END_OF_CONVERSATION, add_special_tokens=False)["input_ids"] + [tok.eos_token_id, tok.pad_token_id]
    assert tiny_sim._to_turn(end_ids) == SimulatorTurn("", True, len(end_ids) - 1)
    text_ids = tok("hi there", add_special_tokens=False)["input_ids"]
    # no EOS: all tokens count, and the turn is marked as cut by the cap
    assert tiny_sim._to_turn(text_ids) == SimulatorTurn("hi there", False, len(text_ids), hit_cap=True)
    closed = text_ids + [tok.eos_token_id]
    assert tiny_sim._to_turn(closed) == SimulatorTurn("hi there", False, len(closed), hit_cap=False)
    # text, then the end marker inside the turn: the text is the turn (closed), not an end
    run_on = text_ids + tok("\n" + END_OF_CONVERSATION, add_special_tokens=False)["input_ids"]
    assert tiny_sim._to_turn(run_on) == SimulatorTurn("hi there", False, len(run_on), hit_cap=False)


def test_clean_generated_text_cuts_run_on_turns():
    assert clean_generated_text(" sure thing\nAssistant: ok") == "sure thing"
    assert clean_generated_text("a\nUser: b") == "a"
    assert clean_generated_text("plain") == "plain"
    # the end marker written after some text is a run-on too (a default run's only artefact); alone it is an end
    assert clean_generated_text("Hey. How are you?\n[END OF CONVERSATION]") == "Hey. How are you?"
    assert clean_generated_text(" [END OF CONVERSATION]") == "[END OF CONVERSATION]"


def test_same_seed_same_output_different_seeds_differ(tiny_sim):
    h = histories()[0]
    first = [tiny_sim.respond(h, seed=s, max_new_tokens=16) for s in range(5)]
    again = [tiny_sim.respond(h, seed=s, max_new_tokens=16) for s in range(5)]
    assert first == again
    assert len({t.text for t in first}) > 1


def test_batched_greedy_equals_one_at_a_time(tiny_sim):
    hs = histories()
    lengths = {len(tiny_sim.prompt_ids(h)) for h in hs}
    assert len(lengths) == len(hs)  # every row is padded differently
    batched = tiny_sim.respond_batch(hs, do_sample=False, max_new_tokens=16)
    single = [tiny_sim.respond_batch([h], do_sample=False, max_new_tokens=16)[0] for h in hs]
    assert batched == single


def test_batched_sampling_does_not_depend_on_batch_composition(tiny_sim):
    hs = histories()
    batched = tiny_sim.respond_batch(hs, seed=7, max_new_tokens=16)
    single = [tiny_sim.respond_batch([h], seed=[derive_seed(7, i)], max_new_tokens=16)[0] for i, h in enumerate(hs)]
    assert batched == single
    reversed_rows = tiny_sim.respond_batch(hs[::-1], seed=[derive_seed(7, i) for i in range(len(hs))][::-1],
                                      max_new_tokens=16)
    assert reversed_rows[::-1] == batched


def test_adapter_disabled_gives_base_logits(tiny_sim, tiny_run_dir):
    base = AutoModelForCausalLM.from_pretrained(tiny_run_dir.parent / "base_model", use_safetensors=True).eval()
    ids = torch.tensor([tiny_sim.prompt_ids(histories()[0], Condition.from_row(TINY_CONDITION))])
    with torch.no_grad():
        expected = base(input_ids=ids).logits
        with tiny_sim.adapter_disabled():
            disabled = tiny_sim.model(input_ids=ids).logits
        enabled = tiny_sim.model(input_ids=ids).logits
    torch.testing.assert_close(disabled, expected)
    assert not torch.allclose(enabled, expected, atol=1e-4)  # the adapter was trained: it changes the model


def test_from_base_matches_adapter_disabled(tiny_sim, tiny_run_dir):
    base_sim = UserSimulator.from_base(tiny_run_dir.parent / "base_model", device="cpu")
    hs = histories()
    with tiny_sim.adapter_disabled():
        expected = tiny_sim.respond_batch(hs, seed=3, max_new_tokens=10)
    assert base_sim.respond_batch(hs, seed=3, max_new_tokens=10) == expected


def test_long_history_is_truncated_at_turn_boundaries_keeping_header(tiny_run_dir):
    tiny_sim = UserSimulator.from_pretrained(tiny_run_dir, device="cpu", max_prompt_tokens=10_000)
    cond = Condition.from_row(TINY_CONDITION)
    turns = [Turn(t["role"], t["text"]) for r in tiny_records() for t in r["turns"]]
    full = tiny_sim.prompt_ids(turns, cond)
    tiny_sim.max_prompt_tokens = len(full) - 1
    cut = tiny_sim.prompt_ids(turns, cond)
    assert len(cut) <= tiny_sim.max_prompt_tokens
    kept = [k for k in range(len(turns)) if tokenize_segments(render_generation_prompt(cond, turns[k:]),
                                                              tiny_sim.tokenizer)[0] == cut]
    assert kept == [1]  # exactly the oldest turn dropped
    assert tiny_sim.prompt(turns, cond).turns_dropped == 1 and tiny_sim.prompt(turns, cond).input_ids == cut
    text = tiny_sim.tokenizer.decode(cut, skip_special_tokens=True)
    assert text.startswith(HEADER) and "Goal: talk about weekend plans" in text
    assert text.endswith(USER_MARKER)


def test_prompt_cap_defaults_to_the_trained_length(tiny_run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run_dir, run)
    assert UserSimulator.from_pretrained(run, device="cpu").max_prompt_tokens == TrainConfig.max_seq_len  # not recorded
    (run / "config.yaml").write_text("seed: 0\nmax_seq_len: 160\n")
    sim = UserSimulator.from_pretrained(run, device="cpu")
    assert sim.max_prompt_tokens == 160
    assert UserSimulator.from_pretrained(run, device="cpu", max_prompt_tokens=99).max_prompt_tokens == 99
    turns = [Turn(t["role"], t["text"]) for r in tiny_records() for t in r["turns"]]
    cond = Condition.from_row(TINY_CONDITION)
    cut = sim.prompt_ids(turns, cond)
    assert len(cut) <= 160 < len(tokenize_segments(render_generation_prompt(cond, turns), sim.tokenizer)[0])
    assert cut == tokenize_conversation(cond, turns, sim.tokenizer, max_tokens=160, generation_prompt=True).input_ids


def test_header_longer_than_the_cap_warns_and_keeps_the_whole_prompt(tiny_sim):
    cond = Condition(goal="walks " * 40)
    full = tokenize_segments(render_generation_prompt(cond, []), tiny_sim.tokenizer)[0]
    sim = UserSimulator(tiny_sim.model, tiny_sim.tokenizer, max_prompt_tokens=len(full) - 1)
    with pytest.warns(UserWarning, match="condition header alone"):
        assert sim.prompt_ids([{"role": "assistant", "text": "Hi!"}], cond) == full


def test_dtype_resolution_is_shared_by_train_and_runtime(tiny_run_dir):
    assert resolve_dtype("bf16") == resolve_dtype("bfloat16") == torch.bfloat16
    assert resolve_dtype("fp16") == torch.float16 and resolve_dtype(torch.float64) == torch.float64
    assert resolve_dtype("auto", "cpu") == resolve_dtype(None, "cpu") == resolve_dtype("", "cpu") == torch.float32
    with pytest.raises(ValueError, match="not understood"):
        resolve_dtype("float8")
    sim = UserSimulator.from_base(tiny_run_dir.parent / "base_model", device="cpu", dtype="bf16")
    assert next(sim.model.parameters()).dtype == torch.bfloat16


def test_make_condition_forms():
    assert make_condition(knowledge=["a", "b"]).knowledge_discloses == ["a", "b"]
    c = make_condition("p", "g", {"discloses": ["x"], "asks": ["y"]}, {"length": "short", "emoji": ""})
    assert (c.persona, c.goal, c.knowledge_discloses, c.knowledge_asks, c.style) == ("p", "g", ["x"], ["y"],
                                                                                    {"length": "short"})
    with pytest.raises(ValueError, match="colour"):
        make_condition(style={"colour": "red"})
    with pytest.raises(ValueError, match="knows"):
        make_condition(knowledge={"knows": ["x"]})


def test_history_roles_are_checked(tiny_sim):
    with pytest.raises(ValueError, match="system"):
        tiny_sim.respond([{"role": "system", "text": "x"}])


def test_left_pad():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_rowwise_sampler_respects_top_k_and_top_p():
    scores = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 0.0, 0.0]])
    for seed in range(20):
        out = RowwiseSampler([seed, seed + 1], top_k=1)(None, scores)
        assert out.argmax(-1).tolist() == [1, 0]
        out = RowwiseSampler([seed, seed + 1], top_p=1e-6)(None, scores)
        assert out.argmax(-1).tolist() == [1, 0]
        out = RowwiseSampler([seed, seed + 1], top_k=2)(None, scores)
        assert out.argmax(-1)[0].item() in (1, 3)
        assert torch.isinf(out).sum(-1).tolist() == [3, 3]  # exactly one surviving token per row
    picks = {RowwiseSampler([s, s], temperature=5.0)(None, scores).argmax(-1)[0].item() for s in range(50)}
    assert len(picks) > 1  # it really samples


def test_base_model_json_relative_path_and_override(tiny_run_dir, tmp_path):
    moved = tmp_path / "run"
    shutil.copytree(tiny_run_dir, moved)
    shutil.copytree(tiny_run_dir.parent / "base_model", moved / "base_model")
    (moved / "base_model.json").write_text(json.dumps({"path": "base_model", "source": "tiny"}))
    assert isinstance(UserSimulator.from_pretrained(moved, device="cpu"), UserSimulator)
    (moved / "base_model.json").write_text(json.dumps({"path": str(tmp_path / "nowhere")}))
    with pytest.raises(FileNotFoundError, match="base_model="):
        UserSimulator.from_pretrained(moved, device="cpu")
    assert UserSimulator.from_pretrained(moved, base_model=str(moved / "base_model"), device="cpu").has_adapter
    # adapter_config.json's base_model_name_or_path is the fallback (e.g. a published repo without the base)
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(moved / "base_model")
    (moved / "adapter_config.json").write_text(json.dumps(config))
    assert UserSimulator.from_pretrained(moved, device="cpu").has_adapter
    (moved / "base_model.json").unlink()
    assert UserSimulator.from_pretrained(moved, device="cpu").has_adapter


def test_missing_run_dir_and_offline_repo_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors"):
        UserSimulator.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="neither"):
        UserSimulator.from_pretrained(str(tmp_path / "no" / "such" / "dir"))
    with pytest.raises(OSError, match="HF_HUB_OFFLINE"):
        UserSimulator.from_pretrained("someone/no-such-usersim-adapter")


def test_checkpoint_generation_config_does_not_leak(tiny_run_dir):
    from transformers import GenerationConfig

    tiny_sim = UserSimulator.from_pretrained(tiny_run_dir, device="cpu")
    hs = histories()
    greedy = tiny_sim.respond_batch(hs, do_sample=False, max_new_tokens=12)
    sampled = tiny_sim.respond_batch(hs, seed=2, max_new_tokens=12)
    tok = tiny_sim.tokenizer
    tiny_sim.model.generation_config = GenerationConfig(do_sample=True, top_k=3, temperature=0.3, max_new_tokens=2,
                                                   eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    assert tiny_sim.respond_batch(hs, do_sample=False, max_new_tokens=12) == greedy
    assert tiny_sim.respond_batch(hs, seed=2, max_new_tokens=12) == sampled


def test_extra_generation_options_reach_generate(tiny_sim):
    turn = tiny_sim.respond(histories()[0], seed=0, max_new_tokens=9, min_new_tokens=9)
    assert turn.tokens == 9


def test_rowwise_sampler_nucleus_and_candidate_fallback_agree():
    probs = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    picks = [RowwiseSampler([s], top_p=0.5)(None, probs.log()).argmax(-1).item() for s in range(300)]
    assert set(picks) == {0, 1}  # the nucleus of mass 0.5 is the two top tokens
    assert 0.45 < picks.count(0) / len(picks) < 0.70  # renormalised: 0.4 / 0.7 = 0.57
    torch.manual_seed(0)
    peaked, flat = torch.randn(3, 64) * 8, torch.randn(3, 64) * 0.1
    assert bool((torch.topk(torch.softmax(peaked, -1), 16).values.sum(-1) >= 0.9).all())  # nucleus within 16
    for scores in (peaked, flat):  # peaked: the 16-candidate path; flat: its full-sort fallback
        full, partial = RowwiseSampler(range(3), top_p=0.9), RowwiseSampler(range(3), top_p=0.9)
        partial.candidates = 16
        for _ in range(20):
            assert torch.equal(full(None, scores), partial(None, scores))


def test_decode_rows_matches_generate_and_shares_identical_prompts(tiny_sim):
    """Greedy rows of the eval's decode loop equal model.generate one prompt at a time, also when a
    prompt appears twice in the batch (prefilled once) and when rows finish at different steps."""
    from usersim.engine import decode_rows

    hs = histories()
    prompts = [tiny_sim.prompt_ids(hs[0]), tiny_sim.prompt_ids(hs[1]), tiny_sim.prompt_ids(hs[0])]
    tok = tiny_sim.tokenizer
    rows = decode_rows(tiny_sim.model, prompts, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, max_new_tokens=10)
    for prompt, row in zip(prompts, rows):
        ref = tiny_sim.model.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt),
                                      dtype=torch.long), max_new_tokens=10, do_sample=False,
                                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)[0, len(prompt):]
        ref = ref.tolist()
        if tok.eos_token_id in ref:
            ref = ref[:ref.index(tok.eos_token_id) + 1]
        assert row == ref
    assert rows[0] == rows[2]


def test_sampled_rows_do_not_depend_on_batch_mates_in_decode_rows(tiny_sim):
    from usersim.engine import decode_rows

    hs = histories()
    tok = tiny_sim.tokenizer
    p0, p1 = tiny_sim.prompt_ids(hs[0]), tiny_sim.prompt_ids(hs[1])
    kw = dict(pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, max_new_tokens=12)
    alone = decode_rows(tiny_sim.model, [p0], sampler=RowwiseSampler([7], temperature=1.3), **kw)
    mixed = decode_rows(tiny_sim.model, [p1, p0, p0], sampler=RowwiseSampler([3, 7, 9], temperature=[1.0, 1.3, 1.3]),
                        **kw)
    assert mixed[1] == alone[0]


def test_wide_nucleus_sorts_only_its_candidates_and_draws_what_a_full_sort_draws():
    """Rows whose nucleus is wider than the top-k probe: the candidates sorted are a small superset of
    the nucleus, and every draw equals the draw from a full sort of the vocabulary."""
    torch.manual_seed(1)
    vocab = 20000
    # A long-tailed distribution like a base LM's: a few hundred plausible tokens, a flat tail.
    scores = torch.cat([torch.randn(2, 300) * 2 + 6, torch.randn(2, vocab - 300)], dim=-1)
    probs = torch.softmax(scores, -1)
    probe, full = RowwiseSampler(range(2), top_p=0.95), RowwiseSampler(range(2), top_p=0.95)
    probe.candidates, full.candidates = 64, vocab  # full: one topk over the whole vocabulary (a full sort)
    assert bool((torch.topk(probs, 64).values.sum(-1) < 0.95).all())  # both rows take the wide path
    top, order = probe._wide_nucleus_candidates(probs[0])
    nucleus = int((torch.sort(probs[0], descending=True).values.cumsum(0) < 0.95).sum()) + 1
    assert nucleus <= top.numel() < vocab // 2
    assert torch.equal(order[:nucleus], torch.sort(probs[0], descending=True).indices[:nucleus])
    for _ in range(50):
        assert torch.equal(probe.sample(scores), full.sample(scores))


def test_prefill_buckets_group_similar_lengths():
    from usersim.engine import prefill_buckets

    assert prefill_buckets([100, 10, 12, 11, 95, 300]) == [[1, 3, 2], [4, 0], [5]]
    assert prefill_buckets([50] * 5, max_tokens=120) == [[0, 1], [2, 3], [4]]
    assert prefill_buckets([]) == []


@pytest.mark.parametrize("arch", ["llama", "gemma3-sliding"])
def test_bucketed_prefill_equals_one_padded_batch(arch):
    """Prefilling in length groups and merging the caches gives the logits and greedy continuations of
    one left-padded batch, including sliding-window layers whose window is shorter than the prompts."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    from usersim.engine import decode_rows, prefill, prefill_buckets, prefill_padded

    torch.manual_seed(0)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2)).eval()
    else:
        model = Gemma3ForCausalLM(Gemma3TextConfig(
            vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=1, head_dim=8, sliding_window=8,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"])).eval()
    g = torch.Generator().manual_seed(3)
    lengths = [30, 5, 6, 21, 5, 12, 29]
    prompts = [torch.randint(1, 128, (n,), generator=g).tolist() for n in lengths]
    assert len(prefill_buckets(lengths)) > 2  # several groups: the merge is exercised
    with torch.inference_mode():
        _, merged_logits, merged_mask = prefill(model, prompts, 0, torch.device("cpu"))
        _, padded_logits, padded_mask = prefill_padded(model, prompts, 0, torch.device("cpu"))
    assert torch.equal(merged_mask, padded_mask)
    assert (merged_logits - padded_logits).abs().max() < 1e-4
    # One group whose length order is not the prompts' order: rows still come back in prompt order.
    few = [prompts[0][:12], prompts[0][:11], prompts[3][:10]]
    assert prefill_buckets([len(p) for p in few]) == [[2, 1, 0]]
    with torch.inference_mode():
        _, one_group, _ = prefill(model, few, 0, torch.device("cpu"))
        _, one_batch, _ = prefill_padded(model, few, 0, torch.device("cpu"))
    assert (one_group - one_batch).abs().max() < 1e-4
    rows = decode_rows(model, prompts, pad_id=0, eos_id=127, max_new_tokens=12)
    for prompt, row in zip(prompts, rows):
        ref = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=127,
                             pad_token_id=0)[0, len(prompt):].tolist()
        assert row == ref[:ref.index(127) + 1] if 127 in ref else row == ref


def test_draws_do_not_move_with_float_level_logit_differences():
    """A batch of 48 and a batch of 1 compute logits ~1e-5 apart; the draw from a flat, hot distribution
    (thousands of tiny tokens in the nucleus) must not depend on that."""
    g = torch.Generator().manual_seed(5)
    scores = torch.randn(64, 20000, generator=g) * 2
    nudged = scores + torch.randn(scores.shape, generator=g) * 3e-5
    same = 0
    for seed in range(10):
        seeds = [seed * 100 + r for r in range(64)]
        a = RowwiseSampler(seeds, temperature=1.6, top_p=0.95).sample(scores)
        b = RowwiseSampler(seeds, temperature=1.6, top_p=0.95).sample(nudged)
        same += int((a == b).sum())
    assert same >= 0.99 * 640
    # ...and the draws are a real sample: many distinct tokens, all inside each row's nucleus.
    probs = torch.softmax(scores / 1.6, -1)
    sorted_p, order = torch.sort(probs, descending=True)
    tokens = RowwiseSampler(range(64), temperature=1.6, top_p=0.95).sample(scores)
    for row, token in enumerate(tokens.tolist()):
        rank = int((order[row] == token).nonzero())
        assert float(sorted_p[row, :rank].sum()) < 0.95
    assert len(set(tokens.tolist())) > 50


def test_gumbel_race_draws_follow_the_renormalised_nucleus():
    probs = torch.tensor([[0.5, 0.25, 0.15, 0.1]])
    counts = torch.zeros(4)
    for seed in range(4000):
        counts[RowwiseSampler([seed], top_p=0.85).sample(probs.log())] += 1
    # nucleus of 0.85 = the first three tokens (0.5 + 0.25 < 0.85 <= 0.9), renormalised by 0.9
    expected = torch.tensor([0.5, 0.25, 0.15, 0.0]) / 0.9
    assert counts[3] == 0
    assert (counts / 4000 - expected).abs().max() < 0.03
