"""An eval run directory as the readers see it: metrics.json (required), samples.jsonl, plots.json, run_info.json.

The summary (usersim.eval.summary), the report (usersim.eval.report) and the model card (usersim.publish) read a
run through :func:`load_eval_run`, so all three read it the same way (contract: docs/contracts.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class EvalRun:
    """What an eval run directory holds (every part optional except metrics.json)."""

    eval_dir: Path
    metrics: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)
    plots: dict[str, Any] = field(default_factory=dict)
    run_info: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self.metrics.get("metrics") or [])

    @property
    def controls(self) -> dict[str, Any]:
        return dict(self.metrics.get("controls") or {})

    @property
    def flags(self) -> list[str]:
        return [str(f) for f in (self.controls.get("flags") or [])]

    @property
    def headline(self) -> dict[str, Any]:
        head = self.metrics.get("headline")
        return dict(head) if isinstance(head, dict) else {}

    @property
    def claimed_effect(self) -> float | None:
        """The effect the run claims to resolve: the headline's own, else the eval config's."""
        cfg = self.metrics.get("config")
        for value in (self.headline.get("claimed_effect"), cfg.get("claimed_effect") if isinstance(cfg, dict) else None):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return value
        return None


class EvalRunError(FileNotFoundError):
    """The directory is not an eval run (no metrics.json) or a file in it is unreadable."""


def resolve_eval_dir(path: str | Path) -> Path:
    """``runs/<profile>`` or ``runs/<profile>/eval`` -> the directory holding metrics.json."""
    path = Path(path)
    for candidate in (path, path / "eval"):
        if (candidate / "metrics.json").is_file():
            return candidate
    raise EvalRunError(f"no metrics.json in {path} or {path / 'eval'}: run `usersim eval` (or `make eval`) first")


def _read_json(path: Path, default: Any) -> Any:
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise EvalRunError(f"{path} is not valid JSON ({err}); rerun `usersim eval`") from err


def read_samples(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise EvalRunError(f"{path}:{i + 1} is not valid JSON ({err})") from err
    return out


def load_eval_run(path: str | Path) -> EvalRun:
    eval_dir = resolve_eval_dir(path)
    metrics = _read_json(eval_dir / "metrics.json", {})
    if not isinstance(metrics, dict):
        raise EvalRunError(f"{eval_dir / 'metrics.json'}: expected an object with 'metrics', got {type(metrics).__name__}")
    return EvalRun(
        eval_dir=eval_dir,
        metrics=metrics,
        samples=read_samples(eval_dir / "samples.jsonl"),
        plots=_read_json(eval_dir / "plots.json", {}) or {},
        run_info=_read_json(eval_dir / "run_info.json", {}) or {},
    )


def find_metric(rows: list[dict[str, Any]], names: tuple[str, ...], system: str) -> dict[str, Any] | None:
    """The first row whose name is in ``names`` (in that order of preference) for ``system``."""
    for name in names:
        for row in rows:
            if row.get("name") == name and row.get("system") == system:
                return row
    return None
