"""The metrics.json contract the eval stage's output must follow (checked by the tests)."""

from __future__ import annotations

from typing import Any

from usersim.eval.registry import INFERENCE_KEYS

METRIC_KEYS = ("name", "system", "group", "value", "ci_low", "ci_high", "n", "higher_is_better",
               "human_reference", "target", "description", *INFERENCE_KEYS)


def validate_metrics_json(doc: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the first way ``doc`` breaks the metrics.json contract."""
    for key in ("metrics", "controls", "config", "seed", "git_revision", "versions", "train_run"):
        if key not in doc:
            raise ValueError(f"metrics.json lacks top-level key {key!r}")
    if not isinstance(doc["metrics"], list):
        raise ValueError("metrics.json 'metrics' must be a list")
    for i, m in enumerate(doc["metrics"]):
        missing = [k for k in METRIC_KEYS if k not in m]
        if missing:
            raise ValueError(f"metrics[{i}] ({m.get('name')}) lacks {missing}")
        if m["higher_is_better"] not in (True, False, None):
            raise ValueError(f"metrics[{i}] higher_is_better must be true/false/null")
        for k in ("value", "ci_low", "ci_high", "human_reference", "target", *INFERENCE_KEYS):
            if m[k] is not None and not isinstance(m[k], (int, float)):
                raise ValueError(f"metrics[{i}].{k} must be a number or null")
    controls = doc["controls"]
    for key in ("paired", "human_vs_human", "flags"):
        if key not in controls:
            raise ValueError(f"metrics.json controls lacks {key!r}")
    if not isinstance(controls["flags"], list):
        raise ValueError("controls.flags must be a list")
