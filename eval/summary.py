"""Read an eval run directory and say what it found, without computing a single new number.

``python -m eval.summary runs/<profile>`` (the last step of ``make all``) prints where the report
is and five lines: discriminator accuracy trained vs base, held-out perplexity trained vs base,
the controls, the failure mode furthest from humans, and the run's wall time and sizes.

The small readers here (``load_eval_run``, ``find_metric``, ``headline``, ``worst_failure_mode``)
are shared with ``eval.report`` and ``usersim.publish`` so that all three pick the same rows of
``metrics.json`` (contract: docs/contracts.md, names: eval/METRICS.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NOT_COMPUTED = "not computed"

# Metric names are looked up by these predicates so that a renamed variant (``_fast``, ``_ngram``)
# is still found; exact names from eval/METRICS.md come first.
DISCRIMINATOR_NAMES = ("discriminator_accuracy", "discriminator_accuracy_fast", "discriminator_accuracy_ngram")
NEURAL_DISCRIMINATOR_NAMES = ("discriminator_accuracy_neural", "discriminator_accuracy_minilm")
PERPLEXITY_NAMES = ("heldout_perplexity", "held_out_perplexity", "perplexity")
FAILURE_MODE_GROUPS = ("failure_mode", "failure_modes", "failure")


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


def fmt(value: Any, digits: int = 3) -> str:
    """A number for people: 3 significant digits, ``not computed`` for missing."""
    if value is None:
        return NOT_COMPUTED
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:  # NaN
            return NOT_COMPUTED
        return f"{value:.{digits}g}" if abs(value) < 10 ** digits else f"{value:,.0f}"
    return str(value)


def fmt_ci(row: dict[str, Any] | None) -> str:
    """``0.612 [0.58, 0.64]`` from a metrics row; ``not computed`` when absent."""
    if not row or row.get("value") is None:
        return NOT_COMPUTED
    text = fmt(row["value"])
    if row.get("ci_low") is not None and row.get("ci_high") is not None:
        text += f" [{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]"
    return text


def direction(row: dict[str, Any]) -> str:
    """``↑`` higher is better, ``↓`` lower is better, ``target X`` / ``match human`` otherwise."""
    hib = row.get("higher_is_better")
    if hib is True:
        return "↑ higher is better"
    if hib is False:
        return "↓ lower is better"
    if row.get("target") is not None:
        return f"target {fmt(row['target'])}"
    return "match human"


@dataclass
class HeadlineLine:
    label: str
    simulator: dict[str, Any] | None
    base: dict[str, Any] | None
    goal: str


def headline(run: EvalRun) -> list[HeadlineLine]:
    """Discriminator accuracy (fast and neural) and held-out perplexity, trained vs base."""
    rows = run.rows
    out = []
    for label, names in (("Discriminator accuracy (real vs simulated)", DISCRIMINATOR_NAMES),
                         ("Neural discriminator accuracy", NEURAL_DISCRIMINATOR_NAMES),
                         ("Held-out perplexity of human turns", PERPLEXITY_NAMES)):
        sim, base = find_metric(rows, names, "simulator"), find_metric(rows, names, "base")
        any_row = sim or base
        if any_row is None:
            goal = "target 0.5" if "accuracy" in label.lower() else "lower is better"
        else:
            goal = direction(any_row)
        out.append(HeadlineLine(label, sim, base, goal))
    return out


def failure_mode_gap(row: dict[str, Any]) -> float | None:
    """How far a row sits from its human reference: ``|value - human| / max(|human|, 0.1)``.

    Used only to *order* rows (which failure mode to name first); the numbers shown next to it are
    always the stored value and reference. Rows without a human reference (e.g. end_f1, whose
    target is 1.0) are not ranked. The 0.1 floor keeps a near-zero human rate from dominating.
    """
    value, ref = row.get("value"), row.get("human_reference")
    if not isinstance(value, (int, float)) or not isinstance(ref, (int, float)):
        return None
    return abs(value - ref) / max(abs(ref), 0.1)


def worst_failure_mode(run: EvalRun, system: str = "simulator") -> dict[str, Any] | None:
    rows = [r for r in run.rows if r.get("group") in FAILURE_MODE_GROUPS and r.get("system") == system]
    scored = [(failure_mode_gap(r), r) for r in rows]
    scored = [(g, r) for g, r in scored if g is not None]
    if not scored:
        return None
    return max(scored, key=lambda gr: gr[0])[1]


# What the control flags of eval/controls.py mean, for readers of the report and card.
FLAG_EXPLANATIONS = {
    "discriminator_miscalibrated": "two groups of real humans were told apart (human-vs-human accuracy is not at "
                                   "chance), so a discriminator accuracy near 0.5 is not evidence of fidelity",
    "discriminator_no_power": "text known to be non-human was not reliably caught (CI not above 0.5), so the "
                              "discriminator may be too weak (or n too small) to tell simulated from real",
}


def explain_flag(flag: str) -> str:
    """``code: what it means`` for known flags; unknown flags as they are."""
    return f"{flag}: {FLAG_EXPLANATIONS[flag]}" if flag in FLAG_EXPLANATIONS else flag


def controls_status(run: EvalRun) -> str:
    flags = run.flags
    if flags:
        return f"FLAGGED ({len(flags)}): " + "; ".join(flags)
    if not run.controls:
        return NOT_COMPUTED
    return "ok: no control flagged (human vs human at chance, non-human text caught)"


def _train_run_dir(run: EvalRun) -> Path | None:
    train_run = run.metrics.get("train_run")
    if isinstance(train_run, dict):
        train_run = train_run.get("run_dir") or train_run.get("path") or train_run.get("dir")
    if not train_run:
        return None
    path = Path(str(train_run))
    if not path.is_absolute() and not path.exists():
        path = (run.eval_dir / path)
    return path


def train_run_dir(run: EvalRun) -> Path | None:
    """The train run directory named by metrics.json's ``train_run`` (absolute, or relative to cwd/eval dir)."""
    return _train_run_dir(run)


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _train_metrics(run: EvalRun) -> dict[str, Any]:
    """train_metrics.json as embedded by eval in metrics.json's train_run, else read from the train run."""
    train_run = run.metrics.get("train_run")
    if isinstance(train_run, dict) and isinstance(train_run.get("train_metrics"), dict):
        return train_run["train_metrics"]
    train_dir = train_run_dir(run)
    if train_dir is not None and (train_dir / "train_metrics.json").is_file():
        return _read_json(train_dir / "train_metrics.json", {}) or {}
    return {}


