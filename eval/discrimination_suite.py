"""The discrimination suite: paired judges (fast, neural, lm, llm) on every system, its controls, the headline.

Each judge is asked, for every complete pair (real turn, system turn) of one item, which one is real;
usersim.eval.paired gives the paired accuracy with its exact null, MDE and CI; usersim.eval.controls the six
controls and their flags; usersim.eval.system_differences the simulator-minus-baseline differences.
The headline judge is fixed in the config or chosen on validation users (usersim.eval.judge_selection).
"""

from __future__ import annotations

from typing import Any, Sequence


from usersim.eval.config import EvalConfig
from usersim.eval.controls import (DESCRIPTIONS, HEADLINE_BELOW_CHANCE, HUMAN_VS_HUMAN_REJECTED, ROLES, TOO_SMALL_TO_TELL,
                                   control_verdict, judge_alpha, same_user_other_turns, split_users)
from usersim.eval.discriminators import discriminate
from usersim.eval.decoding_choice import sim_end_bias
from usersim.eval.items import other_users_items, select_items
from usersim.eval.judge_selection import AUTO, choose_headline_judge, validation_judge_scores
from usersim.eval.judges import Judge, build_judges, item_context
from usersim.eval.llm_judge import llm_paired_discrimination
from usersim.eval.paired import PairedResult, complete_pairs, paired_discrimination
from usersim.eval.registry import BASE, HUMAN, PROMPTED, SIMULATOR, Metric
from usersim.eval.system_differences import baselines_sentence, system_differences
from usersim.eval.simulate import SystemTurns
from usersim.eval.systems import HOT, RESAMPLE

# headline_judge: auto breaks ties in validation power in this order (the judge built to see most first)
JUDGE_PREFERENCE = ("lm", "neural", "fast")


def paired_metric(result: PairedResult, system: str, judge: Judge) -> Metric:
    inf = result.inference
    suffix = "" if judge.name == "fast" else f"_{judge.name}"
    return Metric(f"paired_accuracy{suffix}", system, "discrimination", inf.accuracy, inf.ci_low, inf.ci_high,
                  result.n_pairs, None, None, 0.5,
                  f"shown the context and two next turns (real, {system}), how often the {judge.name} judge "
                  f"({judge.description}) picks the real one; cross-fitted by user; 0.5 = indistinguishable",
                  p_value=inf.p_value, null_low=inf.null_low, null_high=inf.null_high, mde=inf.mde)


def verdict(accuracy: float, p_value: float, mde: float, claimed_effect: float) -> str:
    """distinguishable / miscalibrated (significantly below chance) / too_small_to_tell / indistinguishable."""
    if p_value < 0.05:
        return "distinguishable" if accuracy > 0.5 else "miscalibrated"
    return "too_small_to_tell" if mde > claimed_effect else "indistinguishable"


def headline_sentence(h: dict[str, Any]) -> str:
    n = f"At n = {h['n_pairs']} pairs from {h['n_users']} held-out users"
    stats = f"(p = {h['p_value']:.3g}; the smallest gap this run can detect is ±{h['mde']:.2f})"
    acc = f"{100 * h['accuracy']:.0f}%"
    if h["verdict"] == "distinguishable":
        return f"{n}, the {h['judge']} judge picks the real turn over the simulator's {acc} of the time {stats}: " \
               "the simulator is distinguishable from held-out humans."
    if h["verdict"] == "miscalibrated":
        return f"{n}, the {h['judge']} judge picks the real turn only {acc} of the time, significantly below " \
               f"chance {stats}: the protocol is miscalibrated, and this is not evidence of fidelity."
    if h["verdict"] == "too_small_to_tell":
        return f"{n}, the {h['judge']} judge picks the real turn {acc} of the time {stats}: too small to tell " \
               "whether the simulator is distinguishable from held-out humans."
    return f"{n}, the {h['judge']} judge picks the real turn {acc} of the time {stats}: indistinguishable from " \
           "held-out humans at this n."


def run_paired(judges: dict[str, Judge], real: Sequence[str | None], candidate: SystemTurns | Sequence[str | None],
               contexts, users: Sequence[str], cfg: EvalConfig) -> tuple[dict[str, PairedResult], list[int],
                                                                      dict[str, int]]:
    """Every judge's paired result for ``real`` vs ``candidate`` on their complete pairs."""
    if isinstance(candidate, SystemTurns):
        texts, capped = candidate.texts, candidate.capped
    else:
        texts, capped = list(candidate), [False] * len(candidate)
    keep, dropped = complete_pairs(real, texts, capped)
    if len(keep) < 4 or len({users[i] for i in keep}) < 2:
        print(f"[usersim eval] only {len(keep)} complete pairs ({dropped}); paired discrimination not computed")
        return {}, keep, dropped
    results = {name: paired_discrimination(j, [real[i] for i in keep], [texts[i] for i in keep],
                                           [contexts[i] for i in keep], [users[i] for i in keep],
                                           n_splits=cfg.n_splits, n_permutations=cfg.n_permutations, seed=cfg.seed)
               for name, j in judges.items()}
    return results, keep, dropped


