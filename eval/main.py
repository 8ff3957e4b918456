"""``usersim eval``: fidelity of a trained user simulator against held-out humans.

The stage is a table of *systems* x *suites*. Systems write the next user turn of every held-out
item from the same condition and history the human had: the trained simulator, the untuned base
(same prompt), the prompted instruct model (usersim.prompted), plus the controls' extra samples (a
second simulator sample, a hot simulator). Each system's turns are generated once; the suites are
functions of the items and those turns: paired discrimination (the headline, usersim.eval.paired) with its
controls (usersim.eval.controls), held-out perplexity, behavioural statistics and failure modes, each
distance beside the same distance between two disjoint groups of held-out humans (the floor).
Writes to the eval run directory (docs/contracts.md):

* ``metrics.json`` — the headline and its verdict, registered metrics (usersim.eval.registry) with 95% CIs,
  p-values and human references, the paired results, the controls and their flags, provenance;
* ``samples.jsonl`` — one row per item: real turn and every system's turn side by side;
* ``plots.json``  — the data behind every report figure.

Definitions of every metric: eval/METRICS.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from usersim.data_prep.leakage import copy_rate, shared_spans, condition_text
from usersim.data_prep.prompt_format import Condition
from usersim.data_prep.run_info import write_run_dir_header
from usersim.data_prep.stage_config import config_to_dict, run_stage_cli
from usersim.eval.behaviour import behaviour_metrics, ending_metrics, first_turn_diversity_metrics
from usersim.eval.bootstrap import bootstrap_by_user, bootstrap_mean_by_user
from usersim.eval.config import EvalConfig
from usersim.eval.compliance_suite import compliance_suite
from usersim.eval.controllability import controllability_metrics, swapped_conditions
from usersim.eval.controls import (DESCRIPTIONS, HEADLINE_BELOW_CHANCE, HUMAN_VS_HUMAN_REJECTED, ROLES, TOO_SMALL_TO_TELL,
                                   control_verdict, judge_alpha, same_user_other_turns, split_users)
from usersim.eval.discriminators import discriminate
from usersim.eval.failure_modes import failure_mode_metrics, sample_diversity_metrics
from usersim.eval.decoding_choice import resolve_decoding, sim_end_bias
from usersim.eval.items import other_users_items, select_items
from usersim.eval.judge_selection import AUTO, choose_headline_judge, validation_judge_scores
from usersim.eval.judges import Judge, build_judges, item_context
from usersim.eval.llm_judge import llm_paired_discrimination
from usersim.eval.paired import PairedResult, complete_pairs, paired_discrimination
from usersim.eval.registry import BASE, HUMAN, PROMPTED, SIMULATOR, Metric, MetricRegistry
from usersim.eval.shard import current_shard, merge_rows, merge_turns
from usersim.eval.system_differences import baselines_sentence, system_differences
from usersim.eval.simulate import SystemTurns, item_condition
from usersim.eval.style_features import words

RESAMPLE, HOT = "simulator_resample", "simulator_hot"  # the controls' extra simulator samples
SAME_CAP = {SIMULATOR, RESAMPLE, HOT, BASE}  # generated with the simulator's tokenizer and cap max_new_tokens
SAMPLE_KEYS = {SIMULATOR: "simulated", BASE: "base", PROMPTED: "prompted"}
HUMAN_B = "human_b"  # the second, disjoint group of held-out humans (the floor of every distance)
# headline_judge: auto breaks ties in validation power in this order (the judge built to see most first)
JUDGE_PREFERENCE = ("lm", "neural", "fast")


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


def sample_rows(items, generated: dict[str, SystemTurns], compared: dict[str, SystemTurns],
                history_tail: int) -> list[dict[str, Any]]:
    """One row per item: every system's whole turn as written, with how the comparisons saw it.

    ``<key>_capped``: its generation cap cut it short of the budget (left out of comparisons);
    ``<key>_cut``: compared on its first ``max_new_tokens`` tokens only.
    """
    rows = []
    human = generated[HUMAN]
    for i, it in enumerate(items):
        row = {"id": it["id"], "user_id": it["user_id"], "turn_index": it["turn_index"], "condition": it["condition"],
               "history_tail": list(it["history"])[-history_tail:] if history_tail else [],
               "real": human.texts[i] or "", "real_ends": human.ends[i], "real_cut": compared[HUMAN].cut[i]}
        for s, key in SAMPLE_KEYS.items():
            if s in generated:
                row[key] = generated[s].texts[i] or ""
                row[f"{key}_ends"] = generated[s].ends[i]
                row[f"{key}_capped"] = compared[s].capped[i]
                row[f"{key}_cut"] = compared[s].cut[i]
        rows.append(row)
    return rows


def format_table(metrics: Sequence[Metric], systems: Sequence[str]) -> str:
    """A compact text table: one line per metric name, one column per system."""
    names = list(dict.fromkeys(m.name for m in metrics))
    by = {(m.name, m.system): m for m in metrics}

    def cell(m: Metric | None) -> str:
        if m is None or m.value is None or not np.isfinite(m.value):
            return "-"
        if m.ci_low is None or not np.isfinite(m.ci_low):
            return f"{m.value:.3g}"
        return f"{m.value:.3g} [{m.ci_low:.3g}, {m.ci_high:.3g}]"

    cols = [HUMAN, *systems]
    width = max(len(n) for n in names) if names else 10
    lines = [f"{'metric'.ljust(width)}  " + "  ".join(c.ljust(24) for c in cols)]
    for n in names:
        lines.append(f"{n.ljust(width)}  " + "  ".join(cell(by.get((n, c))).ljust(24) for c in cols))
    return "\n".join(lines)


def train_run_info(run_dir: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"run_dir": str(run_dir)}
    for name in ("base_model.json", "run_info.json", "train_metrics.json"):
        path = run_dir / name
        if path.is_file():
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                continue
            if name == "run_info.json":
                doc = {k: doc.get(k) for k in ("seed", "git_revision", "started_at")}
            info[name.removesuffix(".json")] = doc
    return info


def json_safe(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, recursively (metrics.json is strict JSON)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


@contextlib.contextmanager
def timed(timings: dict[str, float], name: str):
    """Record the wall time of a step (reported in metrics.json["timings_s"] and printed)."""
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 2)


# ----------------------------------------------------------------------------- stage steps
def load_held_out(cfg: EvalConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(sampled per-turn items, their conversation records, every held-out per-turn item)."""
    from datasets import load_from_disk

    path = Path(cfg.data_dir) / "dataset"
    if not path.is_dir():
        raise FileNotFoundError(f"{path} not found: run `usersim data` first or set data_dir=<data run dir>")
    ds = load_from_disk(str(path))
    turns_split = f"{cfg.split}_turns"
    for split in (cfg.split, turns_split):
        if split not in ds:
            raise KeyError(f"{path} has no split {split!r} (has {list(ds)}); set split=test or validation")
    pool = ds[turns_split].to_list()
    items = select_items(pool, cfg.max_items, cfg.seed, cfg.max_items_per_conversation)
    leaks = leaking_items(items)
    if leaks:
        raise ValueError(f"{len(leaks)} of {len(items)} eval items have a condition holding a 4-word span of the "
                         f"turn to be predicted (e.g. {leaks[0]}): the data run predates leak-free conditions; "
                         "re-run `usersim data`")
    convs = {it["conversation_id"] for it in items}
    records = [r for r in ds[cfg.split].to_list() if r["id"] in convs]
    n_users = len({it["user_id"] for it in items})
    if n_users < 4:
        raise ValueError(f"only {n_users} held-out users in the sample: the user-grouped judges need at least 4; "
                         "raise max_items or use a bigger split")
    return items, records, pool


