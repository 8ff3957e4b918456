"""Inference for discrimination accuracies: permutation null, test-inverting CI, cluster-robust CI, MDE.

Every discrimination number in this project is an out-of-fold accuracy of a judge that was fitted
on the same data. Its sampling distribution at small n is neither centred where one expects nor
well described by a bootstrap over a dozen users (measured on pure noise: a user-bootstrap
percentile interval excluded 0.5 in 24% of runs). So every accuracy is read against its own
*permutation null*: the whole cross-fitting is re-run with the labels permuted in the way the null
hypothesis says is harmless, which gives an exact test whatever the judge, the folds or n.

From one observed accuracy ``a`` and the null accuracies ``a_1..a_B``:

* ``p_value`` (two-sided): ``(1 + #{|a_b - c| >= |a - c|}) / (B + 1)`` with ``c`` = chance (0.5).
  Exact (valid at every n) under the permutation null.
* ``null_low, null_high``: the 2.5% and 97.5% quantiles of the null accuracies, i.e. where
  indistinguishable systems land at this n.
* CI by test inversion under a location shift: ``[a - (null_high - c), a + (c - null_low)]``. It
  covers ``c`` exactly when the test does not reject, so under the null it covers at the nominal
  rate; a judge whose null is biased (e.g. below chance at small n) gets its interval shifted back.
  Where a cluster-robust interval (see :func:`cluster_robust_interval`) is given, the reported CI
  is the union of both: the null spread is the spread of coin flips, while real differences
  between users can make an accuracy vary more than that.
* ``mde``: the smallest |accuracy - c| the test detects with probability 0.8 at two-sided
  alpha = 0.05, ``(z_0.975 + z_0.8) * sd(null)`` (normal approximation): about 1.4 / sqrt(n)
  for n independent pairs.
* ``debias=True`` (the unpaired test, usersim.eval.discriminators): the point estimate is
  ``a - (mean(null) - c)``, the raw ``a`` is kept as ``accuracy_raw``. Under the null the observed
  labelling is one uniform draw from the permutations, so ``E[a] = E[mean(null)]`` and the estimate
  is *exactly* unbiased whatever the small-n cross-validation does (measured on real chitchat
  humans at the default run's size: raw null means 0.4994 to 0.5057, see eval/METRICS.md). It is
  the point estimate that goes with the test-inverting CI (which, being a location-shift inversion,
  always contains it); the p-value and the CI are those of the raw ``a``, unchanged. The paired
  test needs no debiasing: flipping one user's pairs negates their out-of-fold margins, so its
  exact null mean is 0.5 for any data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy.stats import norm, t as student_t

CHANCE = 0.5
ALPHA = 0.05
POWER = 0.8


@dataclass
class Inference:
    """One accuracy with its permutation inference (see the module docstring)."""

    accuracy: float
    ci_low: float
    ci_high: float
    p_value: float
    null_low: float
    null_high: float
    null_mean: float
    mde: float
    n_permutations: int
    # with ``debias``: the observed accuracy before the null mean's offset was taken off (else None,
    # and ``accuracy`` is the observed accuracy itself)
    accuracy_raw: float | None = None

    def to_dict(self) -> dict[str, float]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()
                if not (k == "accuracy_raw" and v is None)}

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    @property
    def below_chance(self) -> bool:
        return self.significant and self.accuracy < CHANCE


def minimum_detectable_effect(null_sd: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest |accuracy - chance| detected with ``power`` at two-sided ``alpha``, given the null SD."""
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * null_sd)


def cluster_robust_interval(scores: Sequence[float], clusters: Sequence[str],
                            confidence: float = 0.95) -> tuple[float, float]:
    """CI of the mean of ``scores`` that treats each cluster (user) as one unit.

    Cluster-robust (CR1) standard error of a mean, ``t`` quantile with G - 1 degrees of freedom
    (G = number of clusters), the usual small-G correction (Cameron & Miller 2015, "A Practitioner's
    Guide to Cluster-Robust Inference", sections II.C and VI).
    """
    s = np.asarray(scores, dtype=float)
    ids = np.asarray([str(c) for c in clusters])
    groups = np.unique(ids)
    g = len(groups)
    if g < 2 or s.size == 0:
        return float("nan"), float("nan")
    mean = float(s.mean())
    totals = np.array([(s[ids == c] - mean).sum() for c in groups])
    se = float(np.sqrt(g / (g - 1) * np.sum(totals ** 2)) / s.size)
    half = float(student_t.ppf(0.5 + confidence / 2, df=g - 1)) * se
    return mean - half, mean + half


def permutation_inference(observed: float, null: Sequence[float], *, chance: float = CHANCE,
                          cluster_ci: tuple[float, float] | None = None, debias: bool = False) -> Inference:
    """p-value, null band, test-inverting CI and MDE of ``observed`` against its null accuracies.

    ``debias``: report ``observed - (mean(null) - chance)`` (clipped to [0, 1]) as the accuracy and
    ``observed`` as ``accuracy_raw``; p-value, null band, CI and MDE are the same either way.
    """
    null_arr = np.asarray([x for x in null if np.isfinite(x)], dtype=float)
    if null_arr.size == 0:
        nan = float("nan")
        return Inference(float(observed), nan, nan, nan, nan, nan, nan, nan, 0,
                         float(observed) if debias else None)
    lo_q, hi_q = np.quantile(null_arr, [ALPHA / 2, 1 - ALPHA / 2])
    dev = abs(observed - chance)
    # a tiny tolerance: a permuted accuracy equal to the observed one (common with few pairs) counts
    extreme = int(np.sum(np.abs(null_arr - chance) >= dev - 1e-12))
    p = (1 + extreme) / (1 + null_arr.size)
    ci_low, ci_high = observed - (hi_q - chance), observed + (chance - lo_q)
    if cluster_ci is not None and all(np.isfinite(cluster_ci)):
        ci_low, ci_high = min(ci_low, cluster_ci[0]), max(ci_high, cluster_ci[1])
    ci_low, ci_high = max(0.0, ci_low), min(1.0, ci_high)
    null_mean = float(null_arr.mean())
    estimate = float(np.clip(observed - (null_mean - chance), 0.0, 1.0)) if debias else float(observed)
    return Inference(estimate, float(ci_low), float(ci_high), float(min(1.0, p)), float(lo_q), float(hi_q),
                     null_mean, minimum_detectable_effect(float(null_arr.std(ddof=1))),
                     int(null_arr.size), float(observed) if debias else None)
