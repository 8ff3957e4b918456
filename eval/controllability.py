"""Controllability: does the simulator follow the condition it is given?

For the same history, the simulator writes the next turn once with the user's own condition and
once with another held-out user's condition swapped in (persona, goal, knowledge and style all
swapped). Adherence is measured against the *requested* condition and, as a contrast, the
unrequested one:

* style match   — share of the condition's style buckets the turn hits (usersim.eval.style_features);
* topic overlap — share of the turn's content tokens found in the condition's goal, persona and
  knowledge items.

A simulator that follows its condition shows a positive gap (requested - unrequested) for the
swapped generations; one that ignores it shows a gap around 0.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

import numpy as np

from usersim.eval.bootstrap import bootstrap_by_user
from usersim.eval.failure_modes import style_mismatch
from usersim.eval.registry import HUMAN, Metric
from usersim.eval.style_features import content_tokens


def swapped_conditions(items: Sequence[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """For each item, the condition of a randomly chosen item of a *different* user (seeded)."""
    by_user: dict[str, dict[str, Any]] = {}
    for it in items:
        by_user.setdefault(str(it["user_id"]), it["condition"])
    users = sorted(by_user)
    if len(users) < 2:
        raise ValueError("controllability needs held-out items from at least 2 users")
    rng = random.Random(seed)
    out = []
    for it in items:
        other = rng.choice([u for u in users if u != str(it["user_id"])])
        out.append(by_user[other])
    return out


def condition_tokens(condition: dict[str, Any] | None) -> set[str]:
    c = condition or {}
    parts = [c.get("persona") or "", c.get("goal") or ""]
    parts += list(c.get("knowledge_discloses") or []) + list(c.get("knowledge_asks") or [])
    return content_tokens(" ".join(parts))


def topic_overlap(text: str | None, condition: dict[str, Any] | None) -> float:
    """Share of the turn's content tokens that appear in the condition (NaN without content)."""
    if not text:
        return float("nan")
    toks = content_tokens(text)
    cond = condition_tokens(condition)
    if not toks or not cond:
        return float("nan")
    return len(toks & cond) / len(toks)


def style_match(text: str | None, condition: dict[str, Any] | None) -> float:
    if not text:
        return float("nan")
    return 1.0 - style_mismatch(text, (condition or {}).get("style"))


def _mean(arr: np.ndarray, ix: np.ndarray) -> float:
    sel = arr[ix]
    sel = sel[np.isfinite(sel)]
    return float(sel.mean()) if sel.size else float("nan")


def controllability_metrics(
    items: Sequence[dict[str, Any]],
    real_texts: Sequence[str | None],
    own_texts: Sequence[str | None],
    swapped_texts: Sequence[str | None],
    swapped: Sequence[dict[str, Any]],
    *,
    system: str = "simulator",
    n_boot: int = 1000,
    seed: int = 0,
) -> list[Metric]:
    """Adherence to the own vs swapped condition, with the real turn as the human reference."""
    users = [str(it["user_id"]) for it in items]
    own = [it["condition"] for it in items]
    out: list[Metric] = []

    def add(name, arr, ref_arr, hib, target, desc):
        v, lo, hi = bootstrap_by_user(users, lambda ix: _mean(arr, ix), n_boot=n_boot, seed=seed)
        ref = _mean(ref_arr, np.arange(len(items))) if ref_arr is not None else None
        out.append(Metric(name, system, "controllability", v, lo, hi, int(np.isfinite(arr).sum()), hib, ref,
                          target, desc))

    human_style = np.array([style_match(t, c) for t, c in zip(real_texts, own)])
    add("control_style_match_own", np.array([style_match(t, c) for t, c in zip(own_texts, own)]), human_style,
        True, None, "share of the user's own requested style buckets hit (human: the real turn)")
    add("control_style_match_swapped", np.array([style_match(t, c) for t, c in zip(swapped_texts, swapped)]),
        None, True, None, "share of the swapped-in condition's style buckets hit by the swapped generation")
    add("control_style_gap_swapped",
        np.array([style_match(t, s) - style_match(t, c) for t, s, c in zip(swapped_texts, swapped, own)]),
        None, True, 0.0, "style match with the requested (swapped) minus the unrequested (own) condition; > 0 = "
        "follows the style condition")
    human_gap = np.array([topic_overlap(t, c) - topic_overlap(t, s) for t, c, s in zip(real_texts, own, swapped)])
    add("control_topic_gap_own",
        np.array([topic_overlap(t, c) - topic_overlap(t, s) for t, c, s in zip(own_texts, own, swapped)]),
        human_gap, True, None, "content-token overlap with the own minus the swapped condition, own-condition "
        "generation (human: the real turn)")
    add("control_topic_gap_swapped",
        np.array([topic_overlap(t, s) - topic_overlap(t, c) for t, s, c in zip(swapped_texts, swapped, own)]),
        None, True, 0.0, "content-token overlap with the requested (swapped) minus the unrequested (own) "
        "condition; > 0 = follows goal/knowledge/persona")
    return out


__all__ = ["swapped_conditions", "topic_overlap", "style_match", "controllability_metrics", "HUMAN"]
