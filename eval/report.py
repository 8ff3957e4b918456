"""``usersim report EVAL_DIR``: render an eval run as report.html (self-contained) and report.md.

Every number on the page comes from the eval run's files (metrics.json, plots.json, samples.jsonl);
this module only selects, formats and draws. Missing optional parts render as "not computed".

From the top: the headline (paired accuracy with its CI, p-value, null band and MDE, the verdict
sentence, coloured by usersim.eval.summary.page_status), the failure-mode table with its chart, the
controls, paired discrimination per system and judge, perplexity, copy rate, truncation, the other
figures, every metric, and side-by-side example turns.

    usersim report runs/default/eval            # -> runs/default/eval/report.html, report.md, plot_*.png
    usersim report runs/default/eval --output /tmp/r --examples 12
"""

from __future__ import annotations

import argparse
import html
import shutil
import sys
from pathlib import Path
from typing import Any

import jinja2

from usersim.eval.eval_run import EvalRun, EvalRunError, load_eval_run
from usersim.eval.failure_mode_table import SYSTEM_LABELS, failure_mode_lines, systems_present
from usersim.eval.plots import Plot, failure_mode_chart, render_plots, write_plot_files
from usersim.eval.summary import (JUDGES, NOT_COMPUTED, PERPLEXITY, control_checks, direction, fmt, fmt_band, fmt_ci,
                                  fmt_mde, page_status, verdict_words)

TEMPLATES = Path(__file__).resolve().parent / "templates"
# samples.jsonl key of each system's turn
SAMPLE_KEYS = {"simulator": "simulated", "base": "base", "prompted": "prompted"}
ROLE_WORDS = {"null": "null (must sit at chance)", "positive": "positive (must be caught)"}


def _cell(row: dict[str, Any] | None, key: str = "value") -> dict[str, str]:
    """``{"value": "0.05", "ci": "[0.03, 0.07]"}`` (ci "" when absent) for a table cell."""
    if not row or row.get(key) is None:
        return {"value": NOT_COMPUTED, "ci": ""}
    ci = fmt_band(row.get("ci_low"), row.get("ci_high"))
    return {"value": fmt(row[key]), "ci": "" if ci == NOT_COMPUTED else ci}


def metric_table(rows: list[dict[str, Any]], systems: list[str] | None = None) -> list[dict[str, Any]]:
    """One line per (group, metric name): a value [CI] per system, human reference, direction, n, description."""
    systems = systems or systems_present(rows)
    order: list[tuple[str, str]] = []
    for row in rows:
        key = (str(row.get("group") or "other"), str(row.get("name")))
        if key not in order:
            order.append(key)
    table = []
    for group, name in order:
        mine = [r for r in rows if str(r.get("group") or "other") == group and r.get("name") == name]
        by_system = {r.get("system"): r for r in mine}
        first = next((by_system[s] for s in (*systems, "human") if s in by_system), mine[0])
        if "human" in by_system:
            human_text = fmt_ci(by_system["human"])
        elif first.get("human_reference") is not None:
            human_text = f"floor {fmt(first['human_reference'])}"
        else:
            human_text = "—"
        table.append({
            "group": group,
            "name": name,
            "description": first.get("description") or "",
            "values": {s: fmt_ci(by_system.get(s)) for s in systems},
            "simulator": fmt_ci(by_system.get("simulator")),
            "base": fmt_ci(by_system.get("base")),
            "human": human_text,
            "direction": direction(first),
            "n": fmt(first.get("n")),
        })
    return table


def failure_mode_table(rows: list[dict[str, Any]], systems: list[str]) -> list[dict[str, Any]]:
    """The centrepiece: per failure mode its metrics, the human reference / floor, and a cell per system."""
    out = []
    for line in failure_mode_lines(rows, systems):
        metrics = []
        for m in line.metrics:
            ref = m.reference
            if ref.kind == "human":
                reference = {"label": "human", **_cell({"value": ref.value, "ci_low": ref.ci_low,
                                                        "ci_high": ref.ci_high})}
            elif ref.kind == "floor":
                reference = {"label": "split-half floor", "value": fmt(ref.value), "ci": ""}
            elif ref.kind == "target":
                reference = {"label": "target", "value": fmt(ref.value), "ci": ""}
            else:
                reference = {"label": "", "value": "no human reference", "ci": ""}
            metrics.append({"name": m.name, "description": m.description, "reference": reference,
                            "cells": {s: _cell(m.systems.get(s)) for s in systems}})
        out.append({"key": line.mode.key, "label": line.mode.label, "means": line.mode.means, "metrics": metrics})
    return out


