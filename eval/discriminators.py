"""Unpaired discrimination: two sets of turns (real humans, candidates), can a judge tell the sets apart?

This is ``usersim discriminate`` on two files, and eval's human-vs-human control. Where the turns come
in pairs (the same context answered by a human and by a simulator) use usersim.eval.paired instead: it has
more power and a cleaner null.

Protocol: every text is featurised once by a judge (usersim.eval.judges; no label is looked at), a kernel
ridge classifier on the +-1 labels (centred on the training fold's mean, so no class prior is learnt)
is cross-fitted with folds grouped by user (a user's turns are never on both sides of a fold), and
the out-of-fold scores give the *balanced* accuracy (mean of the two per-class recalls: 0.5 for any
judge that ignores the label, whatever the class sizes) and the ROC AUC.

Inference (usersim.eval.permutation): the labels are permuted at the level of (user, label) blocks, keeping
how many blocks each side has (a user's turns keep one label together), and the whole cross-fitting is
re-run for every permutation. The p-value is exact; the CI inverts that test, so under a realistic
null (two samples of the same humans) it covers 0.5 at the nominal rate. Measured: see tests
(``test_unpaired_ci_covers_at_nominal_rate``, tests/test_eval_unpaired_bias.py) and eval/METRICS.md.

Point estimate: a cross-fitted accuracy is not centred at 0.5 under the null at small n (the training
folds' label balance moves against the test fold's; centring the targets takes most of that out, but
not all: the permutation null's mean was 0.4994 to 0.5057 on real chitchat humans at the default run's
size, and 0.480 without the centring). So ``accuracy`` (and ``auc``) is the observed value minus its
own null's offset, ``observed - (null_mean - 0.5)``: exactly unbiased under the permutation null, free
(the null is computed anyway). The raw values are ``accuracy_raw`` and ``auc_raw``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_curve

from usersim.eval.judges import NO_CONTEXT, Context, Judge
from usersim.eval.paired import fold_smoothers, gram, user_folds
from usersim.eval.permutation import Inference, permutation_inference


@dataclass
class DiscriminatorResult:
    judge: str
    accuracy: Inference
    auc: Inference
    n_real: int
    n_candidate: int
    n_users: int
    roc: dict[str, list[float]] = field(default_factory=dict, repr=False)

    def to_dict(self, with_roc: bool = False) -> dict[str, Any]:
        auc_raw = self.auc.accuracy if self.auc.accuracy_raw is None else self.auc.accuracy_raw
        out = {"judge": self.judge, **self.accuracy.to_dict(), "auc": round(self.auc.accuracy, 4),
               "auc_raw": round(auc_raw, 4), "auc_ci_low": round(self.auc.ci_low, 4),
               "auc_ci_high": round(self.auc.ci_high, 4), "auc_p_value": round(self.auc.p_value, 4),
               "n_real": self.n_real,
               "n_candidate": self.n_candidate, "n_users": self.n_users}
        if with_roc:
            out["roc"] = self.roc
        return out

    def covers_chance(self) -> bool:
        return self.accuracy.ci_low <= 0.5 <= self.accuracy.ci_high


def balanced_accuracy(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean of the per-class recalls of ``score > 0`` (a score of exactly 0 counts half)."""
    hit = np.where(scores == 0, 0.5, ((scores > 0) == (labels > 0)).astype(float))
    return float(0.5 * (hit[labels > 0].mean() + hit[labels <= 0].mean()))


def safe_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half); NaN with one class only."""
    pos = labels > 0
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def out_of_fold_scores(smoothers, labels: np.ndarray) -> np.ndarray:
    """Kernel-ridge scores of every row from the model fitted without its fold (targets centred)."""
    scores = np.zeros(len(labels))
    for train, test, m in smoothers:
        y = labels[train]
        scores[test] = m @ (y - y.mean())
    return scores


def _roc_points(labels: np.ndarray, scores: np.ndarray, max_points: int = 101) -> dict[str, list[float]]:
    fpr, tpr, _ = roc_curve(labels > 0, scores)
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": [round(float(x), 4) for x in fpr], "tpr": [round(float(x), 4) for x in tpr]}


def discriminate(judge: Judge, real_texts: Sequence[str], real_users: Sequence[str], candidate_texts: Sequence[str],
                 candidate_users: Sequence[str], *, real_contexts: Sequence[Context] | None = None,
                 candidate_contexts: Sequence[Context] | None = None, n_splits: int = 5,
                 n_permutations: int = 1000, seed: int = 0) -> DiscriminatorResult:
    """Cross-fitted real-vs-candidate balanced accuracy and AUC with permutation inference.

    ``accuracy``/``auc`` are debiased by their permutation null's mean (see the module docstring); the
    raw cross-fitted values are ``accuracy.accuracy_raw`` and ``auc.accuracy_raw``."""
    texts = list(real_texts) + list(candidate_texts)
    labels = np.r_[-np.ones(len(real_texts)), np.ones(len(candidate_texts))]
    users = [str(u) for u in list(real_users) + list(candidate_users)]
    n_users = len(set(users))
    if len(real_texts) < 2 or len(candidate_texts) < 2 or n_users < 2:
        raise ValueError(f"discriminator {judge.name!r} needs >= 2 real and >= 2 candidate turns from >= 2 users "
                         f"(got {len(real_texts)} real, {len(candidate_texts)} candidate, {n_users} users)")
    contexts = (list(real_contexts or [NO_CONTEXT] * len(real_texts))
                + list(candidate_contexts or [NO_CONTEXT] * len(candidate_texts)))
    smoothers = fold_smoothers(gram(judge.features(texts, contexts)), user_folds(users, n_splits, seed))
    scores = out_of_fold_scores(smoothers, labels)
    # permutation units: (user, label) blocks; a permutation deals the observed labels out to the blocks
    blocks = sorted({(u, lab) for u, lab in zip(users, labels)})
    block_of = np.array([blocks.index((u, lab)) for u, lab in zip(users, labels)])
    block_labels = np.array([lab for _, lab in blocks])
    rng = np.random.default_rng(seed)
    null_acc, null_auc = [], []
    for _ in range(n_permutations):
        perm = rng.permutation(block_labels)[block_of]
        s = out_of_fold_scores(smoothers, perm)
        null_acc.append(balanced_accuracy(perm, s))
        null_auc.append(safe_auc(perm, s))
    return DiscriminatorResult(judge.name,
                               permutation_inference(balanced_accuracy(labels, scores), null_acc, debias=True),
                               permutation_inference(safe_auc(labels, scores), null_auc, debias=True),
                               len(real_texts), len(candidate_texts), n_users, _roc_points(labels, scores))
