"""Smoke test of bench/: the corpus generator, the data-prep workers and the formulation-equality
path at minimal sizes, so the benchmark scripts do not rot. Asserts behaviour, never speed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch = pytest.importorskip("torch")

from bench.make_wildchat_corpus import BAD_EVERY, write_corpus  # noqa: E402
from bench.per_turn import completion_labels, per_turn_samples, supervised_spans  # noqa: E402


def test_wildchat_corpus_shape_and_data_prep_workers(tmp_path):
    from bench.data_prep_speed import work_adapter_validate, work_plain_json

    n = 2 * BAD_EVERY
    path = write_corpus(tmp_path / "wc.jsonl", n, seed=3)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == n
    first = json.loads(lines[0])
    assert {"conversation_hash", "conversation", "hashed_ip", "turn", "language", "toxic"} <= set(first)
    assert [t["role"] for t in first["conversation"][:2]] == ["user", "assistant"]
    assert first["turn"] == sum(t["role"] == "user" for t in first["conversation"])
    # deterministic in the seed
    assert write_corpus(tmp_path / "again.jsonl", n, seed=3).read_bytes() == path.read_bytes()

    plain = work_plain_json(str(path))
    assert plain["read"] == n and plain["bad_json"] == 1  # the truncated line of the first bad block
    adapter = work_adapter_validate(str(path))
    assert adapter["read"] == n
    assert adapter["kept"] + adapter["quarantined"] == n
    # the truncated line is quarantined; the emptied first user turn is dropped (conversation kept)
    # unless it was the only user turn (then no_user_turn)
    assert 1 <= adapter["quarantined"] <= 2


def test_per_turn_samples_are_prefixes_with_one_completion_each():
    ids = list(range(10))
    labels = [-100, -100, 2, 3, -100, -100, 6, -100, 8, 9]
    assert supervised_spans(labels) == [(2, 4), (6, 7), (8, 10)]
    samples = per_turn_samples(ids, labels)
    assert [s["input_ids"] for s in samples] == [ids[:4], ids[:7], ids[:10]]
    assert completion_labels(samples[1]) == [-100] * 6 + [6]
    # every supervised token is a completion token exactly once
    assert sorted(t for s in samples for t in completion_labels(s) if t != -100) == [2, 3, 6, 8, 9]


def test_conversation_level_and_per_turn_losses_agree(tmp_path):
    from bench.corpora import all_texts, synthetic_records
    from bench.train_runs import loss_equality
    from usersim.train.examples import record_to_example
    from usersim.train.tiny_model import train_tiny_tokenizer

    torch.set_num_threads(1)
    records = synthetic_records(3, user_turns=3, user_words=5, assistant_words=10, seed=0)
    tok = train_tiny_tokenizer(all_texts(records), vocab_size=300)
    tok.save_pretrained(tmp_path / "tok")
    examples = [{"input_ids": e["input_ids"], "labels": e["labels"]}
                for e in (record_to_example(r, tok, max_seq_len=512) for r in records)]
    out = loss_equality({"kind": "tiny", "hidden": 32, "layers": 1}, str(tmp_path / "tok"), examples,
                        lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": []}, seed=0, max_tokens=512)
    assert out["per_turn_samples"] == 3 * (3 + 1)  # 3 user turns + the end-of-conversation target each
    assert out["supervised_tokens_conversation_level"] == out["supervised_tokens_per_turn"] > 0
    assert out["abs_diff"] < 1e-4


def test_learning_curve_rows_come_from_the_eval_metrics_and_draw(tmp_path):
    """bench/curve.py reads each point's numbers from its metrics.json rows (nothing recomputed) and writes
    its table and figure; a metric the eval did not store reads '-'."""
    from bench.curve import row_of, table, write

    def m(name, system, value):
        return {"name": name, "system": system, "value": value, "ci_low": value - 0.1, "ci_high": value + 0.1, "n": 100}

    doc = {"metrics": [m("paired_accuracy", "simulator", 0.6), m("paired_accuracy_lm", "simulator", 0.7),
                       m("paired_accuracy_lm", "base", 0.95), m("end_rate", "simulator", 0.05),
                       m("end_rate", "human", 0.07), m("heldout_perplexity", "simulator", 19.0)]}
    rows = [row_of(doc, "base", 0, 0), row_of(doc, "simulator", 36188, 72)]
    assert rows[1]["paired_accuracy_lm"] == {"value": 0.7, "ci": [0.6, 0.7999999999999999], "n": 100}
    assert rows[1]["paired_accuracy_neural"] is None and rows[1]["end_rate_human"]["value"] == 0.07
    text = table(rows)
    assert "| 0 (untuned base) | 0 | - | - | 0.950 [0.850, 1.050] |" in text
    assert "| 72 | 36,188 | 0.600 [0.500, 0.700] | - | 0.700 [0.600, 0.800] | 19.0 [18.9, 19.1] |" in text
    write(tmp_path / "curve", rows, {"steps": [72]})
    assert (tmp_path / "curve.png").stat().st_size > 1000
    assert json.loads((tmp_path / "curve.json").read_text())["table"] == text


def test_ending_slope_fit_recovers_a_known_slope():
    """bench/ending.py section 4: the logistic fit finds the slope the ends were drawn with, also when the cases
    are over-sampled (case-control: the slope stays, only the intercept moves)."""
    import numpy as np

    from bench.ending import log_odds, logistic_fit

    lp = np.log([0.5, 0.1, 0.01])
    assert np.allclose(log_odds(lp), np.log([1.0, 1 / 9, 1 / 99]))
    rng = np.random.default_rng(0)
    x = rng.normal(-3.5, 1.0, 40000)
    y = (rng.random(x.size) < 1 / (1 + np.exp(-(1.7 * x + 3.0)))).astype(float)
    a, b = logistic_fit(x, y)
    assert abs(a - 1.7) < 0.1 and abs(b - 3.0) < 0.3
    keep = (y == 1) | (rng.random(x.size) < 0.1)  # every case, a tenth of the controls
    a_cc, b_cc = logistic_fit(x[keep], y[keep])
    assert abs(a_cc - 1.7) < 0.15 and abs(b_cc - (3.0 + np.log(10))) < 0.4
