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

Where each part lives: the systems and their turns in usersim.eval.systems; the suites in
usersim.eval.discrimination_suite (judges, controls, headline), usersim.eval.behaviour_suite (perplexity,
behaviour and failure modes, human floors, copy rate, diversity, controllability) and
usersim.eval.compliance_suite (the steering probes); what is written beside metrics.json in
usersim.eval.outputs. This module loads, generates once per system, runs the suites and writes.
Definitions of every metric: eval/METRICS.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from usersim.data_prep.run_info import write_run_dir_header
from usersim.data_prep.stage_config import config_to_dict, run_stage_cli
from usersim.eval.config import EvalConfig
from usersim.eval.compliance_suite import compliance_suite
from usersim.eval.failure_modes import sample_diversity_metrics
from usersim.eval.decoding_choice import resolve_decoding, sim_end_bias
from usersim.eval.condition_use import check_variants, condition_use_metrics
from usersim.eval.items import add_reference_styles, select_items
from usersim.eval.registry import BASE, HUMAN, PROMPTED, SIMULATOR, MetricRegistry
from usersim.eval.shard import current_shard, merge_rows, merge_turns
from usersim.eval.simulate import SystemTurns, item_condition
from usersim.eval.style_features import words
from usersim.eval.behaviour_suite import (aligned_curves, copy_rate_metrics, extra_generation_metrics, human_floor,
                                         leaking_items, perplexity_section, statistics, style_differences)
from usersim.eval.discrimination_suite import discrimination_section, eval_judges, select_headline_judge
from usersim.eval.outputs import format_table, json_safe, sample_rows, train_run_info
from usersim.eval.systems import RESAMPLE, SAME_CAP, generate_all, perplexity_records, perplexity_rows


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
    every_record = ds[cfg.split].to_list()
    add_reference_styles(pool, every_record)  # the human floor's second group is drawn from the pool too
    items = select_items(pool, cfg.max_items, cfg.seed, cfg.max_items_per_conversation)
    leaks = leaking_items(items)
    if leaks:
        raise ValueError(f"{len(leaks)} of {len(items)} eval items have a condition holding a 4-word span of the "
                         f"turn to be predicted (e.g. {leaks[0]}): the data run predates leak-free conditions; "
                         "re-run `usersim data`")
    convs = {it["conversation_id"] for it in items}
    records = [r for r in every_record if r["id"] in convs]
    n_users = len({it["user_id"] for it in items})
    if n_users < 4:
        raise ValueError(f"only {n_users} held-out users in the sample: the user-grouped judges need at least 4; "
                         "raise max_items or use a bigger split")
    return items, records, pool


def main(cfg: EvalConfig) -> Path:
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    import torch

    torch.manual_seed(cfg.seed)
    from usersim.simulator import UserSimulator

    check_variants(cfg.condition_use_variants)
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
    prompts = [sim.prompt(it["history"], item_condition(it)) for it in items]  # tokenised once, for every system
    over = sum(len(p.input_ids) > sim.max_prompt_tokens for p in prompts)
    if over and shard.is_main:
        print(f"[usersim eval] {over} prompts are over max_prompt_tokens={sim.max_prompt_tokens} with their condition "
              "header alone; they are used untruncated")
    with timed(timings, "simulate"):
        generated = generate_all(cfg, sim, [items[i] for i in mine], [prompts[i].input_ids for i in mine])
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
                  "prompt_turns_dropped": sum(p.turns_dropped > 0 for p in prompts)}
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
        if cfg.condition_use_conversations > 0:
            registry.extend(condition_use_metrics(cfg, sim, records))
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
        chances = {s: turns[s].end_chances(sim_end_bias(cfg, sim)) for s in systems}
        metrics, fm_plots = statistics(items, compared, ends, cfg, chances)
        floor = human_floor(cfg, items, pool, sim.tokenizer)
        for m in metrics:  # a distance is read against the distance between two groups of humans
            if m.system != HUMAN and m.human_reference == 0.0 and m.name in floor:
                m.human_reference = floor[m.name]
        registry.extend(metrics)
        registry.extend(copy_rate_metrics(items, compared, cfg))
        for key, body in style_differences(fm_plots["style_mismatch"], users,
                                           [s for s in systems if s != SIMULATOR] + [HUMAN], cfg).items():
            differences.setdefault(key, {}).update(body)
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
