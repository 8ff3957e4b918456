"""bench.rl_cross at minimal size: two GRPO runs (vs the simulator, vs the prompted user), the 3 x 2 table, curves."""

import json

import pytest

pytest.importorskip("trl")


def test_the_cross_simulator_study_writes_its_table_and_curves(tiny_run_dir, tmp_path):
    from test_eval_end_to_end import tiny_records, validation_records, write_data_run

    from bench.rl_cross import USERS, main
    from usersim.train.tiny_model import build_tiny_model, train_tiny_tokenizer

    run = tmp_path / "run"
    run.mkdir()
    (run / "train").symlink_to(tiny_run_dir)
    write_data_run(run / "data", tiny_records(), validation_records())
    tok = train_tiny_tokenizer(["hello there", "<|system|> <|user|> <|assistant|>"] * 5, vocab_size=300)
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<eos>{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    chat = tmp_path / "chat"
    build_tiny_model(tok, hidden_size=32, seed=1).save_pretrained(chat, safe_serialization=True)
    tok.save_pretrained(chat)
    out = tmp_path / "results" / "rl_cross.json"
    result = main(["--run", str(run), "--policy", str(tiny_run_dir.parent / "base_model"), "--prompted_model",
                   str(chat), "--steps", "1", "--train_scenarios", "4", "--eval_scenarios", "3", "--eval_episodes",
                   "2", "--group", "2", "--batch", "2", "--max_turns", "2", "--policy_tokens", "4", "--user_tokens", "4",
                   "--n_boot", "50", "--cpu", "--output", str(out)])
    assert json.loads(out.read_text())["table"] == result["table"] and out.with_suffix(".png").is_file()
    assert list(result["table"]) == ["untrained", "trained vs simulator", "trained vs prompted"]
    for row in result["table"].values():
        assert set(row) == set(USERS)
        for cell in row.values():
            assert cell["n_scenarios"] == 3 and cell["n_episodes"] == 6
            assert cell["ci"][0] <= cell["mean_reward"] <= cell["ci"][1]
            assert -0.02 * 2 - 1e-9 <= cell["mean_reward"] <= 1.0
    assert set(result["curves"]) == set(USERS) and all(len(c) == 1 for c in result["curves"].values())
    assert set(result["train_scenarios"]).isdisjoint(result["eval_scenarios"])  # validation users vs test users
