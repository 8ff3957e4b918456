"""What eval writes besides its metrics: the per-item samples, the printed table, provenance, JSON-safe values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from usersim.eval.registry import BASE, HUMAN, PROMPTED, SIMULATOR, Metric
from usersim.eval.simulate import SystemTurns

SAMPLE_KEYS = {SIMULATOR: "simulated", BASE: "base", PROMPTED: "prompted"}


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
