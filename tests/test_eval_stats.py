"""Known answers for the statistics under eval: bootstrap CIs, Wilson, distances, MATTR, distinct-n."""

import numpy as np
import pytest

from usersim.eval.behaviour import (behaviour_metrics, distinct_n, ending_metrics, first_turn_diversity_metrics, jsd,
                                    ks_statistic, mattr, wasserstein)
from usersim.eval.bootstrap import (abs_difference_by_user, bootstrap_by_user, bootstrap_mean_by_user,
                                    user_index_groups)


def test_user_index_groups_keep_each_users_items_together():
    groups = user_index_groups(["a", "b", "a", "c", "b"])
    assert [g.tolist() for g in groups] == [[0, 2], [1, 4], [3]]


def test_bootstrap_ci_covers_the_true_mean_of_a_clustered_sample():
    # 40 users, each with a user effect + 5 noisy items; true mean 2.0.
    covered = 0
    for rep in range(20):
        rng = np.random.default_rng(rep)
        users = np.repeat([f"u{i}" for i in range(40)], 5)
        effect = np.repeat(rng.normal(0, 1, 40), 5)
        values = 2.0 + effect + rng.normal(0, 0.5, 200)
        v, lo, hi = bootstrap_mean_by_user(values, users, n_boot=300, seed=rep)
        assert lo <= v <= hi
        covered += lo <= 2.0 <= hi
    assert covered >= 16  # nominal 95%: 19/20 expected; a broken CI (e.g. item-level) covers far less


def test_bootstrap_is_seeded_and_wider_than_an_item_level_interval_for_clustered_data():
    rng = np.random.default_rng(0)
    users = np.repeat([f"u{i}" for i in range(30)], 10)
    values = np.repeat(rng.normal(0, 1, 30), 10) + rng.normal(0, 0.1, 300)
    a = bootstrap_mean_by_user(values, users, n_boot=200, seed=5)
    b = bootstrap_mean_by_user(values, users, n_boot=200, seed=5)
    assert a == b
    item_level = bootstrap_mean_by_user(values, [str(i) for i in range(300)], n_boot=200, seed=5)
    assert (a[2] - a[1]) > 2 * (item_level[2] - item_level[1])


def test_bootstrap_skips_nan_resamples_and_handles_empty_input():
    v, lo, hi = bootstrap_by_user([], lambda ix: 1.0)
    assert np.isnan(v) and np.isnan(lo)
    vals = np.array([1.0, np.nan, 3.0])
    v, lo, hi = bootstrap_mean_by_user(vals, ["a", "b", "c"], n_boot=100)
    assert v == pytest.approx(2.0) and 1.0 <= lo <= hi <= 3.0


def test_distances_known_answers():
    a = [1, 2, 3, 4]
    assert wasserstein(a, a) == 0.0
    assert wasserstein(a, [x + 2 for x in a]) == pytest.approx(2.0)
    assert ks_statistic(a, a) == 0.0
    assert ks_statistic([0, 0], [1, 1]) == 1.0
    assert jsd(["x", "y"], ["y", "x"]) == pytest.approx(0.0)
    assert jsd(["x", "x"], ["y", "y"]) == pytest.approx(1.0)
    assert np.isnan(wasserstein([], [1]))


def test_mattr_and_distinct_n():
    assert mattr(["a"] * 10, window=5) == pytest.approx(0.2)
    assert mattr(list("abcdefghij"), window=5) == pytest.approx(1.0)
    assert mattr(["a", "b", "a", "b"], window=25) == pytest.approx(0.5)  # shorter than the window: TTR
    # window 2 over a a b b: windows (a a)=1/2, (a b)=1, (b b)=1/2 -> mean 2/3
    assert mattr(["a", "a", "b", "b"], window=2) == pytest.approx(2 / 3)
    assert distinct_n(["a b c", "a b c"], 2) == pytest.approx(0.5)
    assert distinct_n(["a b", "c d"], 1) == 1.0


TURNS = ["hey how are you", "i like hiking with my dog!", "what do you do for work?", "lol same",
         "My name is Sam. I live in Ohio.", "that sounds fun :)", "thanks so much", "nooo way"] * 3
