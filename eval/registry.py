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
HUMAN_B = "human_b"  # the second, disjoint group of held-out humans (the floor of every distance)
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
    # Permutation inference (usersim.eval.permutation), for metrics tested against chance: two-sided p-value,
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
