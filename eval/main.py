"""``usersim eval``: fidelity of a trained user simulator against held-out humans.

Reads the held-out per-turn items of a data run and a train run's adapter, simulates every item's
next user turn with the trained simulator and with the untuned base (same prompt), then writes to
the eval run directory (docs/contracts.md):

* ``metrics.json`` — registered metrics (eval.registry) with 95% CIs and human references,
  the discriminator controls and their flags, and the run's provenance;
* ``samples.jsonl`` — one row per item: real, simulated and base turn side by side;
* ``plots.json``  — the data behind every report figure.

Definitions of every metric: eval/METRICS.md.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from data_prep.run_info import write_run_dir_header
from data_prep.stage_config import config_to_dict, run_stage_cli
from eval.behaviour import behaviour_metrics, ending_metrics, first_turn_diversity_metrics
from eval.bootstrap import bootstrap_by_user
from eval.config import EvalConfig
from eval.controllability import controllability_metrics, swapped_conditions
from eval.controls import non_human_texts, run_controls
from eval.discriminators import DiscriminatorResult, FoldFit, discriminate, fast_fold_fit, neural_fold_fit
from eval.failure_modes import failure_mode_metrics, sample_diversity_metrics
from eval.registry import BASE, HUMAN, SIMULATOR, Metric, MetricRegistry
from eval.style_features import words

INSTRUCT = "instruct"


# ----------------------------------------------------------------------------- pure helpers
def select_items(items: Sequence[dict[str, Any]], max_items: int, seed: int,
                 per_conversation: int = 0) -> list[dict[str, Any]]:
    """Seeded sample of held-out items, drawn by conversation, item order kept.

    Conversations are taken in a seeded random order until ``max_items`` items (0 = all); of each
    conversation at most ``per_conversation`` items (0 = all) are kept, chosen at random, so a long
    conversation does not eat the budget and more users are seen (the discriminators' CIs resample
    users).
    """
    rng = random.Random(seed)
    by_conv: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_conv.setdefault(it["conversation_id"], []).append(i)
    convs = sorted(by_conv)
    rng.shuffle(convs)
    chosen: list[int] = []
    for c in convs:
        if max_items > 0 and len(chosen) >= max_items:
            break
        idx = by_conv[c]
        if 0 < per_conversation < len(idx):
            idx = rng.sample(idx, per_conversation)
        chosen.extend(idx)
    return [items[i] for i in sorted(chosen)]


def human_turns(items: Sequence[dict[str, Any]]) -> tuple[list[str | None], list[bool]]:
    """Real turn text per item (None for an end-of-conversation target) and the real end flags."""
    return ([None if it["target_is_end"] else it["target"] for it in items],
            [bool(it["target_is_end"]) for it in items])


def simulated_turns(turns: Sequence[Any]) -> tuple[list[str | None], list[bool]]:
    """Text (None when the turn ended the conversation) and end flags of generated turns."""
    return ([None if t.ends_conversation else t.text for t in turns], [bool(t.ends_conversation) for t in turns])


def texts_with_users(texts: Sequence[str | None], users: Sequence[str]) -> tuple[list[str], list[str]]:
    keep = [(t, u) for t, u in zip(texts, users) if t is not None]
    return [t for t, _ in keep], [u for _, u in keep]


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
    """exp(sum NLL / sum tokens) of the real user turns, CI by resampling users."""
    nll = np.array([float(r["nll_sum"]) for r in rows])
    tokens = np.array([int(r["n_tokens"]) for r in rows])
    users = [str(r["user_id"]) for r in rows]

    def ppl(ix: np.ndarray) -> float:
        n = tokens[ix].sum()
        return float(np.exp(nll[ix].sum() / n)) if n else float("nan")

    v, lo, hi = bootstrap_by_user(users, ppl, n_boot=n_boot, seed=seed)
    return Metric("heldout_perplexity", system, "perplexity", v, lo, hi, int(tokens.sum()), False, None, None,
                  "perplexity of the held-out human user turns (incl. end-of-conversation markers); n = tokens")


def discriminator_metrics(result: DiscriminatorResult, system: str, reference: float | None) -> list[Metric]:
    suffix = "" if result.name == "fast" else f"_{result.name}"
    kind = "TF-IDF word+char n-grams + style features" if result.name == "fast" else "frozen MiniLM embeddings"
    return [
        Metric(f"discriminator_accuracy{suffix}", system, "discriminator", result.accuracy, result.ci_low,
               result.ci_high, result.n_real + result.n_candidate, None, reference, 0.5,
               f"out-of-fold real-vs-{system} accuracy, {kind} + logistic regression, folds grouped by user; "
               "0.5 = indistinguishable (human_reference: the human-vs-human control)"),
        Metric(f"discriminator_auc{suffix}", system, "discriminator", result.auc, result.auc_ci_low,
               result.auc_ci_high, result.n_real + result.n_candidate, None, None, 0.5,
               f"ROC AUC of the same out-of-fold predictions ({kind})"),
    ]


def sample_rows(items, texts: dict[str, list], ends: dict[str, list], history_tail: int) -> list[dict[str, Any]]:
    rows = []
    for i, it in enumerate(items):
        row = {"id": it["id"], "user_id": it["user_id"], "turn_index": it["turn_index"], "condition": it["condition"],
               "history_tail": list(it["history"])[-history_tail:] if history_tail else [],
               "real": texts[HUMAN][i] or "", "real_ends": ends[HUMAN][i]}
        for s, key in ((SIMULATOR, "simulated"), (BASE, "base"), (INSTRUCT, "instruct")):
            if s in texts:
                row[key] = texts[s][i] or ""
                row[f"{key}_ends"] = ends[s][i]
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


# ----------------------------------------------------------------------------- stage steps
def load_held_out(cfg: EvalConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(per-turn items, conversation records) of the held-out split, sampled by conversation."""
    from datasets import load_from_disk

    path = Path(cfg.data_dir) / "dataset"
    if not path.is_dir():
        raise FileNotFoundError(f"{path} not found: run `usersim data` first or set data_dir=<data run dir>")
    ds = load_from_disk(str(path))
    turns_split = f"{cfg.split}_turns"
    for split in (cfg.split, turns_split):
        if split not in ds:
            raise KeyError(f"{path} has no split {split!r} (has {list(ds)}); set split=test or validation")
    items = select_items(ds[turns_split].to_list(), cfg.max_items, cfg.seed, cfg.max_items_per_conversation)
    convs = {it["conversation_id"] for it in items}
    records = [r for r in ds[cfg.split].to_list() if r["id"] in convs]
    if len({it["user_id"] for it in items}) < 4:
        raise ValueError(f"only {len({it['user_id'] for it in items})} held-out users in the sample: the user-"
                         "grouped discriminators need at least 4; raise max_items or use a bigger split")
    return items, records


