"""Simulator-minus-baseline differences of paired accuracy (usersim.eval.system_differences), on data whose
answer is known."""

import numpy as np

from usersim.eval.system_differences import baselines_sentence, paired_accuracy_difference, system_differences


class R:
    def __init__(self, scores):
        self.scores = np.asarray(scores, dtype=float)


def _scores(rng, n, p):
    return (rng.random(n) < p).astype(float)


def test_a_baseline_caught_far_more_often_makes_the_simulator_more_human():
    rng = np.random.default_rng(0)
    n = 200
    users = [f"u{i % 50}" for i in range(n)]
    sim, base = _scores(rng, n, 0.55), _scores(rng, n, 0.95)
    d = paired_accuracy_difference(sim, range(n), base, range(n), users, n_permutations=2000, seed=0)
    assert d["n_pairs"] == n and d["n_users"] == 50
    assert d["ci_high"] < 0 and d["p_value"] < 0.001 and abs(d["value"] - (sim.mean() - base.mean())) < 1e-12


def test_two_systems_equally_often_caught_are_not_told_apart_at_the_nominal_rate():
    rng = np.random.default_rng(1)
    n, rejected, covered = 120, 0, 0
    for rep in range(100):
        users = [f"u{i % 40}" for i in range(n)]
        a, b = _scores(rng, n, 0.7), _scores(rng, n, 0.7)
        d = paired_accuracy_difference(a, range(n), b, range(n), users, n_permutations=400, seed=rep)
        rejected += d["p_value"] < 0.05
        covered += d["ci_low"] <= 0 <= d["ci_high"]
    assert rejected <= 10 and covered >= 88


def test_only_items_both_systems_were_paired_on_count_and_every_shared_judge_is_compared():
    users = ["a", "a", "b", "b", "c"]
    results = {"simulator": ({"fast": R([1, 0, 1, 1]), "lm": R([1, 1, 1, 1])}, [0, 1, 2, 4]),
               "base": ({"fast": R([1, 1, 1]), "lm": R([1, 1, 1])}, [1, 2, 3]),
               "prompted": ({"fast": R([0, 0, 0, 0, 0])}, [0, 1, 2, 3, 4])}
    out = system_differences(results, users, simulator="simulator", baselines=["base", "prompted"],
                             n_permutations=100, seed=0)
    base = out["simulator_minus_base"]
    assert set(base) == {"paired_accuracy", "paired_accuracy_lm"}
    assert base["paired_accuracy"]["n_pairs"] == 2 and base["paired_accuracy"]["value"] == -0.5  # items 1 and 2
    assert set(out["simulator_minus_prompted"]) == {"paired_accuracy"}
    sentence = baselines_sentence({"simulator_minus_base": {"paired_accuracy_lm": {
        "value": -0.3, "ci_low": -0.4, "ci_high": -0.2, "p_value": 0.001}}}, "lm")
    assert "more human than the untuned base" in sentence and "prompted" not in sentence
    edge = {"simulator_minus_prompted": {"paired_accuracy": {"value": -0.12, "ci_low": -0.24, "ci_high": -0.001,
                                                             "p_value": 0.11}}}
    assert "not shown to differ" in baselines_sentence(edge, "fast")  # the CI alone does not decide
    assert "not shown to differ" in baselines_sentence({"simulator_minus_prompted": {"paired_accuracy": {
        "value": -0.1, "ci_low": -0.3, "ci_high": 0.1, "p_value": 0.3}}}, "fast")
