"""Read an eval run directory and say what it found, without computing a single new number.

``python -m usersim.eval.summary runs/<profile>`` (the last step of ``make all``) prints where the report is,
the headline sentence, the verdict with its numbers, every flag in words, the controls, one line per
failure mode (each system beside its human reference or split-half floor), perplexity, and the run's
sizes and step times.

The eval run directory itself is read by usersim.eval.eval_run (``load_eval_run``, ``find_metric``); the
small readers here (``page_status``, ``explain_flag``, ``fmt``...) are shared with ``usersim.eval.report`` and ``usersim.publish`` so that all three
read ``metrics.json`` the same way (contract: docs/contracts.md, names: eval/METRICS.md).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from usersim.eval.eval_run import EvalRun, EvalRunError, find_metric, load_eval_run
from usersim.eval.failure_mode_table import NOT_COMPUTED, SYSTEM_LABELS, failure_mode_lines

PERPLEXITY = "heldout_perplexity"
JUDGES = ("fast", "neural", "lm", "llm")  # display order of the judges in every table
# The one flag that is a warning (amber), not a failure (red): the run is too small, nothing is wrong.
WARNING_FLAGS = ("too_small_to_tell",)
VERDICT_WORDS = {
    "distinguishable": "distinguishable from held-out humans",
    "indistinguishable": "indistinguishable from held-out humans at this n",
    "too_small_to_tell": "too small to tell",
    "miscalibrated": "miscalibrated: the judge is significantly below chance",
}


# ----------------------------------------------------------------------------- formatting
def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


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


def fmt_ci(row: dict[str, Any] | None, key: str = "value") -> str:
    """``0.612 [0.58, 0.64]`` from a row (``value``) or a result (``key="accuracy"``); ``not computed`` when absent."""
    if not row or row.get(key) is None:
        return NOT_COMPUTED
    text = fmt(row[key])
    if row.get("ci_low") is not None and row.get("ci_high") is not None:
        text += f" [{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]"
    return text


def fmt_band(low: Any, high: Any) -> str:
    return f"[{fmt(low)}, {fmt(high)}]" if _number(low) and _number(high) else NOT_COMPUTED


def fmt_p(value: Any) -> str:
    return f"p = {fmt(value)}" if _number(value) else "p not computed"


def fmt_mde(value: Any) -> str:
    return f"±{fmt(value)}" if _number(value) else NOT_COMPUTED


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


# ----------------------------------------------------------------------------- headline, flags, status
def verdict_words(verdict: Any) -> str:
    return VERDICT_WORDS.get(str(verdict), str(verdict) if verdict else NOT_COMPUTED)


def headline_numbers(head: dict[str, Any]) -> str:
    """``paired accuracy (fast judge) 0.62 [0.55, 0.69], p = 0.003, null band [...], MDE ±0.14, 104 pairs from 38 users``."""
    if not head or head.get("accuracy") is None:
        return NOT_COMPUTED
    judge = head.get("judge") or "?"
    return (f"paired accuracy ({judge} judge) {fmt_ci(head, 'accuracy')}, {fmt_p(head.get('p_value'))}, "
            f"null band {fmt_band(head.get('null_low'), head.get('null_high'))}, MDE {fmt_mde(head.get('mde'))}, "
            f"{fmt(head.get('n_pairs'))} pairs from {fmt(head.get('n_users'))} users")


def _control_description(run: EvalRun, name: str) -> str:
    desc = run.controls.get("description")
    if isinstance(desc, dict) and desc.get(name):
        return str(desc[name])
    body = (run.controls.get("paired") or {}).get(name)
    return str(body.get("expect") or "") if isinstance(body, dict) else ""


def explain_flag(flag: str, run: EvalRun | None = None) -> str:
    """``flag: what it means`` in words; numbers only as stored in metrics.json."""
    if flag == "null_control_rejected":
        text = ("the null control was told apart: two samples of the simulator for the same context should sit at "
                "chance, so the paired test finds differences where there are none and its p-values cannot be trusted")
    elif flag == "human_vs_human_rejected":
        text = ("two disjoint groups of held-out humans were told apart by the unpaired judge, so its numbers "
                "(and `usersim discriminate`) are miscalibrated at this n")
    elif flag.startswith("no_power:"):
        name = flag.split(":", 1)[1]
        desc = _control_description(run, name) if run is not None else ""
        text = (f"the positive control '{name.replace('_', ' ')}' was not caught"
                + (f" ({desc})" if desc else "")
                + ": the judge lacks power at that effect size, so not telling the simulator apart says little")
    elif flag == "headline_below_chance":
        text = ("the judge calls the simulated turn the real one significantly more often than chance: a calibration "
                "failure by definition, never a sign of fidelity")
    elif flag == "too_small_to_tell":
        head = run.headline if run is not None else {}
        claimed = run.claimed_effect if run is not None else None
        text = ("not significant, but this run cannot detect gaps smaller than "
                f"{fmt_mde(head.get('mde'))}"
                + (f", more than the ±{fmt(claimed)} the report claims to resolve" if claimed is not None else "")
                + ": 'not told apart' does not mean 'indistinguishable' here; add pairs and users")
    else:
        return flag
    return f"{flag}: {text}"


@dataclass
class ControlCheck:
    key: str  # the control's name in metrics.json ("simulator_vs_itself", ..., "human_vs_human")
    label: str  # e.g. "human vs human (fast)"
    passed: bool | None
    expect: str


# control key -> the flag that already reports its failure
COVERED_BY = {"simulator_vs_itself": "null_control_rejected", "human_vs_human": "human_vs_human_rejected"}


def control_checks(run: EvalRun) -> list[ControlCheck]:
    """Every stored pass/fail of a control: each paired control, and human vs human per judge."""
    out = []
    for name, body in (run.controls.get("paired") or {}).items():
        if isinstance(body, dict):
            out.append(ControlCheck(name, name.replace("_", " "), body.get("passed"), str(body.get("expect") or "")))
    for judge, body in (run.controls.get("human_vs_human") or {}).items():
        if isinstance(body, dict) and "passed" in body:
            out.append(ControlCheck("human_vs_human", f"human vs human ({judge})", body.get("passed"),
                                    _control_description(run, "human_vs_human")
                                    or "two groups of held-out humans must sit at chance"))
    return out


@dataclass
class PageStatus:
    """The colour of the headline and why: ``green``, ``amber``, ``red``, ``neutral`` or ``grey``."""

    colour: str
    title: str
    reasons: list[str]


def page_status(run: EvalRun) -> PageStatus:
    """Green only when every control passed and the verdict is ``indistinguishable``; red for any flag or
    failed control (and for a below-chance headline); amber when the run is too small to tell."""
    head = run.headline
    verdict = head.get("verdict")
    checks = control_checks(run)
    failing_flags = [f for f in run.flags if f not in WARNING_FLAGS]
    reasons = [explain_flag(f, run) for f in failing_flags]
    reasons += [f"control '{c.label}' failed: {c.expect}" for c in checks if c.passed is False
                and COVERED_BY.get(c.key, f"no_power:{c.key}") not in failing_flags]
    if verdict == "miscalibrated" and "headline_below_chance" not in failing_flags:
        reasons.append(explain_flag("headline_below_chance", run))
    if reasons:
        return PageStatus("red", "Flagged: these numbers cannot be taken at face value", reasons)
    warnings = [explain_flag(f, run) for f in run.flags if f in WARNING_FLAGS]
    if verdict == "too_small_to_tell" or warnings:
        if not warnings:
            warnings = [explain_flag("too_small_to_tell", run)]
        return PageStatus("amber", "Too small to tell", warnings)
    if not head:
        return PageStatus("grey", "No headline in metrics.json", ["rerun `usersim eval` to get the paired headline"])
    all_passed = bool(checks) and all(c.passed is True for c in checks)
    if verdict == "indistinguishable" and all_passed:
        return PageStatus("green", "Indistinguishable at this n, and every control passed", [])
    if verdict == "indistinguishable":
        return PageStatus("grey", "Indistinguishable, but the controls were not run",
                          ["without controls that can fail, 'indistinguishable' is not established"])
    if verdict == "distinguishable":
        note = "every control passed" if all_passed else "controls not run"
        return PageStatus("neutral", f"Distinguishable from held-out humans ({note})", [])
    return PageStatus("grey", f"Verdict: {verdict_words(verdict)}", [])


def controls_line(run: EvalRun) -> str:
    checks = control_checks(run)
    if not checks:
        return NOT_COMPUTED
    failed = [c.label for c in checks if c.passed is False]
    unknown = [c.label for c in checks if c.passed is None]
    text = f"{len(checks) - len(failed) - len(unknown)} of {len(checks)} passed"
    if failed:
        text += "; FAILED: " + ", ".join(failed)
    if unknown:
        text += "; not decided: " + ", ".join(unknown)
    return text


# ----------------------------------------------------------------------------- run facts
def train_run_dir(run: EvalRun) -> Path | None:
    """The train run directory named by metrics.json's ``train_run`` (absolute, or relative to cwd/eval dir)."""
    train_run = run.metrics.get("train_run")
    if isinstance(train_run, dict):
        train_run = train_run.get("run_dir") or train_run.get("path") or train_run.get("dir")
    if not train_run:
        return None
    path = Path(str(train_run))
    if not path.is_absolute() and not path.exists():
        path = (run.eval_dir / path)
    return path


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