def generate_all(cfg: EvalConfig, sim: Any, items: list[dict[str, Any]]) -> dict[str, SystemTurns]:
    """Every system's turns (and the controls' extra simulator samples), generated once."""
    from usersim.eval.simulate import generate_turns

    gen = dict(batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens, show_progress=cfg.show_progress,
               do_sample=cfg.do_sample, top_p=cfg.top_p)
    out = {HUMAN: SystemTurns.human(items)}
    end_bias = sim_end_bias(cfg, sim)
    # the simulator and the controls' two extra samples share each prompt: one prefill, three samples
    family = [(SIMULATOR, cfg.temperature)] + ([(RESAMPLE, cfg.temperature), (HOT, cfg.hot_temperature)]
                                                if cfg.controls else [])
    rows = generate_turns(sim, items, use_adapter=True, seed=cfg.seed, num_samples=len(family),
                          temperatures=[t for _, t in family], end_bias=end_bias, **gen)
    for k, (system, _) in enumerate(family):
        out[system] = SystemTurns.from_turns([row[k] for row in rows])
    out[BASE] = SystemTurns.from_turns([row[0] for row in generate_turns(sim, items, use_adapter=False, seed=cfg.seed,
                                                                          temperature=cfg.temperature, end_bias=None,
                                                                          **gen)])
    if cfg.prompted.model or cfg.prompted.endpoint:
        from usersim.prompted import generate_prompted_turns

        out[PROMPTED] = SystemTurns.from_turns(generate_prompted_turns(
            cfg.prompted, items, seed=cfg.seed, device=cfg.device, trust_remote_code=cfg.trust_remote_code,
            show_progress=cfg.show_progress))
    return out