USERS = [f"u{i % 6}" for i in range(len(TURNS))]


def test_identical_distributions_have_zero_distance_with_a_ci_covering_it():
    metrics = behaviour_metrics(TURNS, {"simulator": list(TURNS)}, USERS, n_boot=200, seed=0)
    dists = [m for m in metrics if m.system == "simulator" and m.higher_is_better is False]
    assert len(dists) >= 8
    for m in dists:
        assert m.value == pytest.approx(0.0, abs=1e-12), m.name
        assert m.ci_low <= 0.0 + 1e-12 and m.ci_high >= -1e-12, m.name
    human = {m.name: m for m in metrics if m.system == "human"}
    sim = {m.name: m for m in metrics if m.system == "simulator" and m.higher_is_better is None}
    assert sim["turn_length"].human_reference == human["turn_length"].value == sim["turn_length"].value


def test_different_distributions_have_positive_distance_excluding_zero():
    long = ["Certainly! Here is a very long and detailed answer about the topic you asked about today."] * len(TURNS)
    metrics = behaviour_metrics(TURNS, {"base": long}, USERS, n_boot=200, seed=0)
    m = next(m for m in metrics if m.name == "turn_length_wasserstein")
    assert m.value > 5 and m.ci_low > 0


def test_none_turns_are_ignored():
    sim = [None if i % 2 else t for i, t in enumerate(TURNS)]
    metrics = behaviour_metrics(TURNS, {"simulator": sim}, USERS, n_boot=50)
    m = next(m for m in metrics if m.name == "turn_length" and m.system == "simulator")
    assert m.n == len(TURNS) // 2


def test_first_turn_diversity_and_ending_metrics():
    tix = [i % 4 for i in range(len(TURNS))]
    ft = first_turn_diversity_metrics(TURNS, {"simulator": ["hello there"] * len(TURNS)}, USERS, tix, n_boot=50)
    by = {(m.name, m.system): m for m in ft}
    assert by[("first_turn_distinct2", "simulator")].value < by[("first_turn_distinct2", "human")].value
    real_ends = [k == 3 for k in tix]
    em = ending_metrics(real_ends, {"simulator": real_ends, "base": [False] * len(TURNS)}, USERS, tix, n_boot=50)
    by = {(m.name, m.system): m for m in em}
    assert by[("end_rate", "simulator")].value == by[("end_rate", "human")].value == pytest.approx(0.25)
    assert by[("end_turn_index", "human")].value == 3
    assert by[("end_turn_index_wasserstein", "simulator")].value == 0
    assert by[("end_rate", "base")].value == 0


def test_first_turn_self_similarity_ignores_pairs_of_the_same_resampled_item():
    from usersim.eval.behaviour import mean_pairwise, pairwise_jaccard_matrix

    sim = pairwise_jaccard_matrix(["a b", "c d", "a b"])
    assert sim[0, 2] == 1.0 and sim[0, 1] == 0.0
    # positions 0,0 are the same item repeated by the bootstrap: only the pairs (0,1) count.
    assert mean_pairwise(sim, np.array([0, 0, 1])) == 0.0
    assert mean_pairwise(sim, np.array([0, 2])) == 1.0


def test_abs_difference_ci_holds_its_estimate_near_zero_and_excludes_zero_for_a_real_gap():
    rng = np.random.default_rng(0)
    users = [f"u{i // 3}" for i in range(120)]
    a, b = rng.normal(0, 1, 120), rng.normal(0, 1, 120)  # the same distribution: |d| is near 0
    v, lo, hi = abs_difference_by_user(users, lambda ix: a[ix].mean() - b[ix].mean(), n_boot=500, seed=0)
    naive = bootstrap_by_user(users, lambda ix: abs(a[ix].mean() - b[ix].mean()), n_boot=500, seed=0)
    assert lo == 0.0 and lo <= v <= hi
    assert naive[1] > 0  # the percentile bootstrap of |d| leaves 0 out even here
    shifted = b + 1.0  # a real gap of 1
    v, lo, hi = abs_difference_by_user(users, lambda ix: shifted[ix].mean() - a[ix].mean(), n_boot=500, seed=0)
    assert 0 < lo <= v <= hi and lo < 1.0 < hi
