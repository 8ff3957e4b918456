"""`usersim discriminate`: bring-your-own simulator scoring, and clear errors for bad rows."""

import json

import pytest

from usersim.eval.discriminate_cli import InputError, cli, read_turns, score

HUMAN = ["hey whats up", "not much lol u?", "going to the beach tmrw", "my dog loves it there",
         "haha nice", "what r u doing later?", "idk maybe a movie", "cool cool"]
ASSISTANT = ["Certainly! Here are some ideas for your day:\n1. Go to the beach.\n2. Watch a movie.",
             "As an AI language model, I'd be happy to help you plan your evening.",
             "Great question! There are several factors to consider when choosing a movie.",
             "I hope this helps! Let me know if you have any other questions."]


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def rows(texts, n_users=8, prefix="u"):
    return [{"user_id": f"{prefix}{i % n_users}", "text": t, "context": []} for i, t in enumerate(texts)]


def test_cli_scores_assistant_text_as_distinguishable(tmp_path, capsys):
    real = write_jsonl(tmp_path / "real.jsonl", rows(HUMAN * 4))
    cand = write_jsonl(tmp_path / "cand.jsonl", rows(ASSISTANT * 8))
    out = tmp_path / "o" / "scores.json"
    assert cli(["--real", str(real), "--candidate", str(cand), "--output", str(out), "--no-neural",
                "--n-boot", "200"]) == 0
    doc = json.loads(out.read_text())
    assert "neural" not in doc
    fast = doc["fast"]
    for key in ("accuracy", "ci_low", "ci_high", "auc", "n_real", "n_candidate"):
        assert key in fast
    assert fast["n_real"] == 32 and fast["n_candidate"] == 32
    assert fast["ci_low"] > 0.5
    assert doc["behaviour"]["turn_length.candidate"]["value"] > doc["behaviour"]["turn_length.real"]["value"]
    assert doc["behaviour"]["turn_length_wasserstein.candidate"]["value"] > 0
    assert "accuracy" in capsys.readouterr().out


def test_score_of_real_against_itself_is_at_chance():
    texts = HUMAN * 4
    users = [f"u{i % 8}" for i in range(len(texts))]
    result = score((texts, users), (list(texts), users), neural=False, n_boot=100)
    fast = result["fast"]
    # the raw cross-fitted accuracy is exactly 0.5; the reported one is debiased by its null's mean
    # (usersim.eval.discriminators), so it is 0.5 up to that offset, inside its CI, and not significant
    assert fast["accuracy_raw"] == pytest.approx(0.5)
    assert fast["accuracy"] == pytest.approx(0.5 - (fast["null_mean"] - 0.5), abs=1e-4)
    assert fast["ci_low"] <= 0.5 <= fast["ci_high"] and fast["p_value"] >= 0.05
    assert result["behaviour"]["turn_length_wasserstein.candidate"]["value"] == 0.0


@pytest.mark.parametrize("line, message", [
    ("{not json", "line 2: not valid JSON"),
    ('["a", "b"]', "line 2: expected an object"),
    ('{"text": "hi"}', "line 2: missing key(s) ['user_id']"),
    ('{"user_id": "u", "text": ""}', "line 2: \"text\" must be a non-empty string"),
    ('{"user_id": "u", "text": 3}', "line 2: \"text\" must be a non-empty string"),
    ('{"user_id": "u", "text": "hi", "context": "hello"}', "line 2: \"context\" must be a list"),
    ('{"user_id": "u", "text": "hi", "context": [{"role": "bot", "text": "x"}]}', "line 2: \"context\" must be a list"),
])
def test_bad_rows_name_the_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"user_id": "u", "text": "ok"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_turns(path, with_contexts=True)
    assert message in str(err.value) and str(path) in str(err.value)


def test_context_rows_are_read_into_contexts(tmp_path):
    path = write_jsonl(tmp_path / "real.jsonl", [
        {"user_id": "a", "text": "fine thanks", "context": [{"role": "user", "text": "hi"},
                                                          {"role": "assistant", "text": "how are you?"}]},
        {"user_id": "b", "text": "hello"}])
    texts, users, contexts = read_turns(path, with_contexts=True)
    assert texts == ["fine thanks", "hello"] and users == ["a", "b"]
    assert contexts[0].previous == "how are you?" and contexts[0].own_previous == "hi"
    assert contexts[0].history == (("user", "hi"), ("assistant", "how are you?")) and contexts[1].history == ()


def test_cli_reports_bad_input_with_exit_code_2(tmp_path, capsys):
    good = write_jsonl(tmp_path / "real.jsonl", rows(HUMAN))
    bad = tmp_path / "cand.jsonl"
    bad.write_text('{"user_id": "u", "text": "ok"}\n\n{oops\n', encoding="utf-8")
    assert cli(["--real", str(good), "--candidate", str(bad), "--no-neural"]) == 2
    assert "cand.jsonl: line 3: not valid JSON" in capsys.readouterr().err
    assert cli(["--real", str(tmp_path / "missing.jsonl"), "--candidate", str(good), "--no-neural"]) == 2
