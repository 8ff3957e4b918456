"""Paired discrimination, the headline: shown the context and two candidate next turns, the real one
and the simulated one, can a judge tell which is real?

For every held-out item with a complete pair (neither side ended the conversation, neither was cut
by the token cap, neither is empty), the judge (usersim.eval.judges) featurises both candidates *with their
context*, and an antisymmetric pair model scores the pair: ``w . (phi(real) - phi(sim))`` with no
intercept, so swapping the two candidates flips the sign and there is no class prior to learn. The
model is a kernel ridge (regularised least-squares) classifier on the feature differences
(:func:`cross_fit_margins`), cross-fitted with folds grouped by user: a pair is always judged by a
model that never saw its user.
A pair scores 1 when the real turn gets the higher score, 1/2 on a tie, 0 otherwise; accuracy is the
mean. 0.5 = the judge cannot tell them apart.

Null and inference (usersim.eval.permutation): if the simulator wrote like this user, each user's real and
simulated turns would be exchangeable, so swapping them for any set of users would change nothing.
The null distribution is that of the accuracy with the pairs of a random set of users swapped and
the whole cross-fitting re-run (a user-level sign flip with refit): an exact test at any n, and one
that keeps a user's pairs together (they share habits, so they are not independent evidence).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy import sparse

from usersim.eval.judges import Context, Judge
from usersim.eval.permutation import Inference, cluster_robust_interval, permutation_inference

# Reasons a held-out item gives no pair (counted, never silently dropped).
ENDED, CAPPED, EMPTY = "ended", "capped", "empty"


def user_folds(users: Sequence[str], n_splits: int, seed: int) -> np.ndarray:
    """Fold index per row: users shuffled (seeded) and dealt round-robin into ``n_splits`` folds.

    The assignment does not look at any label, so it is the same for every permutation.
    """
    distinct = sorted({str(u) for u in users})
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(distinct))
    k = max(2, min(n_splits, len(distinct)))
    fold_of = {distinct[j]: rank % k for rank, j in enumerate(order)}
    return np.array([fold_of[str(u)] for u in users], dtype=int)


def pair_scores(margins: np.ndarray) -> np.ndarray:
    """1 where the real turn scored higher, 1/2 on a tie, 0 otherwise."""
    return np.where(np.abs(margins) < 1e-12, 0.5, (margins > 0).astype(float))


def gram(x: Any) -> np.ndarray:
    """The linear kernel ``x x^T`` as a dense array (rows of ``x`` are pairs or texts)."""
    k = x @ x.T
    return np.asarray(k.todense() if sparse.issparse(k) else k, dtype=float)


# Penalty of the kernel ridge judges, relative to the mean squared feature norm. Chosen once on real
# ShareGPT user turns vs ChatGPT replies (balanced accuracy 0.896 at 1.0, 0.904 at 0.3, 0.908 at 0.1); it
# cannot affect validity (every null refits with the same value), only power.
RIDGE = 0.3


def fold_smoothers(k: np.ndarray, folds: np.ndarray, ridge: float = RIDGE) -> list[tuple[np.ndarray, np.ndarray,
                                                                                        np.ndarray]]:
    """Per fold ``(train_idx, test_idx, K_te,tr (K_tr,tr + lam I)^-1)``: kernel ridge, one solve per fold.

    ``lam = ridge * mean(diag K)``, so the penalty is on the scale of the features and looks at no label.
    """
    scale = float(np.mean(np.diag(k))) if k.size else 0.0
    lam = ridge * (scale if scale > 0 else 1.0)  # all-zero features (identical sides): any lam, every margin is 0
    out = []
    for f in np.unique(folds):
        train, test = np.flatnonzero(folds != f), np.flatnonzero(folds == f)
        k_tr = k[np.ix_(train, train)] + lam * np.eye(len(train))
        out.append((train, test, np.linalg.solve(k_tr, k[np.ix_(train, test)]).T))
    return out


def cross_fit_margins(smoothers: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], signs: np.ndarray,
                      n: int) -> np.ndarray:
    """Out-of-fold pair margins (> 0: the pair's "real" side judged real) for pair orientations ``signs``.

    The pair model is kernel ridge regression of the target +1 on the oriented differences
    ``s_i (phi(real_i) - phi(sim_i))``, with no intercept: its score ``w . d`` is antisymmetric
    (swapping the two sides flips the sign). Flipping orientations with ``S = diag(s)`` maps the Gram
    matrix to ``S K S``, and ``(S K S + lam I)^-1 = S (K + lam I)^-1 S``, so the refit for any set of
    flips is a matrix-vector product with the fold's fixed smoother: margins ``s_te * M s_tr``.
    That makes thousands of exact refits (the permutation null) cost nothing.
    """
    margins = np.zeros(n)
    for train, test, m in smoothers:
        margins[test] = signs[test] * (m @ signs[train])
    return margins


@dataclass
class PairedResult:
    judge: str
    inference: Inference
    n_pairs: int
    n_users: int
    scores: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"judge": self.judge, **self.inference.to_dict(), "n_pairs": self.n_pairs, "n_users": self.n_users}


def paired_discrimination(judge: Judge, real: Sequence[str], candidate: Sequence[str], contexts: Sequence[Context],
                          users: Sequence[str], *, n_splits: int = 5, n_permutations: int = 200,
                          seed: int = 0, candidate_contexts: Sequence[Context] | None = None) -> PairedResult:
    """Cross-fitted paired accuracy of ``judge`` on (real, candidate) pairs, with its permutation null.

    Both sides of a pair are read in ``contexts`` (the usual case: two next turns for one context).
    ``candidate_contexts`` gives the candidate side its own context instead (e.g. a calibration that
    pairs two humans' turns, each in its own conversation); the null is the same, since under it the
    two (turn, context) sides of a pair are exchangeable.
    """
    n = len(real)
    cand_ctx = list(contexts) if candidate_contexts is None else list(candidate_contexts)
    if not (n == len(candidate) == len(contexts) == len(users) == len(cand_ctx)):
        raise ValueError(f"paired inputs differ in length: {n} real, {len(candidate)} candidate, "
                         f"{len(contexts)} contexts, {len(users)} users")
    users = [str(u) for u in users]
    distinct = sorted(set(users))
    if n < 4 or len(distinct) < 2:
        raise ValueError(f"paired discrimination needs >= 4 pairs from >= 2 users (got {n} pairs, "
                         f"{len(distinct)} users)")
    feats = judge.features(list(real) + list(candidate), list(contexts) + cand_ctx)
    smoothers = fold_smoothers(gram(feats[:n] - feats[n:]), user_folds(users, n_splits, seed))
    scores = pair_scores(cross_fit_margins(smoothers, np.ones(n), n))
    rng = np.random.default_rng(seed)
    user_index = np.array([distinct.index(u) for u in users])
    null = [float(pair_scores(cross_fit_margins(smoothers, rng.choice([-1.0, 1.0], size=len(distinct))[user_index],
                                                n)).mean()) for _ in range(n_permutations)]
    inference = permutation_inference(float(scores.mean()), null,
                                      cluster_ci=cluster_robust_interval(scores, users))
    return PairedResult(judge.name, inference, n, len(distinct), scores)


def complete_pairs(real: Sequence[str | None], candidate: Sequence[str | None],
                   capped: Sequence[bool]) -> tuple[list[int], dict[str, int]]:
    """Indices of items that form a complete pair, and why the others do not.

    ``real``/``candidate`` hold the turn text per item (None = that side ended the conversation);
    ``capped`` marks candidate turns cut by the token cap. Reasons: ``ended`` (either side ended),
    ``capped``, ``empty`` (a side with no text).
    """
    keep: list[int] = []
    dropped = {ENDED: 0, CAPPED: 0, EMPTY: 0}
    for i, (r, c, cap) in enumerate(zip(real, candidate, capped)):
        if r is None or c is None:
            dropped[ENDED] += 1
        elif cap:
            dropped[CAPPED] += 1
        elif not r.strip() or not c.strip():
            dropped[EMPTY] += 1
        else:
            keep.append(i)
    return keep, dropped
