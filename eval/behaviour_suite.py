"""The behaviour suites: held-out perplexity, behavioural statistics and failure modes, human floors, copy rate,
sample diversity and controllability.

Every distance is read beside the same distance between two disjoint groups of held-out humans (the
floor, :func:`human_floor`). Metric definitions: eval/METRICS.md.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

import numpy as np

from usersim.data_prep.leakage import copy_rate, shared_spans, condition_text
from usersim.data_prep.prompt_format import Condition
from usersim.eval.behaviour import behaviour_metrics, ending_metrics, first_turn_diversity_metrics
from usersim.eval.bootstrap import bootstrap_by_user, bootstrap_mean_by_user
from usersim.eval.config import EvalConfig
from usersim.eval.controllability import controllability_metrics, swapped_conditions
from usersim.eval.failure_modes import failure_mode_metrics, sample_diversity_metrics
from usersim.eval.decoding_choice import sim_end_bias
from usersim.eval.items import select_items
from usersim.eval.registry import BASE, HUMAN, HUMAN_B, SIMULATOR, Metric
from usersim.eval.simulate import SystemTurns
from usersim.eval.system_differences import paired_value_difference


# ----------------------------------------------------------------------------- pure helpers
def leaking_items(items: Sequence[dict[str, Any]]) -> list[str]:
    """Ids of items whose condition holds a 4-word span of the very turn to be predicted."""
    return [it["id"] for it in items if not it["target_is_end"]
            and shared_spans(it["target"], condition_text(Condition.from_row(it["condition"])))]


def aligned_curves(curves: dict[str, dict[str, float]]) -> dict[str, Any]:
    """``{system: {k: y}}`` -> ``{"turn_index": [k...], system: [y...]}`` over k every system has."""
    common = None
    for c in curves.values():
        common = set(c) if common is None else common & set(c)
    ks = sorted(common or set(), key=int)
    out: dict[str, Any] = {"turn_index": [int(k) for k in ks]}
    for s, c in curves.items():
        out[s] = [round(c[k], 4) for k in ks]
    return out


def perplexity_metric(rows: Sequence[dict[str, Any]], system: str, *, n_boot: int, seed: int) -> Metric:
    """exp(sum NLL / sum tokens) of the real user turns, CI by resampling users (usersim.eval.perplexity)."""
    from usersim.eval.perplexity import perplexity_with_ci

    p = perplexity_with_ci(rows, n_boot=n_boot, seed=seed)
    return Metric("heldout_perplexity", system, "perplexity", p["perplexity"], p["ci_low"], p["ci_high"],
                  p["n_tokens"], False, None, None,
                  f"perplexity of the held-out human user turns (incl. end markers) over {p['n_users']} users, "
                  f"{p['n_conversations']} conversations; n = tokens")


def perplexity_difference(sim_rows: Sequence[dict[str, Any]], base_rows: Sequence[dict[str, Any]], *, n_boot: int,
                          seed: int) -> dict[str, float]:
    """Simulator minus base perplexity on the same conversations, CI by resampling users (paired)."""
    nll_s = np.array([float(r["nll_sum"]) for r in sim_rows])
    nll_b = np.array([float(r["nll_sum"]) for r in base_rows])
    tokens = np.array([int(r["n_tokens"]) for r in sim_rows])

    def diff(ix: np.ndarray) -> float:
        n = tokens[ix].sum()
        return float(np.exp(nll_s[ix].sum() / n) - np.exp(nll_b[ix].sum() / n)) if n else float("nan")

    v, lo, hi = bootstrap_by_user([str(r["user_id"]) for r in sim_rows], diff, n_boot=n_boot, seed=seed)
    return {"value": v, "ci_low": lo, "ci_high": hi}


def perplexity_section(cfg: EvalConfig, rows: dict[str, list[dict[str, Any]]]):
    not_scored = [r["n_tokens_dropped"] for r in rows[SIMULATOR]]
    if sum(not_scored):
        print(f"[usersim eval] perplexity: {sum(not_scored)} tokens of user turns longer than "
              f"perplexity_max_seq_len={cfg.perplexity_max_seq_len} were not scored (in "
              f"{sum(n > 0 for n in not_scored)} of {len(not_scored)} conversations)")
    metrics = [perplexity_metric(r, s, n_boot=cfg.n_boot, seed=cfg.seed) for s, r in rows.items()]
    return metrics, perplexity_difference(rows[SIMULATOR], rows[BASE], n_boot=cfg.n_boot, seed=cfg.seed)


def extra_generation_metrics(cfg: EvalConfig, sim: Any, items: list[dict[str, Any]],
                             turns: dict[str, SystemTurns]) -> list[Metric]:
    """Sample diversity (several samples of one prompt) and controllability (swapped conditions)."""
    from usersim.eval.simulate import generate_turns

    gen = dict(batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens, show_progress=cfg.show_progress,
               do_sample=cfg.do_sample, top_p=cfg.top_p, temperature=cfg.temperature)
    sim_bias = sim_end_bias(cfg, sim)
    users = [str(it["user_id"]) for it in items]
    text_items = [i for i, t in enumerate(turns[HUMAN].texts) if t is not None]
    rng = random.Random(cfg.seed)
    out: list[Metric] = []
    if cfg.diversity_prompts > 0 and cfg.num_diversity_samples > 1:
        picks = sorted(rng.sample(text_items, min(cfg.diversity_prompts, len(text_items))))
        samples = {}
        for system, use_adapter in ((SIMULATOR, True), (BASE, False)):
            rows = generate_turns(sim, [items[i] for i in picks], use_adapter=use_adapter,
                                  num_samples=cfg.num_diversity_samples, seed=cfg.seed + 3,
                                  end_bias=sim_bias if use_adapter else None, **gen)
            samples[system] = [[t.text for t in row] for row in rows]
        out += sample_diversity_metrics(samples, [users[i] for i in picks], n_boot=cfg.n_boot, seed=cfg.seed)
    if cfg.controllability_items > 0:
        picks = sorted(rng.sample(text_items, min(cfg.controllability_items, len(text_items))))
        ctl_items = [items[i] for i in picks]
        if len({it["user_id"] for it in ctl_items}) < 2:
            print("[usersim eval] controllability skipped: the sampled items come from fewer than 2 users")
            return out
        swapped = swapped_conditions(ctl_items, cfg.seed)
        swapped_turns = SystemTurns.from_turns([t[0] for t in generate_turns(sim, ctl_items, conditions=swapped,
                                                                            seed=cfg.seed, end_bias=sim_bias, **gen)]
                                               ).at_budget(sim.tokenizer, cfg.max_new_tokens, capped_at_budget=True)
        out += controllability_metrics(ctl_items, [turns[HUMAN].texts[i] for i in picks],
                                       [turns[SIMULATOR].compared()[i] for i in picks], swapped_turns.compared(),
                                       swapped, n_boot=cfg.n_boot, seed=cfg.seed)
    return out


def statistics(items: list[dict[str, Any]], texts: dict[str, list], ends: dict[str, list], cfg: EvalConfig,
               end_chances: dict[str, list] | None = None):
    users = [str(it["user_id"]) for it in items]
    turn_indices = [int(it["turn_index"]) for it in items]
    others = {s: t for s, t in texts.items() if s != HUMAN}
    boot = dict(n_boot=cfg.n_boot, seed=cfg.seed)
    metrics = behaviour_metrics(texts[HUMAN], others, users, **boot)
    metrics += first_turn_diversity_metrics(texts[HUMAN], others, users, turn_indices, **boot)
    metrics += ending_metrics(ends[HUMAN], {s: e for s, e in ends.items() if s != HUMAN}, users, turn_indices, **boot)
    fm, fm_plots = failure_mode_metrics(items, texts, ends, end_chances=end_chances, late_turn=cfg.late_turn,
                                        max_turn=cfg.max_turn, **boot)
    return metrics + fm, fm_plots


def style_differences(mismatch: dict[str, Sequence[float]], users: Sequence[str], baselines: Sequence[str],
                      cfg: EvalConfig) -> dict[str, dict[str, Any]]:
    """Does the simulator follow its style condition better than each baseline? ``{"simulator_minus_<baseline>":
    {"style_mismatch": paired difference}}`` of the per-item style mismatch (``mismatch``: system -> per item, NaN
    where the system wrote no turn or none was requested; :func:`statistics` returns it) on the items where both
    have one (< 0: the simulator misses fewer of the requested style buckets), with a CI by user
    (usersim.eval.system_differences). With ``human`` among ``baselines`` the difference against the real turn
    scored leave-one-out (usersim.eval.failure_modes.requested_style) is ``simulator_minus_human``: how much
    more than another sample of the same person the simulator misses, on the items where the user wrote
    another turn.
    """
    out: dict[str, dict[str, Any]] = {}
    if SIMULATOR not in mismatch:
        return out
    for baseline in baselines:
        if baseline in mismatch:
            diff = paired_value_difference(mismatch[SIMULATOR], mismatch[baseline], users,
                                           n_permutations=cfg.n_permutations, seed=cfg.seed)
            if diff is not None:
                out[f"{SIMULATOR}_minus_{baseline}"] = {"style_mismatch": diff}
    return out


def human_floor(cfg: EvalConfig, items: list[dict[str, Any]], pool: list[dict[str, Any]],
                tokenizer: Any) -> dict[str, float]:
    """Every distance between the eval's humans and a disjoint group of held-out humans of the same size.

    The second group is drawn like the eval's items (same sampler, another seed) from users the eval
    did not sample; both groups are cut to the same token budget and go through the same statistics,
    stacked as two columns of one table.
    """
    taken = {str(it["user_id"]) for it in items}
    ref = select_items(pool, len(items), cfg.seed + 7, cfg.max_items_per_conversation, exclude_users=taken)[:len(items)]
    if len(ref) < len(items) // 2 or not ref:
        return {}
    both = list(items) + ref
    h, hb = (SystemTurns.human(group).at_budget(tokenizer, cfg.max_new_tokens, capped_at_budget=False)
             for group in (items, ref))
    texts = {HUMAN: h.texts + [None] * len(ref), HUMAN_B: [None] * len(items) + hb.texts}
    ends = {HUMAN: h.ends + [False] * len(ref), HUMAN_B: [False] * len(items) + hb.ends}
    metrics, _ = statistics(both, texts, ends, cfg)
    return {m.name: m.value for m in metrics if m.system == HUMAN_B and m.value is not None
            and np.isfinite(m.value)}


def copy_rate_metrics(items: list[dict[str, Any]], texts: dict[str, list], cfg: EvalConfig) -> list[Metric]:
    users = [str(it["user_id"]) for it in items]
    conditions = [Condition.from_row(it["condition"]) for it in items]
    out = []
    for system, ts in texts.items():
        rates = [float("nan") if t is None else copy_rate(t, c) for t, c in zip(ts, conditions)]
        rates = [float("nan") if r is None else r for r in rates]
        v, lo, hi = bootstrap_mean_by_user(rates, users, n_boot=cfg.n_boot, seed=cfg.seed)
        out.append(Metric("condition_copy_rate", system, "leakage", v, lo, hi, int(np.isfinite(rates).sum()), False,
                          None, 0.0, "share of the turn's word 4-grams found in its condition (turns of 4+ words); "
                          "a simulator must not be rewarded for copying its condition"))
    return out