@contextlib.contextmanager
def timed(timings: dict[str, float], name: str):
    """Record the wall time of a step (reported in metrics.json["timings_s"] and printed)."""
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 2)


def generation_kwargs(cfg: EvalConfig) -> dict[str, Any]:
    return {"do_sample": cfg.do_sample, "temperature": cfg.temperature, "top_p": cfg.top_p}


def simulate_all(cfg: EvalConfig, sim: Any, items: list[dict[str, Any]], gen: dict[str, Any]):
    """Per-item turn text (None = ended) and end flags for human, simulator, base (+ instruct)."""
    from eval.simulate import generate_turns

    texts, ends = {}, {}
    texts[HUMAN], ends[HUMAN] = human_turns(items)
    for system, use_adapter in ((SIMULATOR, True), (BASE, False)):
        turns = [t[0] for t in generate_turns(sim, items, use_adapter=use_adapter, **gen)]
        texts[system], ends[system] = simulated_turns(turns)
    if cfg.instruct_baseline:
        from eval.instruct_baseline import generate_instruct_turns

        pairs = generate_instruct_turns(cfg.instruct_baseline, items, system_prompt=cfg.instruct_system_prompt,
                                        max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, seed=cfg.seed,
                                        do_sample=cfg.do_sample, temperature=cfg.temperature, top_p=cfg.top_p,
                                        device=cfg.device, trust_remote_code=cfg.trust_remote_code,
                                        show_progress=cfg.show_progress)
        texts[INSTRUCT] = [None if e else t for t, e in pairs]
        ends[INSTRUCT] = [e for _, e in pairs]
    return texts, ends