def wall_time_and_sizes(run: EvalRun) -> str:
    """Wall time(s) and sizes stored by the stages; nothing is timed here."""
    parts = []
    for key in ("wall_time_s", "wall_s", "elapsed_s"):
        if isinstance(run.metrics.get(key), (int, float)):
            parts.append(f"eval {run.metrics[key]:.0f} s")
            break
    tm = _train_metrics(run)
    for key in ("wall_time_s", "train_runtime", "train_wall_s", "elapsed_s"):
        if isinstance(tm.get(key), (int, float)):
            parts.append(f"train {tm[key]:.0f} s")
            break
    if isinstance(tm.get("steps"), int):
        parts.append(f"{tm['steps']} steps")
    train_dir = train_run_dir(run)
    adapter = train_dir / "adapter_model.safetensors" if train_dir is not None else None
    if adapter is not None and adapter.is_file():
        parts.append(f"adapter {_human_size(adapter.stat().st_size)}")
    counts = [f"{run.metrics[k]} {label}" for k, label in
              (("n_items", "held-out items"), ("n_users", "users"), ("n_conversations", "conversations"))
              if isinstance(run.metrics.get(k), int)]
    if counts:
        parts.append(", ".join(counts))
    elif run.samples:
        parts.append(f"{len(run.samples)} held-out samples")
    return ", ".join(parts) if parts else NOT_COMPUTED


def summary_lines(run: EvalRun) -> list[str]:
    """The five lines ``make all`` ends with."""
    head = headline(run)
    disc, ppl = head[0], head[2]
    worst = worst_failure_mode(run)
    if worst is None:
        worst_text = NOT_COMPUTED
    else:
        base = find_metric(run.rows, (worst["name"],), "base")
        worst_text = (f"{worst['name']}: simulator {fmt_ci(worst)} vs human {fmt(worst.get('human_reference'))}"
                      + (f" (base {fmt(base.get('value'))})" if base else ""))
    return [
        f"discriminator accuracy: trained {fmt_ci(disc.simulator)} vs base {fmt_ci(disc.base)} (goal 0.5 = indistinguishable)",
        f"held-out perplexity:    trained {fmt_ci(ppl.simulator)} vs base {fmt_ci(ppl.base)} (lower is better)",
        f"controls:               {controls_status(run)}",
        f"worst failure mode:     {worst_text}",
        f"run:                    {wall_time_and_sizes(run)}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.summary", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="runs/<profile> (or its eval/ directory)")
    args = parser.parse_args(argv)
    try:
        run = load_eval_run(args.run)
    except EvalRunError as err:
        print(f"eval.summary: {err}", file=sys.stderr)
        return 1
    report = run.eval_dir / "report.html"
    print(f"report: {report}" if report.is_file()
          else f"report: not rendered yet (run `usersim report {run.eval_dir}`)")
    for line in summary_lines(run):
        print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