def eval_judges(cfg: EvalConfig, sim: Any) -> dict[str, Judge]:
    """The run's judges: fast, neural (if on) and lm (if on; the loaded model read with its adapter off)."""
    lm = None
    if cfg.lm_judge:
        from usersim.eval.lm_judge import LMJudgeConfig, lm_judge

        lm = lm_judge(sim.model, sim.tokenizer, LMJudgeConfig(max_context_tokens=cfg.lm_judge_context_tokens,
                                                               max_turn_tokens=cfg.max_new_tokens),
                      model_context=sim.adapter_disabled)
    judges = build_judges(cfg.neural_discriminator, lm=lm)
    if cfg.headline_judge not in (AUTO, *judges):
        raise ValueError(f"headline_judge={cfg.headline_judge!r} is not among the judges run {list(judges)} "
                         f"(or {AUTO!r}); turn the judge on (neural_discriminator / lm_judge) or pick another")
    return judges


def select_headline_judge(cfg: EvalConfig, sim: Any, judges: dict[str, Judge]) -> dict[str, Any]:
    """The headline judge: as fixed in the config, or chosen on validation users (usersim.eval.judge_selection)."""
    if cfg.headline_judge != AUTO:
        return {"judge": cfg.headline_judge, "reason": "fixed in the config before the run", "split": None}
    from usersim.eval.simulate import generate_turns

    pool = other_users_items(cfg.data_dir, cfg.judge_selection_split, cfg.split,
                             "the headline judge (judge_selection_split; or set headline_judge to a judge name)")
    items = select_items(pool, cfg.judge_selection_items, cfg.seed + 11, 1)
    rows = generate_turns(sim, items, use_adapter=True, seed=cfg.seed + 11, batch_size=cfg.batch_size,
                          max_new_tokens=cfg.max_new_tokens, show_progress=cfg.show_progress, do_sample=cfg.do_sample,
                          top_p=cfg.top_p, temperature=cfg.temperature, end_bias=sim_end_bias(cfg, sim))
    sim_turns = SystemTurns.from_turns([r[0] for r in rows]).at_budget(sim.tokenizer, cfg.max_new_tokens,
                                                                        capped_at_budget=True)
    scores = validation_judge_scores(judges, items, sim_turns.texts, sim_turns.capped, pool, n_splits=cfg.n_splits,
                                     n_permutations=min(cfg.n_permutations, 500), seed=cfg.seed)
    judge, reason = choose_headline_judge(scores, JUDGE_PREFERENCE)
    print(f"[usersim eval] headline judge: {reason}")
    return {"judge": judge, "reason": reason, "split": cfg.judge_selection_split, "n_items": len(items),
            "n_users": len({str(it["user_id"]) for it in items}), "scores": scores}


def warm_judges(judges: dict[str, Judge], contexts: Sequence[Any], *columns: Sequence[str | None],
                show_progress: bool = False) -> None:
    """Let judges that read each context once (lm) featurise every system's turn for it in one pass."""
    for judge in judges.values():
        if judge.warm is None:
            continue
        texts, ctxs = [], []
        for col in columns:
            for t, c in zip(col, contexts):
                if t is not None and str(t).strip():
                    texts.append(t)
                    ctxs.append(c)
        judge.warm(texts, ctxs, show_progress=show_progress)