def perplexity_metrics(cfg: EvalConfig, sim: Any, records: list[dict[str, Any]]) -> list[Metric]:
    from eval.perplexity import user_turn_nll

    if cfg.perplexity_max_conversations > 0:
        records = records[:cfg.perplexity_max_conversations]
    out = []
    for system, use_adapter in ((SIMULATOR, True), (BASE, False)):
        rows = user_turn_nll(sim, records, use_adapter=use_adapter, batch_size=cfg.perplexity_batch_size,
                             max_seq_len=cfg.perplexity_max_seq_len, show_progress=cfg.show_progress)
        out.append(perplexity_metric(rows, system, n_boot=cfg.n_boot, seed=cfg.seed))
    return out


def extra_generation_metrics(cfg: EvalConfig, sim: Any, items: list[dict[str, Any]], texts: dict[str, list],
                             gen: dict[str, Any]) -> list[Metric]:
    """Sample diversity (several samples of one prompt) and controllability (swapped conditions)."""
    from eval.simulate import generate_turns

    users = [str(it["user_id"]) for it in items]
    text_items = [i for i, it in enumerate(items) if not it["target_is_end"]]
    rng = random.Random(cfg.seed)
    out: list[Metric] = []
    if cfg.diversity_prompts > 0 and cfg.num_diversity_samples > 1:
        picks = sorted(rng.sample(text_items, min(cfg.diversity_prompts, len(text_items))))
        samples = {}
        for system, use_adapter in ((SIMULATOR, True), (BASE, False)):
            rows = generate_turns(sim, [items[i] for i in picks], use_adapter=use_adapter,
                                  num_samples=cfg.num_diversity_samples, **{**gen, "seed": cfg.seed + 1})
            samples[system] = [[t.text for t in row] for row in rows]
        out += sample_diversity_metrics(samples, [users[i] for i in picks], n_boot=cfg.n_boot, seed=cfg.seed)
    if cfg.controllability_items > 0:
        picks = sorted(rng.sample(text_items, min(cfg.controllability_items, len(text_items))))
        ctl_items = [items[i] for i in picks]
        if len({it["user_id"] for it in ctl_items}) < 2:
            print("[usersim eval] controllability skipped: the sampled items come from fewer than 2 users")
            return out
        swapped = swapped_conditions(ctl_items, cfg.seed)
        swapped_turns = [t[0] for t in generate_turns(sim, ctl_items, conditions=swapped, **gen)]
        out += controllability_metrics(ctl_items, [texts[HUMAN][i] for i in picks],
                                       [texts[SIMULATOR][i] for i in picks], simulated_turns(swapped_turns)[0],
                                       swapped, n_boot=cfg.n_boot, seed=cfg.seed)
    return out


def discriminator_section(cfg: EvalConfig, texts: dict[str, list], users: list[str], systems: list[str]):
    """Both discriminators for every system, their controls, and the ROC plot data."""
    real_texts, real_users = texts_with_users(texts[HUMAN], users)
    fold_fits: dict[str, FoldFit] = {"fast": fast_fold_fit}
    if cfg.neural_discriminator:  # embed every text (incl. the control's non-human set) in one pass
        every_text = real_texts + [t for s in systems for t in texts[s] if t is not None]
        fold_fits["neural"] = neural_fold_fit(every_text + non_human_texts(real_texts, cfg.seed))
    controls = run_controls(real_texts, real_users, fold_fits, n_splits=cfg.n_splits, n_boot=cfg.n_boot,
                            seed=cfg.seed)
    metrics: list[Metric] = []
    plots: dict[str, Any] = {}
    for name, fit in fold_fits.items():
        roc = plots.setdefault("roc" if name == "fast" else f"roc_{name}", {})
        for system in systems:
            cand, cand_users = texts_with_users(texts[system], users)
            if len(cand) < 2:  # e.g. a system that ends every conversation: nothing to discriminate
                print(f"[usersim eval] {system}: {len(cand)} non-end turns; discriminator {name} not computed")
                continue
            result = discriminate(real_texts, real_users, cand, cand_users, fold_fit=fit, name=name,
                                  n_splits=cfg.n_splits, n_boot=cfg.n_boot, seed=cfg.seed)
            metrics += discriminator_metrics(result, system, controls["human_vs_human"][name]["accuracy"])
            roc[system] = {**result.roc, "auc": result.auc}
    return metrics, controls, plots


