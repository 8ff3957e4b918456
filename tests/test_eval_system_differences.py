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


def test_style_mismatch_difference_on_items_both_systems_answered():
    """eval.behaviour_suite.style_differences on eval.failure_modes.style_mismatch: a simulator that writes in the
    requested style (lower case, short, no punctuation) against a baseline that writes proper, punctuated
    sentences; ended turns (None) drop out."""
    from usersim.eval.behaviour_suite import style_differences
    from usersim.eval.config import EvalConfig
    from usersim.eval.failure_modes import style_mismatch
    from usersim.eval.system_differences import paired_value_difference

    n = 60
    style = {"casing": "lower", "punctuation": "none", "length": "short"}
    items = [{"user_id": f"u{i % 20}", "condition": {"style": style}} for i in range(n)]
    casual = ["yeah i think so", "haha no way", "i love hiking too", "not really sure tbh", "same here honestly"]
    proper = ["Yes, I think so! What about you?", "No way. That is amazing, honestly.",
              "I love hiking too; we went last week.", "Not really, I'm not sure. Are you?",
              "Same here! It has been a long week."]
    texts = {"simulator": [casual[i % 5] for i in range(n)], "prompted": [proper[i % 5] for i in range(n)],
             "base": [casual[(i + 1) % 5] for i in range(n)]}
    texts["simulator"][3] = None  # an end: no turn to read
    mismatch = {s: [float("nan") if t is None else style_mismatch(t, style) for t in ts] for s, ts in texts.items()}
    users = [it["user_id"] for it in items]
    out = style_differences(mismatch, users, ["prompted", "base"], EvalConfig(n_permutations=500))
    d = out["simulator_minus_prompted"]["style_mismatch"]
    assert d["n_pairs"] == n - 1 and d["n_users"] == 20
    assert d["value"] < -0.5 and d["ci_high"] < 0 and d["p_value"] < 0.01
    same = out["simulator_minus_base"]["style_mismatch"]  # the same kind of turns: no difference shown
    assert same["ci_low"] <= 0 <= same["ci_high"]
    # NaN on either side drops the item; nothing in common gives None
    assert paired_value_difference([np.nan, 1.0], [0.0, np.nan], ["a", "b"]) is None
