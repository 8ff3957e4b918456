"""Does the simulator read its condition? Teacher-forced, on held-out users, one field at a time.

A simulator that follows a condition gives the real user's turns a higher likelihood under the user's own
condition than under a counterfactual one. Each held-out conversation is cut to the whole turns that fit
``max_tokens`` with its own condition (:func:`opening`), and its user turns (the supervised tokens of
training: text + EOS, and the end marker when kept) are scored in one window (usersim.eval.perplexity's
``window_nll``), once with the own condition and once per counterfactual (:func:`counterfactuals`), so every
variant scores the very same tokens (checked) and only the header differs:

- ``style=blank``: no style line; ``style=swapped``: another conversation's style (a seeded derangement among
  conversations whose style differs);
- ``<key>=flip`` per style key: only that bucket changed, to a far value (:data:`FLIPS`);
- ``goal=swapped``, ``knowledge=swapped``, ``persona=swapped``: that field from another conversation (only
  conversations that have it take part).

The cost of a counterfactual is the extra NLL per user token, in millinats (1000 * (sum NLL_counterfactual -
sum NLL_own) / sum tokens), with a 95% CI from resampling users: 0 = the model ignores what was changed,
> 0 = it reads it. The untuned base is the floor (a base LM already copies goal and knowledge words from its
context). It needs no sampling and no judge, so it separates "was the condition learned" from "does the
decoding show it". ``usersim eval`` reports it with ``condition_use_conversations`` > 0
(:func:`condition_use_metrics`); bench/condition_use.py runs it on several models and on first turns.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from usersim.data_prep.prompt_format import IGNORE_INDEX, Condition, tokenize_conversation
from usersim.data_prep.schema import Turn
from usersim.eval.bootstrap import bootstrap_by_user
from usersim.eval.perplexity import Window, record_windows, window_nll
from usersim.eval.registry import BASE, SIMULATOR, Metric

FLIPS = {  # one far bucket per style key (usersim.data_prep.style)
    "length": {"short": "long", "medium": "short", "long": "short"},
    "casing": {"lower": "proper", "proper": "lower", "mixed": "proper"},
    "punctuation": {"none": "heavy", "light": "heavy", "heavy": "none"},
    "emoji": {"none": "some", "some": "none"},
    "typos": {"none": "many", "some": "none", "many": "none"},
}


VARIANTS = ("style=blank", "style=swapped", *(f"{key}=flip" for key in FLIPS), "goal=swapped", "persona=swapped",
            "knowledge=swapped")  # every counterfactual, in counterfactuals' order


def check_variants(variants: Sequence[str]) -> None:
    """A clear error for an unknown counterfactual name (before any model work)."""
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"unknown condition_use variants {unknown}; known: {list(VARIANTS)}")


def derangement(n: int, rng: random.Random, ok: Callable[[int, int], bool]) -> list[int | None]:
    """For each i a partner j != i with ok(i, j) (None if none is found in 50 draws); seeded."""
    out: list[int | None] = []
    for i in range(n):
        partner = None
        for _ in range(50):
            j = rng.randrange(n)
            if j != i and ok(i, j):
                partner = j
                break
        out.append(partner)
    return out


def counterfactuals(conditions: Sequence[Any], seed: int) -> dict[str, list[Any]]:
    """name -> per conversation the counterfactual Condition (None where it does not apply)."""
    rng = random.Random(seed)
    n = len(conditions)
    out: dict[str, list[Any]] = {}
    out["style=blank"] = [replace(c, style={}) if c.style else None for c in conditions]
    partner = derangement(n, rng, lambda i, j: bool(conditions[j].style) and conditions[j].style != conditions[i].style)
    out["style=swapped"] = [replace(c, style=dict(conditions[j].style)) if c.style and j is not None else None
                            for c, j in zip(conditions, partner)]
    for key, flip in FLIPS.items():
        out[f"{key}=flip"] = [replace(c, style={**c.style, key: flip[c.style[key]]}) if c.style.get(key) in flip
                              else None for c in conditions]
    for name, has, put in (
        ("goal", lambda c: bool(c.goal), lambda c, d: replace(c, goal=d.goal)),
        ("persona", lambda c: bool(c.persona), lambda c, d: replace(c, persona=d.persona)),
        ("knowledge", lambda c: bool(c.knowledge_discloses or c.knowledge_asks),
         lambda c, d: replace(c, knowledge_discloses=list(d.knowledge_discloses), knowledge_asks=list(d.knowledge_asks))),
    ):
        partner = derangement(n, rng, lambda i, j, has=has: has(conditions[i]) and has(conditions[j]))
        out[f"{name}=swapped"] = [put(c, conditions[j]) if has(c) and j is not None else None
                                  for c, j in zip(conditions, partner)]
    return out


def first_span(labels: Sequence[int]) -> list[int]:
    """Labels with only the first run of supervised tokens kept (the conversation's first user turn)."""
    out, started, ended = [], False, False
    for lab in labels:
        keep = lab != IGNORE_INDEX and not ended
        started |= keep
        ended |= started and lab == IGNORE_INDEX
        out.append(lab if keep else IGNORE_INDEX)
    return out


def opening(record: Mapping[str, Any], condition: Any, tokenizer: Any, budget: int) -> dict[str, Any]:
    """The record cut to its longest prefix of whole turns that fits ``budget`` tokens with ``condition``.

    Every counterfactual of a conversation then scores the same target tokens in one uncapped window
    (a capped window would drop other turns for a longer header, and score other tokens).
    """
    turns = [Turn(t["role"], t["text"]) for t in record["turns"]]
    end = bool(record.get("end_of_conversation"))

    def length(k: int) -> int:
        return len(tokenize_conversation(condition, turns[:k], tokenizer,
                                         end_of_conversation=end and k == len(turns)).input_ids)

    n = 1  # grow from the opening (the length grows with k): a few short prefixes, not the whole conversation
    while n < len(turns) and length(n + 1) <= budget:
        n += 1
    row = dict(record)
    row["turns"] = list(record["turns"])[:n]
    row["end_of_conversation"] = end and n == len(turns)
    return row


def score(sim: Any, records: Sequence[Mapping[str, Any]], conditions: Sequence[Any], *, batch_size: int,
          first_turn_only: bool = False) -> list[tuple[float, int]]:
    """(summed NLL, tokens) of each record's user turns under the given conditions, one window each."""

    windows: list[Window] = []
    for r, (record, condition) in enumerate(zip(records, conditions)):
        row = dict(record)
        row["condition"] = condition.to_row()
        (ids, labels), = record_windows(row, sim.tokenizer, 0)[0]
        if first_turn_only:  # a causal LM scores the first turn the same without the turns after it
            labels = first_span(labels)
            stop = max(i for i, lab in enumerate(labels) if lab != IGNORE_INDEX) + 1
            ids, labels = ids[:stop], labels[:stop]
        windows.append(Window(r, ids, labels))
    out = [[0.0, 0] for _ in records]
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].ids))
    for s in range(0, len(order), batch_size):
        batch = [windows[i] for i in order[s:s + batch_size]]
        for w, (nll, n) in zip(batch, window_nll(sim.model, batch, sim.tokenizer.pad_token_id)):
            out[w.record][0] += nll
            out[w.record][1] += n
    return [(a, b) for a, b in out]