def statistics_section(cfg: EvalConfig, items: list[dict[str, Any]], texts: dict[str, list],
                       ends: dict[str, list], systems: list[str]):
    """Behavioural statistics and failure modes of every system against the humans on the same items."""
    users = [str(it["user_id"]) for it in items]
    turn_indices = [int(it["turn_index"]) for it in items]
    others = {s: texts[s] for s in systems}
    boot = dict(n_boot=cfg.n_boot, seed=cfg.seed)
    metrics = behaviour_metrics(texts[HUMAN], others, users, **boot)
    metrics += first_turn_diversity_metrics(texts[HUMAN], others, users, turn_indices, **boot)
    metrics += ending_metrics(ends[HUMAN], {s: ends[s] for s in systems}, users, turn_indices, **boot)
    fm, fm_plots = failure_mode_metrics(items, texts, ends, late_turn=cfg.late_turn, max_turn=cfg.max_turn, **boot)
    plots = {"turn_length": {s: [len(words(t)) for t in texts[s] if t is not None] for s in [HUMAN, *systems]},
             "disclosure_curve": aligned_curves(fm_plots["disclosure_curve"]),
             "drift": aligned_curves(fm_plots["drift"])}
    return metrics + fm, plots


def main(cfg: EvalConfig) -> Path:
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    import torch

    torch.manual_seed(cfg.seed)
    from usersim.simulator import UserSimulator

    out = Path(cfg.output_dir)
    info = write_run_dir_header(out, cfg, cfg.seed, "eval")
    items, records = load_held_out(cfg)
    users = [str(it["user_id"]) for it in items]
    sim = UserSimulator.from_pretrained(cfg.run_dir, base_model=cfg.base_model or None, device=cfg.device or None,
                                        dtype=cfg.dtype or None, trust_remote_code=cfg.trust_remote_code,
                                        max_prompt_tokens=cfg.max_prompt_tokens)
    gen = dict(seed=cfg.seed, batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
               show_progress=cfg.show_progress, **generation_kwargs(cfg))
    registry, timings, plots = MetricRegistry(), {}, {}

    with timed(timings, "simulate"):
        texts, ends = simulate_all(cfg, sim, items, gen)
    systems = [s for s in (SIMULATOR, BASE, INSTRUCT) if s in texts]
    with timed(timings, "perplexity"):
        registry.extend(perplexity_metrics(cfg, sim, records) if cfg.perplexity else [])
    with timed(timings, "diversity_and_controllability"):
        registry.extend(extra_generation_metrics(cfg, sim, items, texts, gen))
    with timed(timings, "discriminators"):
        metrics, controls, roc_plots = discriminator_section(cfg, texts, users, systems)
        registry.extend(metrics)
    with timed(timings, "statistics"):
        metrics, stat_plots = statistics_section(cfg, items, texts, ends, systems)
        registry.extend(metrics)
    plots = {**stat_plots, **roc_plots}

    with (out / "samples.jsonl").open("w", encoding="utf-8") as fh:
        for row in sample_rows(items, texts, ends, cfg.history_tail):
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out / "plots.json").write_text(json.dumps(json_safe(plots), ensure_ascii=False), encoding="utf-8")
    doc = {"metrics": registry.to_list(), "controls": json_safe(controls), "config": config_to_dict(cfg),
           "seed": cfg.seed, "git_revision": info["git_revision"], "versions": info["versions"],
           "train_run": train_run_info(Path(cfg.run_dir)), "n_items": len(items), "n_users": len(set(users)),
           "n_conversations": len(records), "timings_s": timings}
    (out / "metrics.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
    print(format_table(list(registry), systems))
    print("step timings (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    print(f"controls: {'FLAGGED ' + ', '.join(controls['flags']) if controls['flags'] else 'passed (no flags)'}")
    return out


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


def cli(argv: list[str] | None = None) -> int:
    import sys

    return run_stage_cli(list(sys.argv[1:] if argv is None else argv), EvalConfig, main, prog="usersim eval",
                         default_config=None)


if __name__ == "__main__":
    raise SystemExit(cli())
