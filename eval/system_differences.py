"""Is the simulator more human than its baselines? Paired accuracy differences on the same items.

For a judge and two systems (the trained simulator and a baseline: the untuned base or the prompted
user), every item that gave both systems a complete pair has two pair scores (1 = the judge picked
the real turn, 1/2 tie, 0 the system's). Their difference ``d_i = score_sim - score_baseline`` is
< 0 on average when the simulator is harder to tell from the human than the baseline, i.e. *more
human*. Reported per judge:

* ``value``: mean of ``d_i`` over the common items;
* ``ci_low, ci_high``: cluster-robust (CR1, users as clusters, t with G - 1 df) CI of that mean;
* ``p_value``: two-sided user-level sign-flip test of mean zero (each user's differences flip
  together; ``n_permutations`` draws), the randomisation test of "the two systems are equally
  often caught" that keeps a user's items together.

The two pair scores of an item come from judges cross-fitted separately for each system, so the
test treats the scores as given; it does not re-fit. ``more human`` is said only when the CI of the
headline judge lies entirely below 0 and the sign-flip p is below 0.05 (:func:`baselines_sentence`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from usersim.eval.permutation import cluster_robust_interval

BASELINE_LABELS = {"base": "the untuned base", "prompted": "the prompted instruct model"}


def paired_accuracy_difference(scores_a: Sequence[float], items_a: Sequence[int], scores_b: Sequence[float],
                               items_b: Sequence[int], users: Sequence[str], *, n_permutations: int = 2000,
                               seed: int = 0) -> dict[str, Any] | None:
    """``mean(score_a - score_b)`` over the items both systems were paired on (see the module docstring).

    ``items_x[k]`` is the item index of ``scores_x[k]``; ``users`` is indexed by item. None when no
    item is common to both.
    """
    pos_a = {i: k for k, i in enumerate(items_a)}
    pos_b = {i: k for k, i in enumerate(items_b)}
    common = sorted(set(pos_a) & set(pos_b))
    if not common:
        return None
    d = np.array([float(scores_a[pos_a[i]]) - float(scores_b[pos_b[i]]) for i in common])
    who = [str(users[i]) for i in common]
    lo, hi = cluster_robust_interval(d, who)
    distinct = sorted(set(who))
    index = np.array([distinct.index(u) for u in who])
    rng = np.random.default_rng(seed)
    flips = rng.choice([-1.0, 1.0], size=(n_permutations, len(distinct)))[:, index]
    null = (flips * d).mean(axis=1)
    observed = float(d.mean())
    p = (1 + int(np.sum(np.abs(null) >= abs(observed) - 1e-12))) / (1 + n_permutations)
    return {"value": observed, "ci_low": lo, "ci_high": hi, "p_value": float(min(1.0, p)), "n_pairs": int(d.size),
            "n_users": len(distinct)}


def paired_value_difference(values_a: Sequence[float], values_b: Sequence[float], users: Sequence[str], *,
                            n_permutations: int = 2000, seed: int = 0) -> dict[str, Any] | None:
    """``mean(a_i - b_i)`` of a per-item value of two systems (aligned by item; NaN = the item does not apply to
    that system, e.g. a turn that ended the conversation), with the same CI and sign-flip test as the paired
    accuracies (the module docstring). None when no item has both values."""
    a, b = np.asarray(values_a, float), np.asarray(values_b, float)
    both = [i for i in range(len(a)) if np.isfinite(a[i]) and np.isfinite(b[i])]
    return paired_accuracy_difference(a[both], both, b[both], both, users, n_permutations=n_permutations, seed=seed)


def system_differences(results: Mapping[str, tuple[Mapping[str, Any], Sequence[int]]], users: Sequence[str], *,
                       simulator: str, baselines: Sequence[str], n_permutations: int,
                       seed: int) -> dict[str, dict[str, Any]]:
    """``{"<simulator>_minus_<baseline>": {"paired_accuracy[_judge]": difference}}`` for every judge both ran.

    ``results[system] = ({judge: result with .scores}, item indices of the scores)``. The metric names
    follow the paired accuracies' (``paired_accuracy`` = fast, ``paired_accuracy_<judge>`` otherwise).
    """
    out: dict[str, dict[str, Any]] = {}
    if simulator not in results:
        return out
    sim_res, sim_items = results[simulator]
    for baseline in baselines:
        if baseline not in results:
            continue
        base_res, base_items = results[baseline]
        body: dict[str, Any] = {}
        for judge in sim_res:
            if judge not in base_res:
                continue
            diff = paired_accuracy_difference(sim_res[judge].scores, sim_items, base_res[judge].scores, base_items,
                                              users, n_permutations=n_permutations, seed=seed)
            if diff is not None:
                body["paired_accuracy" + ("" if judge == "fast" else f"_{judge}")] = {**diff, "judge": judge}
        if body:
            out[f"{simulator}_minus_{baseline}"] = body
    return out


def baselines_sentence(differences: Mapping[str, Mapping[str, Any]], judge: str, simulator: str = "simulator") -> str:
    """One sentence per baseline for the headline judge: more human / less human / no difference shown."""
    key = "paired_accuracy" + ("" if judge == "fast" else f"_{judge}")
    parts = []
    for baseline, label in BASELINE_LABELS.items():
        d = (differences.get(f"{simulator}_minus_{baseline}") or {}).get(key)
        if not d or d.get("ci_low") is None or d.get("ci_high") is None:
            continue
        nums = f"{d['value']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}], p = {d['p_value']:.2g}"
        significant = d.get("p_value") is None or d["p_value"] < 0.05  # CI and sign-flip test must agree
        if d["ci_high"] < 0 and significant:
            parts.append(f"more human than {label} ({nums})")
        elif d["ci_low"] > 0 and significant:
            parts.append(f"less human than {label} ({nums})")
        else:
            parts.append(f"not shown to differ from {label} ({nums})")
    if not parts:
        return ""
    return (f"Against the baselines, on the same items ({judge} judge; the simulator's accuracy minus the "
            f"baseline's, < 0 = harder to tell from the human): " + "; ".join(parts) + ".")
