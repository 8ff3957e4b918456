"""Registered metrics: every number in ``metrics.json`` is one :class:`Metric`.

A metric has a name, the system it describes (``simulator``, ``base``, ``human``, ...), a group
(``perplexity``, ``discriminator``, ``behaviour``, ``failure_mode``, ``controllability``), a value
with a 95% CI, how many units it rests on, a direction and a human reference. ``metrics.json``
is ``[m.to_dict() for m in registry]``; the report renders these without recomputing anything.
Definitions of every name live in eval/METRICS.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterator

SIMULATOR = "simulator"
BASE = "base"
HUMAN = "human"
PROMPTED = "prompted"
INFERENCE_KEYS = ("p_value", "null_low", "null_high", "mde")


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclass
class Metric:
    name: str
    system: str
    group: str
    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n: int = 0
    # True/False, or None when the goal is to match ``target`` / ``human_reference``.
    higher_is_better: bool | None = None
    human_reference: float | None = None
    target: float | None = None
    description: str = ""
    # Permutation inference (eval.permutation), for metrics tested against chance: two-sided p-value,
    # the 95% band where indistinguishable systems land at this n, and the minimum detectable effect.
    p_value: float | None = None
    null_low: float | None = None
    null_high: float | None = None
    mde: float | None = None

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        for key in ("value", "ci_low", "ci_high", "human_reference", "target", *INFERENCE_KEYS):
            row[key] = _finite(row[key])  # NaN/inf are not JSON; they become null
        row["n"] = int(self.n)
        return row


class MetricRegistry:
    """An ordered collection of metrics; ``(name, system)`` is unique."""

    def __init__(self) -> None:
        self._metrics: list[Metric] = []

    def add(self, metric: Metric) -> Metric:
        if self.get(metric.name, metric.system) is not None:
            raise ValueError(f"metric {metric.name!r} for system {metric.system!r} registered twice")
        self._metrics.append(metric)
        return metric

    def extend(self, metrics: list[Metric]) -> None:
        for m in metrics:
            self.add(m)

    def get(self, name: str, system: str) -> Metric | None:
        for m in self._metrics:
            if m.name == name and m.system == system:
                return m
        return None

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._metrics)

    def __len__(self) -> int:
        return len(self._metrics)

    def to_list(self) -> list[dict[str, Any]]:
        return [m.to_dict() for m in self._metrics]


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
