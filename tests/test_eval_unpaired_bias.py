"""The unpaired human-vs-human control is unbiased at the default run's size; the paired test is by symmetry.

Real data whose answer is known: two disjoint groups of real chitchat users (30 + 30 users, 2 turns
each, every turn in its own context: about the eval's control, ~60 users and ~118 turns) must sit at
0.5 on average over seeds and be rejected at about the nominal rate; lower-casing one group's turns
(a planted, real-text difference) must still be caught.

Measured before the debiasing (200 seeds, fast judge, 200 permutations): raw accuracy 0.4967 (SE
0.0044, SD 0.063 per seed), its permutation null's mean 0.4996; without centring the targets the null
mean was 0.480. The tolerance below, 0.015 on the mean of 200 seeds, is 3.5 standard errors.
"""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from usersim.eval.discriminators import discriminate
from usersim.eval.judges import FAST
from usersim.eval.paired import cross_fit_margins, fold_smoothers, gram, pair_scores, paired_discrimination, user_folds
from usersim.eval.permutation import permutation_inference
from real_turns import chitchat_user_turns

N_USERS, PER_USER = 30, 2  # per group: the default eval's human-vs-human control is ~60 users, ~118 turns


def two_groups(by_user, seed: int, n_users: int = N_USERS, per_user: int = PER_USER):
    """Two disjoint groups of real users, ``per_user`` random (turn, context) rows each."""
    rng = random.Random(seed)
    users = rng.sample(sorted(u for u, ts in by_user.items() if len(ts) >= per_user), 2 * n_users)
    groups = []
    for group in (users[:n_users], users[n_users:]):
        rows = [(t, c, u) for u in group for t, c in rng.sample(by_user[u], per_user)]
        groups.append(([t for t, _, _ in rows], [c for _, c, _ in rows], [u for _, _, u in rows]))
    return groups


def test_debiased_estimate_by_hand():
    null = [0.40, 0.45, 0.50, 0.50, 0.55, 0.60, 0.48, 0.52, 0.47, 0.43]  # mean 0.49
    raw, fixed = permutation_inference(0.58, null), permutation_inference(0.58, null, debias=True)
    assert fixed.accuracy == pytest.approx(0.58 - (0.49 - 0.5)) and fixed.accuracy_raw == 0.58
    # the p-value, band, CI and MDE are those of the raw accuracy; the CI contains the debiased estimate
    for key in ("ci_low", "ci_high", "p_value", "null_low", "null_high", "null_mean", "mde", "n_permutations"):
        assert getattr(fixed, key) == getattr(raw, key)
    assert fixed.ci_low <= fixed.accuracy <= fixed.ci_high
    assert "accuracy_raw" not in raw.to_dict() and fixed.to_dict()["accuracy_raw"] == 0.58
    assert permutation_inference(0.999, [0.45] * 5, debias=True).accuracy == 1.0  # clipped to [0, 1]


def test_unpaired_human_vs_human_is_unbiased_at_the_default_size():
    by_user = chitchat_user_turns()
    est, raw, rejected, covered = [], [], 0, 0
    n = 200
    for seed in range(n):
        (a, ac, au), (b, bc, bu) = two_groups(by_user, seed)
        res = discriminate(FAST, a, au, b, bu, real_contexts=ac, candidate_contexts=bc, n_permutations=200, seed=seed)
        d = res.to_dict()
        est.append(d["accuracy"])
        raw.append(d["accuracy_raw"])
        assert d["auc_raw"] == round(res.auc.accuracy_raw, 4)
        rejected += d["p_value"] < 0.05
        covered += d["ci_low"] <= 0.5 <= d["ci_high"]
    assert res.n_users == 2 * N_USERS and res.n_real + res.n_candidate == 2 * N_USERS * PER_USER
    assert abs(np.mean(est) - 0.5) <= 0.015, (np.mean(est), np.mean(raw))
    assert 0.04 <= np.std(est) <= 0.09  # the spread the tolerance was set from (0.063 measured)
    assert rejected / n <= 0.10, rejected
    assert covered / n >= 0.90, covered


def test_unpaired_still_catches_a_planted_difference():
    """One group's real turns lower-cased (contexts as written): caught at 0.05 in at least 16 of 20 seeds."""
    by_user = chitchat_user_turns()
    accs, caught = [], 0
    for seed in range(20):
        (a, ac, au), (b, bc, bu) = two_groups(by_user, seed)
        res = discriminate(FAST, a, au, [t.lower() for t in b], bu, real_contexts=ac, candidate_contexts=bc,
                           n_permutations=200, seed=seed)
        caught += res.accuracy.p_value < 0.05 and res.accuracy.ci_low > 0.5
        accs.append(res.accuracy.accuracy)
    assert caught >= 16 and np.mean(accs) > 0.65, (caught, np.mean(accs))


def human_pairs(by_user, seed: int, n_users: int = N_USERS, per_user: int = PER_USER):
    """Pairs (turn of a user of group A in its context, turn of a user of group B in its own context);
    user A_k is matched with user B_k, so the unit of folds and sign flips is the user pair."""
    (a, ac, au), (b, bc, bu) = two_groups(by_user, seed, n_users, per_user)
    return a, b, ac, bc, [f"{x}|{y}" for x, y in zip(au, bu)]


def test_paired_null_mean_is_exactly_one_half_for_any_data():
    """Flipping one user's pairs negates their out-of-fold margins, so over all 2^G sign patterns every
    pair scores 1/2 on average: the exact null mean is 0.5 (no debiasing needed), here on real turns."""
    a, b, ac, bc, users = human_pairs(chitchat_user_turns(), seed=3, n_users=10, per_user=2)
    feats = FAST.features(a + b, ac + bc)
    n = len(a)
    smoothers = fold_smoothers(gram(feats[:n] - feats[n:]), user_folds(users, 5, seed=0))
    distinct = sorted(set(users))
    index = np.array([distinct.index(u) for u in users])
    accs = [pair_scores(cross_fit_margins(smoothers, np.array(s)[index], n)).mean()
            for s in itertools.product([-1.0, 1.0], repeat=len(distinct))]
    assert len(accs) == 2 ** 10 and np.std(accs) > 0.05
    assert np.mean(accs) == pytest.approx(0.5, abs=1e-12)


def test_paired_human_vs_human_is_unbiased_on_real_data():
    """Each side read in its own context (``candidate_contexts``): mean accuracy 0.5, nominal rejections."""
    by_user = chitchat_user_turns()
    accs, null_means, rejected, n = [], [], 0, 200
    for seed in range(n):
        a, b, ac, bc, users = human_pairs(by_user, seed)
        inf = paired_discrimination(FAST, a, b, ac, users, candidate_contexts=bc, n_permutations=200,
                                    seed=seed).inference
        assert inf.accuracy_raw is None  # the paired test reports its raw accuracy: it needs no debiasing
        accs.append(inf.accuracy)
        null_means.append(inf.null_mean)
        rejected += inf.p_value < 0.05
    assert abs(np.mean(accs) - 0.5) <= 0.015, np.mean(accs)
    assert abs(np.mean(null_means) - 0.5) <= 0.002, np.mean(null_means)
    assert rejected / n <= 0.10, rejected
