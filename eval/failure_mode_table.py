"""The seed's failure modes of prompted user simulators, and the metrics.json rows that measure each.

This is the one place that maps a failure mode to metric names: the report's table and chart
(usersim.eval.report, usersim.eval.plots), the summary ``make all`` prints (usersim.eval.summary) and the model card
(usersim.publish) all read :data:`FAILURE_MODES`. Nothing here computes a number: a cell is a stored
row of ``metrics.json`` and its reference is the row's own ``human`` counterpart, split-half floor or
target, whichever the run stored.

How a metric is read against humans (decided by what the run stored, never by this module):

* a ``human`` row of the same name exists (a rate or a per-turn statistic): the human value with its
  CI is the reference, and a system is good when it lands near it;
* no ``human`` row but a ``human_reference`` (a distance to the humans, e.g. the area between the
  disclosure curves): ``human_reference`` is the *split-half floor*, the same distance between two
  disjoint groups of held-out humans at this n; a system at or under the floor is as close as
  humans are to each other;
* only a ``target`` (e.g. ``end_f1``, target 1): the target is the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

# Column order of every failure-mode table; "human" is the reference column, not a system column.
SYSTEMS = ("simulator", "base", "prompted")
SYSTEM_LABELS = {"human": "held-out humans", "simulator": "trained simulator", "base": "untuned base",
                 "prompted": "prompted LLM as user"}
NOT_COMPUTED = "not computed"


@dataclass(frozen=True)
class FailureMode:
    key: str
    label: str
    means: str  # what a simulator with this failure does, in a few words
    metrics: tuple[str, ...]  # metrics.json names; the chart draws the first that has a human reference


FAILURE_MODES: tuple[FailureMode, ...] = (
    FailureMode("too_knowledgeable", "too knowledgeable",
                "states as fact what the condition says the user wants to find out", ("knowledge_leak_rate",)),
    FailureMode("spoon_feeding", "spoon-feeding",
                "hands over everything the user knows at once instead of bit by bit",
                ("disclosure_area_between_curves", "disclosure_share")),
    FailureMode("assistant_like", "sounds like an assistant",
                "assistant phrasing, lists, long structured answers", ("assistant_likeness_rate",)),
    FailureMode("drift", "persona / style drift",
                "misses the requested style, more so as the conversation goes on", ("style_drift", "style_mismatch")),
    FailureMode("memory", "forgets what was answered", "asks again what the assistant already answered",
                ("reask_rate",)),
    FailureMode("diversity", "lack of diversity", "says much the same thing every time",
                ("sample_self_similarity", "lexical_diversity_mattr_abs_diff")),
    FailureMode("never_leaves", "never wants to leave", "does not end the conversation when a person would",
                ("end_rate", "end_f1", "end_f1_expected", "end_auc")),
    FailureMode("compliant", "too eager to comply",
                "goes along when the assistant steers them against their own interest or goal",
                ("compliance_rate", "direct_question_answer_rate")),
    FailureMode("artefacts", "not something a person types",
                "control or unused tokens, leaks of the prompt format, document scaffolding such as [Story]",
                ("artefact_rate",)),
)


def _rows_by(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(name, system) -> the first stored row."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        out.setdefault((str(row.get("name")), str(row.get("system"))), row)
    return out


@dataclass
class Reference:
    """What one metric is read against: ``kind`` is ``human``, ``floor``, ``target`` or ``none``."""

    kind: str
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    @property
    def label(self) -> str:
        return {"human": "human", "floor": "human split-half floor", "target": "target", "none": ""}[self.kind]


def reference_of(name: str, rows_by: dict[tuple[str, str], dict[str, Any]], systems: Iterable[str] = SYSTEMS) -> Reference:
    human = rows_by.get((name, "human"))
    if human is not None and human.get("value") is not None:
        return Reference("human", human["value"], human.get("ci_low"), human.get("ci_high"))
    system_rows = [rows_by[(name, s)] for s in systems if (name, s) in rows_by]
    floor = next((r["human_reference"] for r in system_rows if r.get("human_reference") is not None), None)
    if floor is not None:
        return Reference("floor", floor)
    target = next((r["target"] for r in system_rows if r.get("target") is not None), None)
    if target is not None:
        return Reference("target", target)
    return Reference("none")


@dataclass
class MetricLine:
    """One metric of a failure mode: its reference and each system's stored row (None = absent)."""

    name: str
    description: str
    reference: Reference
    systems: dict[str, dict[str, Any] | None]


@dataclass
class FailureModeLine:
    mode: FailureMode
    metrics: list[MetricLine]

    @property
    def chart_metric(self) -> MetricLine | None:
        """The metric drawn in the chart: the first with a human value or floor, else the first present."""
        present = [m for m in self.metrics if any(r is not None for r in m.systems.values())]
        with_ref = [m for m in present if m.reference.kind in ("human", "floor")]
        return (with_ref or present or [None])[0]


def systems_present(rows: Iterable[dict[str, Any]]) -> list[str]:
    """simulator and base always (a missing one reads "not computed"); prompted only when the run has it."""
    present = {r.get("system") for r in rows}
    return [s for s in SYSTEMS if s in ("simulator", "base") or s in present]


def failure_mode_lines(rows: list[dict[str, Any]], systems: list[str] | None = None) -> list[FailureModeLine]:
    """Every failure mode with its metrics, in :data:`FAILURE_MODES` order (stored rows only)."""
    systems = systems or systems_present(rows)
    by = _rows_by(rows)
    out = []
    for mode in FAILURE_MODES:
        lines = []
        for name in mode.metrics:
            stored = {s: by.get((name, s)) for s in systems}
            any_row = next((r for r in (*stored.values(), by.get((name, "human"))) if r is not None), None)
            lines.append(MetricLine(name, str((any_row or {}).get("description") or ""),
                                    reference_of(name, by, systems), stored))
        out.append(FailureModeLine(mode, lines))
    return out