def perplexity_records(cfg: EvalConfig, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return records[:cfg.perplexity_max_conversations] if cfg.perplexity_max_conversations > 0 else records


def perplexity_rows(cfg: EvalConfig, sim: Any, records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per system (simulator, base), usersim.eval.perplexity's row of every conversation in ``records``."""
    from usersim.eval.perplexity import user_turn_nll

    with warnings.catch_warnings():  # the count of unscored tokens is reported once, as a plain line
        warnings.filterwarnings("ignore", message=r".*user-turn tokens did not fit max_seq_len")
        return {system: user_turn_nll(sim, records, use_adapter=use_adapter, batch_size=cfg.perplexity_batch_size,
                                      max_seq_len=cfg.perplexity_max_seq_len, max_windows=cfg.perplexity_max_windows,
                                      show_progress=cfg.show_progress)
                for system, use_adapter in ((SIMULATOR, True), (BASE, False))}


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


def statistics(items: list[dict[str, Any]], texts: dict[str, list], ends: dict[str, list], cfg: EvalConfig,
               end_scores: dict[str, list] | None = None):
    users = [str(it["user_id"]) for it in items]
    turn_indices = [int(it["turn_index"]) for it in items]
    others = {s: t for s, t in texts.items() if s != HUMAN}
    boot = dict(n_boot=cfg.n_boot, seed=cfg.seed)
    metrics = behaviour_metrics(texts[HUMAN], others, users, **boot)
    metrics += first_turn_diversity_metrics(texts[HUMAN], others, users, turn_indices, **boot)
    metrics += ending_metrics(ends[HUMAN], {s: e for s, e in ends.items() if s != HUMAN}, users, turn_indices, **boot)
    fm, fm_plots = failure_mode_metrics(items, texts, ends, end_scores=end_scores, late_turn=cfg.late_turn,
                                        max_turn=cfg.max_turn, **boot)
    return metrics + fm, fm_plots


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


def main(cfg: EvalConfig) -> Path:
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    import torch

    torch.manual_seed(cfg.seed)
    from usersim.simulator import UserSimulator

    out = Path(cfg.output_dir)
    shard = current_shard(cfg.device)
    cfg = dataclasses.replace(cfg, device=shard.device, show_progress=cfg.show_progress and shard.is_main)
    info = write_run_dir_header(out, cfg, cfg.seed, "eval") if shard.is_main else {}
    items, records, pool = load_held_out(cfg)
    users = [str(it["user_id"]) for it in items]
    sim = UserSimulator.from_pretrained(cfg.run_dir, base_model=cfg.base_model or None, device=cfg.device or None,
                                        dtype=cfg.dtype or None, trust_remote_code=cfg.trust_remote_code,
                                        max_prompt_tokens=cfg.max_prompt_tokens)
    registry, timings = MetricRegistry(), {}
    cfg, decoding = resolve_decoding(cfg, sim)
    if shard.is_main:
        print(f"[usersim eval] simulator decoding ({decoding['source']}): temperature {decoding['temperature']}, "
              f"top_p {decoding['top_p']}, end_bias {decoding['end_bias']}")
    judges = eval_judges(cfg, sim)
    selection: dict[str, Any] = {}
    if shard.is_main:
        with timed(timings, "judge_selection"):  # on validation users, before any test item is generated
            selection = select_headline_judge(cfg, sim, judges)
    if shard.is_main:
        print(f"[usersim eval] {len(items)} items from {len(set(users))} held-out users, {len(records)} conversations"
              + (f", shared by {shard.world} processes" if shard.world > 1 else ""))
    # the model-bound steps, each process over its share of the items and conversations (usersim.eval.shard)
    mine, ppl_records = shard.take(len(items)), perplexity_records(cfg, records)
    ppl_mine = shard.take(len(ppl_records))
    with timed(timings, "simulate"):
        generated = generate_all(cfg, sim, [items[i] for i in mine])
    with timed(timings, "perplexity"):
        ppl_rows = perplexity_rows(cfg, sim, [ppl_records[j] for j in ppl_mine]) if cfg.perplexity else {}
    if shard.world > 1:
        generated = merge_turns(len(items), shard.gather((mine, {s: t for s, t in generated.items() if s != HUMAN})))
        generated[HUMAN] = SystemTurns.human(items)
        parts = shard.gather((ppl_mine, ppl_rows))
        ppl_rows = {s: merge_rows(len(ppl_records), [(ix, rows[s]) for ix, rows in parts]) for s in ppl_rows}
        shard.close()
        if not shard.is_main:
            return out
    systems = [s for s in (SIMULATOR, BASE, PROMPTED) if s in generated]
    # every comparison sees each turn, real or simulated, cut to its first max_new_tokens tokens
    turns = {s: t.at_budget(sim.tokenizer, cfg.max_new_tokens, capped_at_budget=s in SAME_CAP)
             for s, t in generated.items()}
    truncation = {"hit_cap": {s: t.n_capped for s, t in generated.items() if s != HUMAN},
                  "cut_at_budget": {s: t.n_cut for s, t in turns.items()},
                  "capped": {s: t.n_capped for s, t in turns.items() if s != HUMAN},
                  "empty": {s: t.n_empty for s, t in turns.items() if s != HUMAN},
                  "n_items": len(items), "max_new_tokens": cfg.max_new_tokens,
                  "max_prompt_tokens": sim.max_prompt_tokens, "capped_excluded": cfg.exclude_capped,
                  "prompt_turns_dropped": sum(sim.prompt(it["history"], item_condition(it)).turns_dropped > 0
                                              for it in items)}
    if not cfg.exclude_capped:
        for t in turns.values():
            t.capped = [False] * len(t.capped)
    ppl_difference: dict[str, Any] = {}
    if ppl_rows:
        ppl, ppl_difference = perplexity_section(cfg, ppl_rows)
        registry.extend(ppl)
    compared = {s: turns[s].compared() for s in [HUMAN, *systems]}
    ends = {s: turns[s].ends for s in [HUMAN, *systems]}
    with timed(timings, "diversity_and_controllability"):
        registry.extend(extra_generation_metrics(cfg, sim, items, turns))
        if RESAMPLE in turns and not (cfg.diversity_prompts > 0 and cfg.num_diversity_samples > 1):
            # two samples per context come free with the null control: the simulator's sample diversity
            both = [i for i, (a, b) in enumerate(zip(compared[SIMULATOR], turns[RESAMPLE].compared())) if a and b]
            registry.extend(sample_diversity_metrics(
                {SIMULATOR: [[compared[SIMULATOR][i], turns[RESAMPLE].texts[i]] for i in both]}, [users[i] for i in both],
                n_boot=cfg.n_boot, seed=cfg.seed))
    with timed(timings, "discrimination"):
        metrics, paired, controls, headline, differences = discrimination_section(cfg, items, pool, turns, systems,
                                                                                  judges, selection["judge"])
        registry.extend(metrics)
        if ppl_difference:
            differences.setdefault(f"{SIMULATOR}_minus_{BASE}", {})["heldout_perplexity"] = ppl_difference
    with timed(timings, "statistics"):
        metrics, fm_plots = statistics(items, compared, ends, cfg, {s: turns[s].end_logprobs for s in systems})
        floor = human_floor(cfg, items, pool, sim.tokenizer)
        for m in metrics:  # a distance is read against the distance between two groups of humans
            if m.system != HUMAN and m.human_reference == 0.0 and m.name in floor:
                m.human_reference = floor[m.name]
        registry.extend(metrics)
        registry.extend(copy_rate_metrics(items, compared, cfg))
    with timed(timings, "compliance"):
        metrics, compliance = compliance_suite(cfg, sim, items, turns, systems, end_bias=sim_end_bias(cfg, sim),
                                               same_cap=SAME_CAP)
        registry.extend(metrics)
    plots = {"turn_length": {s: [len(words(t)) for t in compared[s] if t is not None] for s in [HUMAN, *systems]},
             "disclosure_curve": aligned_curves(fm_plots["disclosure_curve"]),
             "drift": aligned_curves(fm_plots["drift"])}

    with (out / "samples.jsonl").open("w", encoding="utf-8") as fh:
        for row in sample_rows(items, generated, turns, cfg.history_tail):
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out / "plots.json").write_text(json.dumps(json_safe(plots), ensure_ascii=False), encoding="utf-8")
    if headline:
        headline["judge_choice"] = selection["reason"]
    doc = {"headline": headline, "judge_selection": selection, "decoding": decoding, "metrics": registry.to_list(), "paired": paired,
           "paired_differences": differences, "controls": controls,
           "compliance": compliance, "human_floor": floor, "truncation": truncation, "config": config_to_dict(cfg), "seed": cfg.seed,
           "git_revision": info["git_revision"], "versions": info["versions"],
           "train_run": train_run_info(Path(cfg.run_dir)), "n_items": len(items), "n_users": len(set(users)),
           "n_conversations": len(records), "timings_s": timings, "processes": shard.world}
    (out / "metrics.json").write_text(json.dumps(json_safe(doc), indent=1, ensure_ascii=False), encoding="utf-8")
    print(format_table(list(registry), systems))
    print("step timings (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    if headline:
        print(headline["sentence"] + f" (headline judge: {selection['reason']})")
        if headline.get("baselines_sentence"):
            print(headline["baselines_sentence"])
    print(f"controls: {'FLAGGED ' + ', '.join(controls['flags']) if controls['flags'] else 'passed (no flags)'}")
    return out


def cli(argv: list[str] | None = None) -> int:
    import sys

    return run_stage_cli(list(sys.argv[1:] if argv is None else argv), EvalConfig, main, prog="usersim eval",
                         default_config=None)


if __name__ == "__main__":
    raise SystemExit(cli())