def timings_text(run: EvalRun) -> str:
    timings = run.metrics.get("timings_s")
    if not isinstance(timings, dict) or not timings:
        return NOT_COMPUTED
    return ", ".join(f"{k} {fmt(v)} s" for k, v in timings.items())


def wall_time_and_sizes(run: EvalRun) -> str:
    """Sizes and times stored by the stages; nothing is timed here."""
    parts = []
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


def systems_of(run: EvalRun) -> list[str]:
    from usersim.eval.failure_mode_table import systems_present

    return systems_present(run.rows)


def perplexity_line(run: EvalRun) -> str:
    rows = run.rows
    sim, base = find_metric(rows, (PERPLEXITY,), "simulator"), find_metric(rows, (PERPLEXITY,), "base")
    text = f"simulator {fmt_ci(sim)} vs base {fmt_ci(base)}"
    diff = ((run.metrics.get("paired_differences") or {}).get("simulator_minus_base") or {}).get(PERPLEXITY)
    if isinstance(diff, dict):
        text += f"; paired difference simulator - base {fmt_ci(diff)}"
    if "prompted" in systems_of(run) and find_metric(rows, (PERPLEXITY,), "prompted") is None:
        text += "; prompted: not scored (another tokenizer, so not the same tokens)"
    return text


def failure_mode_summary(run: EvalRun) -> list[str]:
    """One line per failure mode: its charted metric, the reference, each system's value [CI]."""
    systems = systems_of(run)
    out = []
    for line in failure_mode_lines(run.rows, systems):
        m = line.chart_metric
        if m is None:
            out.append(f"{line.mode.label}: {NOT_COMPUTED}")
            continue
        ref = m.reference
        if ref.kind == "human":
            ref_text = "human " + fmt_ci({"value": ref.value, "ci_low": ref.ci_low, "ci_high": ref.ci_high})
        elif ref.kind == "floor":
            ref_text = f"human floor {fmt(ref.value)}"
        elif ref.kind == "target":
            ref_text = f"target {fmt(ref.value)}"
        else:
            ref_text = "no human reference"
        cells = " | ".join(f"{s} {fmt_ci(m.systems.get(s))}" for s in systems)
        out.append(f"{line.mode.label} ({m.name}): {ref_text} | {cells}")
    return out


