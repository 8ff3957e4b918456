"""Which judge gives the headline: chosen on *validation* users, before the test split is seen.

With several judges, taking the one whose test accuracy is highest (or lowest) would be a choice
made after seeing the answer. Here the choice is made on the data run's validation users, who are
disjoint from the test users, with the trained simulator, before any test item is generated:

* **power**, per judge: the paired accuracy against the trained simulator's own turn on validation
  items, i.e. the headline's own comparison on other users. The same user's real turn from another
  context (right person, wrong moment) is measured and stored beside it but does not enter the
  choice: a judge can be strong there (it reads the user's habits) and weak against the simulator
  (measured on a default run: neural 0.81 vs 0.64), and the headline is about the simulator;
* **null**, per judge: the unpaired human-vs-human control on the validation items' real turns (two
  disjoint user groups) must not be rejected at alpha / (number of judges);
* the headline judge is the most powerful judge that passes its null; ties (equal power to 3
  decimals) go to the earlier judge of ``preference``. If no judge passes, the first of
  ``preference`` is taken and the reason says so.

``usersim eval`` runs this when ``headline_judge: auto`` (EvalConfig's default; configs/eval/default.yaml fixes
lm); a named judge is used as
given ("fixed in the config"). metrics.json["judge_selection"] holds the table and the reason; the
other judges stay in every table.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from usersim.eval.controls import judge_alpha, same_user_other_turns, split_users
from usersim.eval.discriminators import discriminate
from usersim.eval.judges import Judge, item_context
from usersim.eval.paired import complete_pairs, paired_discrimination

AUTO = "auto"


def choose_headline_judge(scores: Mapping[str, Mapping[str, Any]], preference: Sequence[str]) -> tuple[str, str]:
    """(judge, reason) from per-judge ``{"power": float, "passed_null": bool}``; see the module docstring."""
    order = [j for j in preference if j in scores] + [j for j in scores if j not in preference]
    if not order:
        raise ValueError("no judge to choose from")
    passing = [j for j in order if scores[j].get("passed_null") and scores[j].get("power") is not None]
    if not passing:
        return order[0], f"no judge passed the validation null; {order[0]} taken by the fixed preference order"
    best = max(passing, key=lambda j: (round(float(scores[j]["power"]), 3), -order.index(j)))
    others = ", ".join(f"{j} {float(scores[j]['power']):.3f}" for j in passing if j != best)
    return best, (f"most powerful judge on validation users that passed the validation null: {best} "
                  f"{float(scores[best]['power']):.3f}" + (f" (others: {others})" if others else ""))


def validation_judge_scores(judges: Mapping[str, Judge], items: Sequence[Mapping[str, Any]],
                            simulated: Sequence[str | None], simulated_capped: Sequence[bool],
                            pool: Sequence[Mapping[str, Any]], *, n_splits: int, n_permutations: int,
                            seed: int) -> dict[str, dict[str, Any]]:
    """Per judge: paired accuracy vs the simulator (``power``; the other-context turn's if the simulator
    gave too few pairs) and vs the same user's other-context turn, and the unpaired human-vs-human
    p-value on the same validation items."""
    users = [str(it["user_id"]) for it in items]
    contexts = [item_context(it["history"]) for it in items]
    real = [None if it["target_is_end"] else str(it["target"]) for it in items]
    other = same_user_other_turns(items, pool, seed)
    positives = {"simulator": (simulated, simulated_capped), "same_user_other_context": (other, [False] * len(other))}
    for j in judges.values():
        if j.warm is not None:
            j.warm([t for t in real + list(simulated) + other if t is not None],
                   [c for t, c in zip(real + list(simulated) + other, contexts * 3) if t is not None])
    out: dict[str, dict[str, Any]] = {name: {} for name in judges}
    for pos, (cand, capped) in positives.items():
        keep, _ = complete_pairs(real, cand, capped)
        if len(keep) < 4 or len({users[i] for i in keep}) < 2:
            continue
        for name, judge in judges.items():
            r = paired_discrimination(judge, [real[i] for i in keep], [cand[i] for i in keep],
                                      [contexts[i] for i in keep], [users[i] for i in keep], n_splits=n_splits,
                                      n_permutations=n_permutations, seed=seed)
            out[name][pos] = {"accuracy": r.inference.accuracy, "p_value": r.inference.p_value,
                              "n_pairs": r.n_pairs}
    group_a, _ = split_users(users, seed)
    a = [(t, u, c) for t, u, c in zip(real, users, contexts) if t is not None and u in group_a]
    b = [(t, u, c) for t, u, c in zip(real, users, contexts) if t is not None and u not in group_a]
    for name, judge in judges.items():
        source = next((p for p in positives if p in out[name]), None)
        out[name]["power"] = out[name][source]["accuracy"] if source else None
        out[name]["power_from"] = source
        r = discriminate(judge, [t for t, _, _ in a], [u for _, u, _ in a], [t for t, _, _ in b],
                         [u for _, u, _ in b], real_contexts=[c for _, _, c in a],
                         candidate_contexts=[c for _, _, c in b], n_splits=n_splits,
                         n_permutations=n_permutations, seed=seed)
        out[name]["null_p_value"] = r.accuracy.p_value
        out[name]["passed_null"] = bool(r.accuracy.p_value >= judge_alpha(len(judges)))
    return out