def cost_with_ci(own: Sequence[tuple[float, int]], other: Sequence[tuple[float, int] | None], users: Sequence[str],
                 n_boot: int, seed: int) -> dict[str, Any]:
    """Millinats per user token that the counterfactual costs, over the records where it applies."""

    keep = [i for i, o in enumerate(other) if o is not None]
    if not keep:
        return {"millinats_per_token": None, "n_conversations": 0}
    diff = np.asarray([other[i][0] - own[i][0] for i in keep])
    tokens = np.asarray([own[i][1] for i in keep], dtype=float)
    u = [users[i] for i in keep]

    def stat(ix: np.ndarray) -> float:
        return 1000.0 * diff[ix].sum() / tokens[ix].sum()

    value, low, high = bootstrap_by_user(u, stat, n_boot=n_boot, seed=seed)
    return {"millinats_per_token": round(value, 2), "ci": [round(low, 2), round(high, 2)],
            "n_conversations": len(keep), "n_users": len(set(u)), "n_tokens": int(tokens.sum())}


def condition_costs(sim: Any, records: Sequence[Mapping[str, Any]], *, max_tokens: int, seed: int, n_boot: int,
                    batch_size: int = 8, variants: Sequence[str] = (), first_turn_only: bool = False,
                    progress: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """``{"nll_per_token_own": ..., <variant>: cost_with_ci(...)}`` for ``sim`` as it is (adapter on or off)
    on ``records``; ``variants`` [] = every counterfactual. ``progress(variant, result)`` after each one."""
    users = [str(r["user_id"]) for r in records]
    conditions = [Condition.from_row(r["condition"]) for r in records]
    check_variants(variants)
    every = counterfactuals(conditions, seed)
    cut = [opening(r, c, sim.tokenizer, max_tokens) for r, c in zip(records, conditions)]
    own = score(sim, cut, conditions, batch_size=batch_size, first_turn_only=first_turn_only)
    out: dict[str, Any] = {"nll_per_token_own": round(sum(a for a, _ in own) / max(1, sum(b for _, b in own)), 4)}
    for name in (variants or list(every)):
        idx = [i for i, c in enumerate(every[name]) if c is not None]
        scored = score(sim, [cut[i] for i in idx], [every[name][i] for i in idx], batch_size=batch_size,
                       first_turn_only=first_turn_only)
        other: list[tuple[float, int] | None] = [None] * len(records)
        for i, s in zip(idx, scored):
            if s[1] != own[i][1]:
                raise AssertionError(f"{name}: conversation {i} scored {s[1]} tokens, its own condition {own[i][1]}")
            other[i] = s
        out[name] = cost_with_ci(own, other, users, n_boot, seed)
        if progress is not None:
            progress(name, out[name])
    return out


def condition_use_metrics(cfg: Any, sim: Any, records: Sequence[Mapping[str, Any]]) -> list[Metric]:
    """``condition_cost_<field>_<change>`` rows for the simulator and (when it has an adapter) the untuned base,
    on a seeded sample of ``cfg.condition_use_conversations`` of ``records`` (the eval's held-out
    conversations); ``cfg.condition_use_variants`` [] = every counterfactual."""
    rng = random.Random(cfg.seed + 11)
    pick = sorted(rng.sample(range(len(records)), min(cfg.condition_use_conversations, len(records))))
    sample = [records[i] for i in pick]
    systems = [(SIMULATOR, True)] + ([(BASE, False)] if sim.has_adapter else [])
    out: list[Metric] = []
    for system, adapter in systems:
        with contextlib.ExitStack() as stack:
            if not adapter:
                stack.enter_context(sim.adapter_disabled())
            costs = condition_costs(sim, sample, max_tokens=cfg.condition_use_max_tokens, seed=cfg.seed,
                                    n_boot=cfg.n_boot, variants=cfg.condition_use_variants)
        for name, res in costs.items():
            if not isinstance(res, dict) or res.get("millinats_per_token") is None:
                continue
            field, change = name.split("=")
            out.append(Metric(f"condition_cost_{field}_{change}", system, "controllability", res["millinats_per_token"],
                              res["ci"][0], res["ci"][1], res["n_conversations"], True, None, None,
                              f"teacher-forced: extra NLL per real user token (millinats) when the condition's "
                              f"{field} is {'changed to a far bucket' if change == 'flip' else change}; 0 = the "
                              f"model ignores it ({res['n_users']} users, {res['n_tokens']} tokens)"))
    return out
