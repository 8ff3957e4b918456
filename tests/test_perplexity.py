"""usersim.eval.perplexity: exact supervised-token counts, agreement with the model's own loss, overfit test, CI."""

from __future__ import annotations

import math
import random

import pytest
import torch

from usersim.data_prep.prompt_format import END_OF_CONVERSATION, IGNORE_INDEX, Condition, tokenize_conversation
from usersim.data_prep.schema import Turn
from usersim.eval.perplexity import perplexity_with_ci, record_windows, user_turn_nll
from tiny_run import build_tiny_run, record_tensors, tiny_records
from usersim.simulator import UserSimulator

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def overfit_sim(tmp_path_factory):
    """Adapter trained 40 steps on records 0 and 1 only (record 2 never seen)."""
    records = tiny_records()[:2]
    run_dir = build_tiny_run(tmp_path_factory.mktemp("overfit"), records=records, train_steps=40, lr=2e-2, lora_r=8)
    return UserSimulator.from_pretrained(run_dir, device="cpu")


def shuffled(record, seed=0):
    """The same record with the words of every user turn shuffled."""
    rng = random.Random(seed)
    turns = []
    for t in record["turns"]:
        words = t["text"].split()
        if t["role"] == "user":
            rng.shuffle(words)
        turns.append({"role": t["role"], "text": " ".join(words)})
    return {**record, "turns": turns}


def expected_token_count(record, tokenizer):
    """Supervised tokens counted independently of the renderer: user texts + EOS, end marker + EOS."""
    n = sum(len(tokenizer(t["text"], add_special_tokens=False)["input_ids"]) + 1
            for t in record["turns"] if t["role"] == "user")
    if record["end_of_conversation"]:
        n += len(tokenizer(END_OF_CONVERSATION, add_special_tokens=False)["input_ids"]) + 1
    return n


def test_token_count_is_the_supervised_tokens(overfit_sim):
    records = tiny_records()
    rows = user_turn_nll(overfit_sim, records, show_progress=False)
    assert [r["n_tokens"] for r in rows] == [expected_token_count(r, overfit_sim.tokenizer) for r in records]
    assert [(r["user_id"], r["conversation_id"]) for r in rows] == [(r["user_id"], r["id"]) for r in records]
    assert all(r["n_tokens_dropped"] == 0 and r["n_windows"] == 1 for r in rows)


def test_nll_equals_the_models_own_loss_and_ignores_batching(overfit_sim):
    records = tiny_records()
    rows = user_turn_nll(overfit_sim, records, batch_size=3, show_progress=False)
    single = user_turn_nll(overfit_sim, records, batch_size=1, show_progress=False)
    for record, row, one in zip(records, rows, single):
        ids, labels = record_tensors(record, overfit_sim.tokenizer)
        with torch.no_grad():
            loss = overfit_sim.model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
        assert row["nll_sum"] == pytest.approx(loss.item() * row["n_tokens"], rel=1e-4)
        assert row["nll_sum"] == pytest.approx(one["nll_sum"], rel=1e-4)


def test_overfit_text_scores_lower_than_shuffled_and_than_the_base(overfit_sim):
    trained = tiny_records()[:2]

    def per_token(rows):
        return sum(r["nll_sum"] for r in rows) / sum(r["n_tokens"] for r in rows)

    seen = per_token(user_turn_nll(overfit_sim, trained, show_progress=False))
    mixed = per_token(user_turn_nll(overfit_sim, [shuffled(r) for r in trained], show_progress=False))
    base = per_token(user_turn_nll(overfit_sim, trained, use_adapter=False, show_progress=False))
    assert seen < mixed
    assert seen < base


def header_len(record, tokenizer):
    """BOS + condition header of a record, in tokens."""
    return len(tokenize_conversation(Condition.from_row(record["condition"]), [], tokenizer).input_ids)


def targets_of(record, tokenizer, max_seq_len):
    """Each target's own sequence under the one length policy: the context the runtime would give it."""
    cond, turns = Condition.from_row(record["condition"]), [Turn(t["role"], t["text"]) for t in record["turns"]]
    out = [tokenize_conversation(cond, turns[:k + 1], tokenizer, max_tokens=max_seq_len, last_target_only=True)
           for k, t in enumerate(turns) if t.role == "user"]
    if record["end_of_conversation"]:
        out.append(tokenize_conversation(cond, turns, tokenizer, max_tokens=max_seq_len, end_of_conversation=True,
                                         last_target_only=True))
    return out