def judges_line(run: EvalRun) -> str:
    """The simulator's paired accuracy under every judge run, e.g. ``fast 0.79 [0.66, 0.92], lm 0.91 [...]``."""
    body = (run.metrics.get("paired") or {}).get("simulator") or {}
    parts = [f"{j} {fmt_ci(body[j], 'accuracy')}" for j in JUDGES if isinstance(body.get(j), dict)]
    return ", ".join(parts) + " (simulator, paired accuracy)" if parts else NOT_COMPUTED


def decoding_line(run: EvalRun) -> str:
    """How the simulator decoded, e.g. ``temperature 0.85, top_p 0.95, end_bias 3.1 (decoding.json)``."""
    dec = run.metrics.get("decoding")
    if not isinstance(dec, dict):
        return NOT_COMPUTED
    bias = dec.get("end_bias")
    end = "ends only by writing the end marker" if bias is None else f"end_bias {bias:+.2f}"
    source = ("chosen on validation users" if dec.get("source") == "decoding.json"
              else "from the eval config")
    return f"temperature {dec.get('temperature')}, top_p {dec.get('top_p')}, {end} ({source})"


def summary_lines(run: EvalRun) -> list[str]:
    """What ``make all`` ends with (each line stands alone)."""
    head = run.headline
    status = page_status(run)
    lines = [
        f"headline: {head.get('sentence') or NOT_COMPUTED}",
        f"verdict:  {verdict_words(head.get('verdict')).upper() if head else NOT_COMPUTED} "
        f"[{status.colour}] ({headline_numbers(head)})",
    ]
    if head.get("baselines_sentence"):
        lines.append(f"versus:   {head['baselines_sentence']}")
    if head.get("judge_choice"):
        lines.append(f"judge:    {head['judge_choice']}")
    lines.append(f"judges:   {judges_line(run)}")
    lines.append(f"decoding: {decoding_line(run)}")
    lines += [f"flag:     {explain_flag(f, run)}" for f in run.flags] or ["flags:    none"]
    lines.append(f"controls: {controls_line(run)}")
    lines.append("failure modes (value [95% CI]; read each against the human value or the human split-half floor):")
    lines += ["  " + line for line in failure_mode_summary(run)]
    lines.append(f"perplexity: {perplexity_line(run)}")
    lines.append(f"run:      {wall_time_and_sizes(run)}; eval steps: {timings_text(run)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m usersim.eval.summary", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="runs/<profile> (or its eval/ directory)")
    args = parser.parse_args(argv)
    try:
        run = load_eval_run(args.run)
    except EvalRunError as err:
        print(f"usersim.eval.summary: {err}", file=sys.stderr)
        return 1
    report = run.eval_dir / "report.html"
    print(f"report: {report}" if report.is_file()
          else f"report: not rendered yet (run `usersim report {run.eval_dir}`)")
    for line in summary_lines(run):
        print("  " + line)
    return 0


__all__ = ["EvalRun", "EvalRunError", "NOT_COMPUTED", "SYSTEM_LABELS", "PageStatus", "control_checks", "direction",
           "explain_flag", "find_metric", "fmt", "fmt_band", "fmt_ci", "fmt_mde", "fmt_p", "headline_numbers", "judges_line",
           "load_eval_run", "page_status", "summary_lines", "train_run_dir", "verdict_words"]

if __name__ == "__main__":
    sys.exit(main())
