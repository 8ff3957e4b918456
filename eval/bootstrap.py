"""Confidence intervals that respect who wrote what: bootstrap over *users*.

Turns of one user are not independent (same habits, same topic), so every CI here resamples
users with replacement and takes all of a resampled user's items; the percentile interval of the
statistic over resamples is the 95% CI. Seeded: the same inputs and seed give the same interval.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def user_index_groups(user_ids: Sequence[str]) -> list[np.ndarray]:
    """Item indices of each distinct user, in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, u in enumerate(user_ids):
        groups.setdefault(str(u), []).append(i)
    return [np.asarray(ix, dtype=int) for ix in groups.values()]


def bootstrap_by_user(
    user_ids: Sequence[str],
    statistic: Callable[[np.ndarray], float],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """``(value, ci_low, ci_high)`` of ``statistic(item_indices)``, resampling users.

    ``statistic`` receives an int array of item indices (with repeats) and returns a float;
    resamples where it returns NaN (e.g. no item of a needed kind) are skipped.
    """
    groups = user_index_groups(user_ids)
    if not groups:
        return float("nan"), float("nan"), float("nan")
    value = float(statistic(np.concatenate(groups)))
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        picks = rng.integers(0, len(groups), size=len(groups))
        s = float(statistic(np.concatenate([groups[p] for p in picks])))
        if np.isfinite(s):
            stats.append(s)
    if not stats:
        return value, float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return value, float(lo), float(hi)


def abs_difference_by_user(user_ids: Sequence[str], difference: Callable[[np.ndarray], float], *,
                           n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """``|d|`` of a signed difference ``d``, with the CI that the user-resampling CI of ``d`` implies.

    ``[0, max(|lo|, |hi|)]`` when the CI of ``d`` holds 0, else ``[min, max]`` of ``|lo|, |hi|``. The
    percentile bootstrap of ``|d|`` itself is biased away from 0 (near 0 every resample's ``|d*|`` is
    positive), so a point estimate near 0 can fall below its own interval.
    """
    value, lo, hi = bootstrap_by_user(user_ids, difference, n_boot=n_boot, seed=seed)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return abs(value), lo, hi
    low = 0.0 if lo <= 0.0 <= hi else min(abs(lo), abs(hi))
    return abs(value), low, max(abs(lo), abs(hi))


def bootstrap_mean_by_user(values: Sequence[float], user_ids: Sequence[str], *, n_boot: int = 1000,
                           seed: int = 0) -> tuple[float, float, float]:
    """Mean over items with a user-resampling CI (NaN values are ignored)."""
    arr = np.asarray(values, dtype=float)

    def mean(ix: np.ndarray) -> float:
        sel = arr[ix]
        sel = sel[np.isfinite(sel)]
        return float(sel.mean()) if sel.size else float("nan")

    return bootstrap_by_user(user_ids, mean, n_boot=n_boot, seed=seed)