def _result(res: dict[str, Any] | None) -> dict[str, str]:
    """A paired / unpaired judge result as display strings."""
    res = res if isinstance(res, dict) else {}
    return {"accuracy": fmt_ci(res, "accuracy"), "p": fmt(res.get("p_value")),
            "null": fmt_band(res.get("null_low"), res.get("null_high")), "mde": fmt_mde(res.get("mde")),
            "pairs": fmt(res.get("n_pairs")), "users": fmt(res.get("n_users"))}


def _passed_text(passed: Any) -> str:
    return NOT_COMPUTED if passed is None else ("passed" if passed else "FAILED")


def paired_control_rows(controls: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (paired control, judge)."""
    descriptions = controls.get("description") if isinstance(controls.get("description"), dict) else {}
    rows = []
    for name, body in (controls.get("paired") or {}).items():
        if not isinstance(body, dict):
            continue
        judges = [j for j in JUDGES if isinstance(body.get(j), dict)] or ["—"]
        for judge in judges:
            rows.append({"control": name.replace("_", " "), "key": name,
                         "role": ROLE_WORDS.get(str(body.get("role")), str(body.get("role") or "—")),
                         "expect": str(body.get("expect") or descriptions.get(name) or ""),
                         "judge": judge, **_result(body.get(judge)),
                         "passed": _passed_text(body.get("passed")), "failed": body.get("passed") is False})
    return rows


def human_vs_human_rows(controls: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for judge, res in (controls.get("human_vs_human") or {}).items():
        if not isinstance(res, dict):
            continue
        rows.append({"judge": judge, **_result(res), "auc": fmt(res.get("auc")),
                     "n": f"{fmt(res.get('n_real'))} + {fmt(res.get('n_candidate'))} turns, "
                          f"{fmt(res.get('n_users'))} users",
                     "passed": _passed_text(res.get("passed")), "failed": res.get("passed") is False})
    return rows


def control_sections(controls: dict[str, Any]) -> list[dict[str, Any]]:
    """Each control as a title and short ``key value`` items (for the model card)."""
    sections: dict[str, dict[str, Any]] = {}
    for row in paired_control_rows(controls):
        section = sections.setdefault(row["control"], {"name": row["control"], "role": row["role"], "items": []})
        section["items"].append((f"{row['judge']} judge", f"{row['accuracy']}, p = {row['p']} ({row['passed']})"))
    for row in human_vs_human_rows(controls):
        section = sections.setdefault("human vs human", {"name": "human vs human", "role": "null, unpaired",
                                                         "items": []})
        section["items"].append((f"{row['judge']} judge", f"{row['accuracy']}, p = {row['p']} ({row['passed']})"))
    return list(sections.values())


def paired_rows(metrics: dict[str, Any], systems: list[str]) -> list[dict[str, Any]]:
    """Paired discrimination, one row per (system, judge), with the pairs left out."""
    paired = metrics.get("paired") if isinstance(metrics.get("paired"), dict) else {}
    rows = []
    for system in systems:
        body = paired.get(system)
        if not isinstance(body, dict):
            rows.append({"system": SYSTEM_LABELS.get(system, system), "judge": "—", **_result(None),
                         "excluded": NOT_COMPUTED})
            continue
        excluded = body.get("excluded") if isinstance(body.get("excluded"), dict) else {}
        excluded_text = ", ".join(f"{k} {fmt(v)}" for k, v in excluded.items()) or "—"
        for judge in [j for j in JUDGES if isinstance(body.get(j), dict)] or ["—"]:
            rows.append({"system": SYSTEM_LABELS.get(system, system), "judge": judge, **_result(body.get(judge)),
                         "excluded": excluded_text})
    return rows


def paired_difference_rows(metrics: dict[str, Any]) -> list[dict[str, str]]:
    diffs = metrics.get("paired_differences") if isinstance(metrics.get("paired_differences"), dict) else {}
    rows = []
    for comparison, body in diffs.items():
        if not isinstance(body, dict):
            continue
        for name, res in body.items():
            if isinstance(res, dict):
                value = fmt_ci(res) + (f", p = {fmt(res['p_value'])}" if res.get("p_value") is not None else "")
                rows.append({"comparison": comparison.replace("_minus_", " − ").replace("_", " "), "metric": name,
                             "value": value})
    return rows


def perplexity_rows(rows: list[dict[str, Any]], systems: list[str]) -> list[dict[str, str]]:
    out = []
    for system in systems:
        row = next((r for r in rows if r.get("name") == PERPLEXITY and r.get("system") == system), None)
        if row is not None:
            out.append({"system": SYSTEM_LABELS.get(system, system), "value": fmt_ci(row), "n": fmt(row.get("n"))})
        elif system == "prompted":
            out.append({"system": SYSTEM_LABELS[system], "n": "—",
                        "value": "not scored: another tokenizer, so it cannot be scored on the same tokens"})
        else:
            out.append({"system": SYSTEM_LABELS.get(system, system), "value": NOT_COMPUTED, "n": "—"})
    return out


def copy_rate_rows(rows: list[dict[str, Any]], systems: list[str]) -> list[dict[str, str]]:
    out = []
    for system in ("human", *systems):
        row = next((r for r in rows if r.get("name") == "condition_copy_rate" and r.get("system") == system), None)
        out.append({"system": SYSTEM_LABELS.get(system, system), "value": fmt_ci(row),
                    "n": fmt(row.get("n")) if row else "—"})
    return out


def truncation_context(metrics: dict[str, Any], systems: list[str]) -> dict[str, Any] | None:
    trunc = metrics.get("truncation")
    if not isinstance(trunc, dict):
        return None

    def count(key: str, system: str) -> str:
        table = trunc.get(key) if isinstance(trunc.get(key), dict) else {}
        return fmt(table.get(system)) if system in table else "—"

    return {"rows": [{"system": SYSTEM_LABELS.get(s, s), "hit_cap": count("hit_cap", s),
                      "cut": count("cut_at_budget", s), "capped": count("capped", s), "empty": count("empty", s)}
                     for s in ("human", *systems)],
            "n_items": fmt(trunc.get("n_items")),
            "max_new_tokens": fmt(trunc.get("max_new_tokens")),
            "prompt_turns_dropped": fmt(trunc.get("prompt_turns_dropped"))}


def example_turns(samples: list[dict[str, Any]], n: int, systems: list[str], tail: int = 4) -> list[dict[str, Any]]:
    """The first ``n`` held-out items: last ``tail`` history turns, then human / simulator / base / prompted."""
    out = []
    for s in samples[:n]:
        history = [{"role": str(t.get("role", "")), "text": str(t.get("text", ""))}
                   for t in (s.get("history_tail") or [])[-tail:] if isinstance(t, dict)]
        condition = s.get("condition") if isinstance(s.get("condition"), dict) else {}
        turns = [_turn("human", s.get("real"), s.get("real_ends"), False)]
        for system in systems:
            key = SAMPLE_KEYS[system]
            if key in s or system in ("simulator", "base"):
                turns.append(_turn(system, s.get(key), s.get(f"{key}_ends"), s.get(f"{key}_capped")))
        out.append({
            "id": str(s.get("id", "")),
            "user_id": str(s.get("user_id", "")),
            "turn_index": fmt(s.get("turn_index")),
            "goal": str(condition.get("goal") or ""),
            "persona": str(condition.get("persona") or ""),
            "history": history,
            "turns": turns,
        })
    return out


def _turn(system: str, text: Any, ends: Any, capped: Any) -> dict[str, Any]:
    label = "human (the real next turn)" if system == "human" else SYSTEM_LABELS.get(system, system)
    return {"system": system, "label": label,
            "text": NOT_COMPUTED if text is None else str(text), "ends": bool(ends), "capped": bool(capped)}


def headline_context(run: EvalRun) -> dict[str, Any]:
    head = run.headline
    return {
        "computed": bool(head) and head.get("accuracy") is not None,
        "sentence": str(head.get("sentence") or NOT_COMPUTED),
        "verdict": str(head.get("verdict") or ""),
        "verdict_words": verdict_words(head.get("verdict")),
        "system": SYSTEM_LABELS.get(str(head.get("system") or "simulator"), str(head.get("system"))),
        "judge": str(head.get("judge") or "?"),
        "judge_choice": str(head.get("judge_choice") or ""),
        "baselines_sentence": str(head.get("baselines_sentence") or ""),
        "accuracy": fmt(head.get("accuracy")),
        "ci": fmt_band(head.get("ci_low"), head.get("ci_high")),
        "p": fmt(head.get("p_value")),
        "null": fmt_band(head.get("null_low"), head.get("null_high")),
        "mde": fmt_mde(head.get("mde")),
        "n_pairs": fmt(head.get("n_pairs")),
        "n_users": fmt(head.get("n_users")),
        "claimed_effect": fmt_mde(run.claimed_effect),
    }


def report_context(run: EvalRun, plots: list[Plot], fm_chart: Plot, n_examples: int) -> dict[str, Any]:
    m = run.metrics
    systems = systems_present(run.rows)
    train_run = m.get("train_run")
    if isinstance(train_run, dict):
        train_run = train_run.get("run_dir") or train_run.get("path") or "(see metrics.json)"
    checks = control_checks(run)
    status = page_status(run)
    timings = m.get("timings_s") if isinstance(m.get("timings_s"), dict) else {}
    return {
        "title": "usersim fidelity report",
        "eval_dir": str(run.eval_dir),
        "train_run": str(train_run) if train_run else NOT_COMPUTED,
        "seed": fmt(m.get("seed", run.run_info.get("seed"))),
        "git_revision": str(m.get("git_revision") or run.run_info.get("git_revision") or NOT_COMPUTED),
        "versions": m.get("versions") or run.run_info.get("versions") or {},
        "status": {"colour": status.colour, "title": status.title, "reasons": status.reasons},
        "headline": headline_context(run),
        "controls_passed": sum(c.passed is True for c in checks),
        "controls_total": len(checks),
        "systems": [{"key": s, "label": SYSTEM_LABELS[s]} for s in systems],
        "failure_modes": failure_mode_table(run.rows, systems),
        "fm_chart": fm_chart,
        "paired_controls": paired_control_rows(run.controls),
        "human_vs_human": human_vs_human_rows(run.controls),
        "paired": paired_rows(m, systems),
        "paired_differences": paired_difference_rows(m),
        "perplexity": perplexity_rows(run.rows, systems),
        "copy_rate": copy_rate_rows(run.rows, systems),
        "truncation": truncation_context(m, systems),
        "metrics": metric_table(run.rows, systems),
        "plots": plots,
        "examples": example_turns(run.samples, n_examples, systems),
        "n_samples": len(run.samples),
        "counts": {k: fmt(m.get(k)) for k in ("n_items", "n_users", "n_conversations")},
        "timings": {k: fmt(v) for k, v in timings.items()},
        "not_computed": NOT_COMPUTED,
    }


def md_cell(value: Any) -> str:
    """Text safe inside a markdown table cell: no pipes or newlines, HTML escaped."""
    return html.escape(str(value), quote=False).replace("|", "\\|").replace("\r", " ").replace("\n", " ⏎ ")


def _environment(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=autoescape,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["md"] = md_cell
    return env


def render_report(eval_dir: str | Path, output_dir: str | Path | None = None, n_examples: int = 8) -> Path:
    """Write report.html, report.md, plot_*.png (and a copy of metrics.json) and return report.html's path."""
    run = load_eval_run(eval_dir)
    out = Path(output_dir) if output_dir else run.eval_dir
    out.mkdir(parents=True, exist_ok=True)
    plots = render_plots(run.plots)
    fm_chart = failure_mode_chart(failure_mode_lines(run.rows), systems_present(run.rows))
    context = report_context(run, plots, fm_chart, n_examples)
    html_path = out / "report.html"
    html_path.write_text(_environment(True).get_template("report.html.j2").render(**context), encoding="utf-8")
    (out / "report.md").write_text(_environment(False).get_template("report.md.j2").render(**context), encoding="utf-8")
    write_plot_files([fm_chart, *plots], out)
    if (out / "metrics.json").resolve() != (run.eval_dir / "metrics.json").resolve():
        shutil.copyfile(run.eval_dir / "metrics.json", out / "metrics.json")
    return html_path


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="usersim report", description="render report.html / report.md from an eval run")
    parser.add_argument("eval_dir", help="eval run directory (holds metrics.json), or runs/<profile>")
    parser.add_argument("--output", default=None, help="where to write the report (default: the eval directory)")
    parser.add_argument("--examples", type=int, default=8, help="how many side-by-side example turns to show")
    args = parser.parse_args(argv)
    try:
        path = render_report(args.eval_dir, args.output, args.examples)
    except EvalRunError as err:
        print(f"usersim report: {err}", file=sys.stderr)
        return 1
    print(f"[usersim report] wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