def test_a_record_that_fits_is_one_window_equal_to_the_training_tokenisation(overfit_sim):
    for record in tiny_records():
        assert record_windows(record, overfit_sim.tokenizer, 4096) == ([record_tensors(record, overfit_sim.tokenizer)], 0)


def test_each_target_is_scored_with_the_context_the_length_policy_gives_it(overfit_sim):
    tok = overfit_sim.tokenizer
    records = tiny_records()
    max_len = header_len(records[0], tok) + 40
    assert any(t.turns_dropped for r in records for t in targets_of(r, tok, max_len))  # the cap bites
    for record in records:
        windows, dropped = record_windows(record, tok, max_len)
        targets = targets_of(record, tok, max_len)
        assert dropped == 0 and len(windows) == len({t.turns_dropped for t in targets})
        assert all(len(ids) <= max_len for ids, _ in windows)
        scored = [(w, i) for w, (_, labels) in enumerate(windows) for i, lab in enumerate(labels) if lab != IGNORE_INDEX]
        assert len(scored) == sum(sum(lab != IGNORE_INDEX for lab in t.labels) for t in targets)  # each once
        for t in targets:  # some window starts with the target's exact sequence and scores its tokens there
            n = len(t.input_ids)
            assert any(ids[:n] == t.input_ids and [lab for lab, own in zip(labels, t.labels) if own != IGNORE_INDEX]
                       == [own for own in t.labels if own != IGNORE_INDEX] for ids, labels in windows)


def test_windowed_nll_is_the_models_loss_on_each_targets_own_sequence(overfit_sim):
    record = tiny_records()[0]
    max_len = header_len(record, overfit_sim.tokenizer) + 40
    row = user_turn_nll(overfit_sim, [record], max_seq_len=max_len, batch_size=2, show_progress=False)[0]
    expected = 0.0
    for t in targets_of(record, overfit_sim.tokenizer, max_len):
        with torch.no_grad():
            out = overfit_sim.model(input_ids=torch.tensor([t.input_ids]), labels=torch.tensor([t.labels]))
        expected += out.loss.item() * t.n_supervised
    assert row["n_windows"] > 1
    assert row["nll_sum"] == pytest.approx(expected, rel=1e-4)


def test_long_records_are_scored_in_windows_without_losing_tokens(overfit_sim):
    records = tiny_records()
    whole = user_turn_nll(overfit_sim, records, show_progress=False)
    header = header_len(records[0], overfit_sim.tokenizer)
    windowed = user_turn_nll(overfit_sim, records, max_seq_len=header + 40, show_progress=False)
    assert [r["n_tokens"] for r in windowed] == [r["n_tokens"] for r in whole]
    assert any(r["n_windows"] > 1 for r in windowed)
    assert all(r["n_tokens_dropped"] == 0 for r in windowed)
    for record in records:
        windows, _ = record_windows(record, overfit_sim.tokenizer, header + 40)
        assert all(len(ids) <= header + 40 for ids, _ in windows)


def test_tokens_that_cannot_fit_are_counted_as_dropped(overfit_sim):
    record = tiny_records()[0]
    header = header_len(record, overfit_sim.tokenizer)
    with pytest.warns(UserWarning, match="not scored"):
        rows = user_turn_nll(overfit_sim, [record], max_seq_len=header + 3, show_progress=False)
    total = expected_token_count(record, overfit_sim.tokenizer)
    assert rows[0]["n_tokens_dropped"] > 0
    assert rows[0]["n_tokens"] + rows[0]["n_tokens_dropped"] == total


def test_perplexity_with_ci():
    rows = [{"user_id": u, "conversation_id": f"c{i}", "nll_sum": nll, "n_tokens": n}
            for i, (u, nll, n) in enumerate([("a", 10.0, 5), ("a", 4.0, 5), ("b", 30.0, 10), ("c", 2.0, 4)])]
    out = perplexity_with_ci(rows, n_boot=300, seed=0)
    assert out["perplexity"] == pytest.approx(math.exp(46.0 / 24))
    assert out["ci_low"] <= out["perplexity"] <= out["ci_high"]
    assert out["ci_low"] < out["ci_high"]
    assert (out["n_tokens"], out["n_users"], out["n_conversations"]) == (24, 3, 4)
    assert perplexity_with_ci(rows, n_boot=300, seed=0) == out
    one_user = perplexity_with_ci([{**r, "user_id": "a"} for r in rows], n_boot=50, seed=0)
    assert one_user["ci_low"] == pytest.approx(one_user["ci_high"])
