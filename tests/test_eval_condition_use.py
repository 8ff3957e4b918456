"""usersim.eval.condition_use: the teacher-forced test of whether a simulator reads each condition field."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("torch")

from tiny_run import build_tiny_run, tiny_records  # noqa: E402

from usersim.data_prep.prompt_format import Condition, tokenize_conversation  # noqa: E402
from usersim.data_prep.schema import Turn  # noqa: E402
from usersim.eval.condition_use import (VARIANTS, condition_costs, condition_use_metrics,  # noqa: E402
                                        cost_with_ci, counterfactuals, first_span, opening, score)
from usersim.eval.perplexity import Window, record_windows, window_nll  # noqa: E402
from usersim.simulator import UserSimulator  # noqa: E402


def test_condition_use_scores_the_same_tokens_and_finds_a_condition_the_model_reads(tmp_path):
    """bench/condition_use.py: every counterfactual scores exactly the tokens of the own condition (the
    cut keeps whole turns that fit); the own condition costs nothing against itself; a tiny model trained
    on records whose goal names their content gives a swapped goal a positive cost, and the cost is read
    from the per-conversation sums (known answer on hand-made numbers)."""
    assert first_span([-100, 5, 6, -100, 7, -100]) == [-100, 5, 6, -100, -100, -100]
    assert first_span([-100, -100]) == [-100, -100]

    records = tiny_records()
    for r, goal in zip(records, ["dogs and walks", "a hike nearby", "cooking pasta"]):
        r["condition"] = {**r["condition"], "goal": goal}
    sim = UserSimulator.from_pretrained(build_tiny_run(tmp_path, records=records, train_steps=30))
    conditions = [Condition.from_row(r["condition"]) for r in records]
    variants = counterfactuals(conditions, seed=0)
    assert variants["casing=flip"][0].style["casing"] == "proper" and variants["style=blank"][0].style == {}
    assert all(v.goal != c.goal for v, c in zip(variants["goal=swapped"], conditions))
    assert variants["persona=swapped"][0].persona == conditions[1].persona  # all personas equal: a swap, same text

    first3 = [Turn(t["role"], t["text"]) for t in records[0]["turns"][:3]]
    budget = len(tokenize_conversation(conditions[0], first3, sim.tokenizer).input_ids)  # 3 of its 4 turns fit
    cut = [opening(r, c, sim.tokenizer, budget) for r, c in zip(records, conditions)]
    assert len(cut[0]["turns"]) == 3 and not cut[0]["end_of_conversation"] and records[0]["end_of_conversation"]
    own = score(sim, cut, conditions, batch_size=2)
    again = score(sim, cut, conditions, batch_size=3)
    assert [n for _, n in own] == [n for _, n in again] and all(n > 0 for _, n in own)
    assert all(abs(a - b) < 1e-3 for (a, _), (b, _) in zip(own, again))  # batching does not change a score
    for name in ("goal=swapped", "style=blank", "casing=flip"):
        other = score(sim, cut, variants[name], batch_size=2)
        assert [n for _, n in other] == [n for _, n in own], name  # the same target tokens
    # the first turn alone, scored on the ids up to its end, equals its share of the whole window's score
    first = score(sim, cut, conditions, batch_size=2, first_turn_only=True)
    for i, (row, c) in enumerate(zip(cut, conditions)):
        (ids, labels), = record_windows({**row, "condition": c.to_row()}, sim.tokenizer, 0)[0]
        nll, n = window_nll(sim.model, [Window(0, ids, first_span(labels))], sim.tokenizer.pad_token_id)[0]
        assert first[i][1] == n <= own[i][1] and abs(first[i][0] - nll) < 1e-3
    assert sum(n for _, n in first) < sum(n for _, n in own)
    swapped = score(sim, cut, variants["goal=swapped"], batch_size=2)
    assert sum(a for a, _ in swapped) > sum(a for a, _ in own)  # the trained model reads its goal
    cost = cost_with_ci(own, swapped, [r["user_id"] for r in records], n_boot=50, seed=0)
    expected = 1000 * (sum(a for a, _ in swapped) - sum(a for a, _ in own)) / sum(n for _, n in own)
    assert cost["millinats_per_token"] == round(expected, 2) > 0 and cost["n_users"] == 3

    hand = cost_with_ci([(10.0, 100), (20.0, 100)], [(11.0, 100), None], ["u1", "u2"], n_boot=20, seed=0)
    assert hand["millinats_per_token"] == 10.0 and hand["n_conversations"] == 1  # 1000 * 1 nat / 100 tokens


def test_condition_use_metrics_report_the_simulator_and_the_base(tmp_path):
    """In eval: one row per counterfactual and system (the base when the run has an adapter), named
    condition_cost_<field>_<change>, the simulator's value the same as condition_costs gives; an unknown
    variant is a clear error."""
    records = tiny_records()
    for r, goal in zip(records, ["dogs and walks", "a hike nearby", "cooking pasta"]):
        r["condition"] = {**r["condition"], "goal": goal}
    sim = UserSimulator.from_pretrained(build_tiny_run(tmp_path, records=records, train_steps=10))
    cfg = SimpleNamespace(seed=0, n_boot=50, condition_use_conversations=3, condition_use_max_tokens=400,
                          condition_use_variants=["goal=swapped", "casing=flip"])
    rows = {(m.name, m.system): m for m in condition_use_metrics(cfg, sim, records)}
    assert set(rows) == {(f"condition_cost_{v}", s) for v in ("goal_swapped", "casing_flip")
                         for s in ("simulator", "base")}
    direct = condition_costs(sim, records, max_tokens=400, seed=0, n_boot=50, variants=["goal=swapped"])
    assert rows[("condition_cost_goal_swapped", "simulator")].value == direct["goal=swapped"]["millinats_per_token"]
    assert rows[("condition_cost_goal_swapped", "simulator")].n == 3
    with pytest.raises(ValueError, match="unknown condition_use variants"):
        condition_costs(sim, records, max_tokens=400, seed=0, n_boot=10, variants=["mood=swapped"])
    assert set(counterfactuals([Condition.from_row(r["condition"]) for r in records], 0)) == set(VARIANTS)


def test_eval_refuses_an_unknown_counterfactual_before_any_work(tmp_path):
    from usersim.eval.config import EvalConfig
    from usersim.eval.main import main

    with pytest.raises(ValueError, match="unknown condition_use variants"):
        main(EvalConfig(output_dir=str(tmp_path / "out"), data_dir=str(tmp_path / "missing"),
                        condition_use_conversations=4, condition_use_variants=["mood=swapped"]))
    assert not (tmp_path / "out").exists()
