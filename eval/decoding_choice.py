"""Choose the simulator's decoding on held-out validation users and write it beside the adapter.

``usersim decoding --config configs/eval/default.yaml run_dir=... data_dir=...`` (``make decoding``):

1. ``decoding_items`` items of ``decoding_split`` (one per conversation; never the eval's split) are
   simulated once per ``[temperature, top_p]`` candidate; candidates that share a top_p are samples of
   one prefill. Each row also gets the model's own probability of ending the conversation there
   (usersim.engine.EndControl, with no row allowed to end, so every candidate writes a turn).
2. Each candidate's turns are paired with the real turns and the ``decoding_judge`` (cross-fitted,
   refitted per candidate) tries to pick the real one; the candidate with the lowest paired accuracy
   is chosen (ties: the first listed).
3. ``end_bias`` is calibrated so that the simulator's expected end rate on those items,
   mean_i sigmoid(logit p_i + end_bias), equals the humans' end rate on the split (one item per
   conversation of every validation conversation, the eval's item rule). The AUC of p_i at the
   items where the real user ended says whether the model knows *when* people end.

The result goes to ``RUN_DIR/decoding.json`` (``chosen`` holds temperature, top_p, end_bias; the rest is
the evidence), which ``UserSimulator.from_pretrained`` reads: eval (``decoding: run``), ``usersim chat``
and the RL environment then decode that way; :func:`resolve_decoding` is how eval reads it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from usersim.engine import end_chance
from usersim.eval.config import EvalConfig
from usersim.eval.failure_modes import end_auc
from usersim.eval.items import other_users_items, select_items
from usersim.eval.judges import build_judges, item_context
from usersim.eval.paired import complete_pairs, paired_discrimination
from usersim.eval.simulate import SystemTurns, generate_turns

NEVER_END = -1e9  # the end bias that makes no row end (the candidates' turns are all text)


def calibrate_end_bias(logps: Sequence[float], target_rate: float, *, lo: float = -100.0, hi: float = 100.0) -> float:
    """The bias b with mean_i sigmoid(logit p_i + b) = target_rate (bisection: the mean is increasing in b)."""
    lp = np.asarray(logps, float)
    if not lp.size:
        raise ValueError("no end probabilities to calibrate on")
    if not 0.0 < target_rate < 1.0:
        raise ValueError(f"target end rate {target_rate} must be in (0, 1)")
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expected_end_rate(lp, mid) < target_rate else (lo, mid)
    return round((lo + hi) / 2, 4)


def expected_end_rate(logps: Sequence[float], bias: float) -> float:
    """mean_i sigmoid(logit p_i + bias): the share of rows the end decision ends (usersim.engine.EndControl)."""
    return float(end_chance(torch.tensor(list(logps), dtype=torch.float64), bias).mean())


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def choose_decoding(cfg: EvalConfig, sim: Any, pool: list[dict[str, Any]]) -> dict[str, Any]:
    """The decoding.json document for ``sim`` chosen on ``pool`` (the split's per-turn items)."""
    if not cfg.decoding_candidates:
        raise ValueError("decoding_candidates is empty: give at least one [temperature, top_p]")
    for cand in cfg.decoding_candidates:
        if len(cand) != 2 or not cand[0] > 0 or not 0 < cand[1] <= 1:
            raise ValueError(f"decoding candidate {cand}: use [temperature > 0, top_p in (0, 1]]")
    judges = build_judges(cfg.decoding_judge == "neural")
    if cfg.decoding_judge not in judges:
        raise ValueError(f"decoding_judge={cfg.decoding_judge!r}: use fast or neural")
    judge = judges[cfg.decoding_judge]
    items = select_items(pool, cfg.decoding_items, cfg.seed + 13, 1)
    users = [str(it["user_id"]) for it in items]
    real = [None if it["target_is_end"] else str(it["target"]) for it in items]
    contexts = [item_context(it["history"]) for it in items]
    by_top_p: dict[float, list[int]] = {}
    for k, (_, top_p) in enumerate(cfg.decoding_candidates):
        by_top_p.setdefault(float(top_p), []).append(k)
    turns: dict[int, SystemTurns] = {}
    end_logps: list[float] = []
    for top_p, ks in by_top_p.items():
        rows = generate_turns(sim, items, use_adapter=True, seed=cfg.seed + 13, batch_size=cfg.batch_size,
                              max_new_tokens=cfg.max_new_tokens, num_samples=len(ks), do_sample=cfg.do_sample,
                              temperatures=[float(cfg.decoding_candidates[k][0]) for k in ks], top_p=top_p,
                              end_bias=NEVER_END, show_progress=cfg.show_progress)
        for j, k in enumerate(ks):
            turns[k] = SystemTurns.from_turns([r[j] for r in rows]).at_budget(sim.tokenizer, cfg.max_new_tokens,
                                                                               capped_at_budget=True)
        if not end_logps:
            end_logps = [float(r[0].end_logprob) for r in rows]
    candidates = []
    for k, (temperature, top_p) in enumerate(cfg.decoding_candidates):
        keep, _ = complete_pairs(real, turns[k].texts, turns[k].capped)
        if len(keep) < 4 or len({users[i] for i in keep}) < 2:
            raise ValueError(f"only {len(keep)} complete pairs on {cfg.decoding_split}: raise decoding_items")
        r = paired_discrimination(judge, [real[i] for i in keep], [turns[k].texts[i] for i in keep],
                                  [contexts[i] for i in keep], [users[i] for i in keep], n_splits=cfg.n_splits,
                                  n_permutations=min(cfg.n_permutations, 200), seed=cfg.seed)
        inf = r.inference
        candidates.append({"temperature": float(temperature), "top_p": float(top_p), "accuracy": inf.accuracy,
                           "ci": [inf.ci_low, inf.ci_high], "p_value": inf.p_value, "n_pairs": r.n_pairs})
        print(f"[usersim decoding] temperature {temperature} top_p {top_p}: the {cfg.decoding_judge} judge picks "
              f"the real turn {inf.accuracy:.3f} [{inf.ci_low:.3f}, {inf.ci_high:.3f}] of {r.n_pairs} pairs")
    best = min(range(len(candidates)), key=lambda k: (candidates[k]["accuracy"], k))
    chosen: dict[str, Any] = {"temperature": candidates[best]["temperature"], "top_p": candidates[best]["top_p"],
                              "end_bias": None}
    # the humans' end rate under the eval's item rule, on every conversation of the split
    everyone = select_items(pool, 0, cfg.seed + 13, 1)
    n_ends = sum(bool(it["target_is_end"]) for it in everyone)
    target = n_ends / len(everyone) if everyone else float("nan")
    ended_here = [bool(it["target_is_end"]) for it in items]
    model_rate = float(np.mean(np.exp(end_logps))) if end_logps else float("nan")
    end: dict[str, Any] = {"human_rate": target, "human_rate_ci": list(wilson(n_ends, len(everyone))),
                           "human_items": len(everyone), "model_rate": model_rate,
                           "auc": end_auc(end_logps, ended_here), "auc_ends": sum(ended_here),
                           "calibrated": bool(cfg.decoding_end_calibration)}
    if cfg.decoding_end_calibration and 0 < target < 1:
        chosen["end_bias"] = calibrate_end_bias(end_logps, target)
        end["expected_rate"] = expected_end_rate(end_logps, chosen["end_bias"])
        end["reached"] = abs(end["expected_rate"] - target) < 0.01
    print(f"[usersim decoding] end: humans {target:.3f} of {len(everyone)} items, the model's own rate "
          f"{model_rate:.3f}, AUC {end['auc']:.3f} ({sum(ended_here)} ends); end_bias {chosen['end_bias']}")
    return {"chosen": chosen, "split": cfg.decoding_split, "seed": cfg.seed, "n_items": len(items),
            "n_users": len(set(users)), "judge": cfg.decoding_judge, "candidates": candidates, "end": end}


def resolve_decoding(cfg: EvalConfig, sim: Any) -> tuple[EvalConfig, dict[str, Any]]:
    """The config with the simulator's temperature / top_p resolved (``decoding: run`` reads the train run's
    decoding.json), and what metrics.json["decoding"] records."""
    if cfg.decoding not in ("run", "config"):
        raise ValueError(f"decoding={cfg.decoding!r}: use run (the train run's decoding.json) or config")
    chosen = dict(sim.decoding) if cfg.decoding == "run" else {}
    resolved = dataclasses.replace(cfg, temperature=float(chosen.get("temperature", cfg.temperature)),
                                   top_p=float(chosen.get("top_p", cfg.top_p)))
    source = "decoding.json" if chosen else "eval config"
    return resolved, {"source": source, "temperature": resolved.temperature, "top_p": resolved.top_p,
                      "end_bias": chosen.get("end_bias")}


def sim_end_bias(cfg: EvalConfig, sim: Any) -> float | None:
    """The simulator's explicit end decision in this eval (None: it ends only by writing the marker)."""
    return sim.decoding.get("end_bias") if cfg.decoding == "run" else None


def main(cfg: EvalConfig) -> Path:
    from usersim.run_files import DECODING_FILE
    from usersim.simulator import UserSimulator

    pool = other_users_items(cfg.data_dir, cfg.decoding_split, cfg.split, "the decoding (decoding_split)")
    sim = UserSimulator.from_pretrained(cfg.run_dir, base_model=cfg.base_model or None, device=cfg.device or None,
                                        dtype=cfg.dtype or None, trust_remote_code=cfg.trust_remote_code,
                                        max_prompt_tokens=cfg.max_prompt_tokens)
    sim.decoding = {}  # choose afresh, whatever an earlier choice said
    doc = choose_decoding(cfg, sim, pool)
    path = Path(cfg.run_dir) / DECODING_FILE
    path.write_text(json.dumps(doc, indent=2, allow_nan=True) + "\n", encoding="utf-8")
    print(f"[usersim decoding] chose {doc['chosen']}")
    return path


def cli(argv: list[str] | None = None) -> int:
    from usersim.data_prep.stage_config import run_stage_cli

    return run_stage_cli(list(sys.argv[1:] if argv is None else argv), EvalConfig, main, prog="usersim decoding")


if __name__ == "__main__":
    raise SystemExit(cli())