def discrimination_section(cfg: EvalConfig, items: list[dict[str, Any]], pool: list[dict[str, Any]],
                           turns: dict[str, SystemTurns], systems: list[str], judges: dict[str, Judge],
                           headline_judge: str):
    """Paired discrimination of every system (the headline), the paired controls, human-vs-human."""
    users = [str(it["user_id"]) for it in items]
    contexts = [item_context(it["history"]) for it in items]
    real = turns[HUMAN].texts
    other_context = same_user_other_turns(items, pool, cfg.seed)
    warm_judges(judges, contexts, real, other_context, *(t.texts for t in turns.values()),
                show_progress=cfg.show_progress)
    metrics: list[Metric] = []
    paired: dict[str, Any] = {}
    results: dict[str, tuple[dict[str, PairedResult], list[int]]] = {}
    for system in systems:
        res, keep, dropped = run_paired(judges, real, turns[system], contexts, users, cfg)
        results[system] = (res, keep)
        paired[system] = {**{n: r.to_dict() for n, r in res.items()}, "excluded": dropped}
        metrics += [paired_metric(r, system, judges[n]) for n, r in res.items()]
        if cfg.llm_judge.endpoint and len(keep) >= 4:
            llm = llm_paired_discrimination(cfg.llm_judge, [real[i] for i in keep], [turns[system].texts[i] for i in keep],
                                            [contexts[i] for i in keep], [users[i] for i in keep], seed=cfg.seed,
                                            n_permutations=cfg.n_permutations, show_progress=cfg.show_progress)
            paired[system]["llm"] = llm.to_dict()
            metrics.append(paired_metric(llm, system, Judge("llm", llm.description, None)))
            res["llm"] = llm  # its pair scores enter the system differences like any judge's

    controls: dict[str, Any] = {"paired": {}, "human_vs_human": {}, "flags": [], "description": DESCRIPTIONS}
    flags: list[str] = []
    candidates: dict[str, Any] = {}
    if RESAMPLE in turns:
        # null: sample 1 plays "real" (a capped sample 1 is left out like any capped turn)
        first = [None if c else t for t, c in zip(turns[SIMULATOR].texts, turns[SIMULATOR].capped)]
        candidates["simulator_vs_itself"] = (first, turns[RESAMPLE])
    candidates["same_user_other_context"] = (real, other_context)
    if HOT in turns:
        candidates["simulator_hot"] = (real, turns[HOT])
    for name, (left, right) in candidates.items():
        res, _, dropped = run_paired(judges, left, right, contexts, users, cfg)
        if not res:
            continue
        controls["paired"][name] = {"role": ROLES[name], "expect": DESCRIPTIONS[name], "excluded": dropped,
                                    **{n: r.to_dict() for n, r in res.items()}}
    if results.get(BASE, ({}, []))[0]:
        controls["paired"]["base"] = {"role": ROLES["base"], "expect": DESCRIPTIONS["base"],
                                      **{n: r.to_dict() for n, r in results[BASE][0].items()}}
    for name, ctl in controls["paired"].items():
        by_judge = {n: ctl[n] for n in judges if n in ctl}
        ctl["passed"], flag = control_verdict(name, by_judge, headline_judge)
        if flag:
            flags.append(flag)

    # unpaired human vs human: two disjoint user groups of the eval's real turns
    group_a, _ = split_users(users, cfg.seed)
    a = [(t, u, c) for t, u, c in zip(real, users, contexts) if t is not None and u in group_a]
    b = [(t, u, c) for t, u, c in zip(real, users, contexts) if t is not None and u not in group_a]
    for name, judge in judges.items():
        r = discriminate(judge, [t for t, _, _ in a], [u for _, u, _ in a], [t for t, _, _ in b], [u for _, u, _ in b],
                         real_contexts=[c for _, _, c in a], candidate_contexts=[c for _, _, c in b],
                         n_splits=cfg.n_splits, n_permutations=cfg.n_permutations, seed=cfg.seed)
        passed = r.accuracy.p_value >= judge_alpha(len(judges))
        controls["human_vs_human"][name] = {**r.to_dict(), "passed": passed}
        if not passed and HUMAN_VS_HUMAN_REJECTED not in flags:
            flags.append(HUMAN_VS_HUMAN_REJECTED)

    headline: dict[str, Any] = {}
    sim_res = results.get(SIMULATOR, ({}, []))[0]
    if headline_judge in sim_res:
        r = sim_res[headline_judge]
        headline = {"system": SIMULATOR, **r.to_dict(), "judges_run": list(judges),
                    "verdict": verdict(r.inference.accuracy, r.inference.p_value, r.inference.mde,
                                       cfg.claimed_effect), "claimed_effect": cfg.claimed_effect}
        headline["sentence"] = headline_sentence(headline)
        if headline["verdict"] == "miscalibrated":
            flags.append(HEADLINE_BELOW_CHANCE)
        if headline["verdict"] == "too_small_to_tell":
            flags.append(TOO_SMALL_TO_TELL)
    controls["flags"] = flags

    differences = system_differences({s: r for s, r in results.items() if r[0]}, users, simulator=SIMULATOR,
                                     baselines=[BASE, PROMPTED], n_permutations=cfg.n_permutations, seed=cfg.seed)
    if headline:
        headline["baselines_sentence"] = baselines_sentence(differences, headline_judge)
    return metrics, paired, controls, headline, differences
