"""``usersim report EVAL_DIR``: render an eval run as report.html (self-contained) and report.md.

Every number on the page comes from the eval run's files (metrics.json, plots.json,
samples.jsonl); this module only selects, formats and draws. Missing optional parts render as
"not computed".

    usersim report runs/default/eval            # -> runs/default/eval/report.html, report.md, plot_*.png
    usersim report runs/default/eval --output /tmp/r --examples 12
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

import jinja2

from eval.plots import Plot, render_plots, write_plot_files
from eval.summary import (NOT_COMPUTED, EvalRun, EvalRunError, controls_status, direction, explain_flag, find_metric, fmt,
                          fmt_ci, headline, load_eval_run, summary_lines, worst_failure_mode)

TEMPLATES = Path(__file__).resolve().parent / "templates"
# Columns of the tables, in order; "instruct" (a prompted chat model) appears only when eval ran it.
COMPARED_SYSTEMS = ("simulator", "base", "instruct")
SYSTEM_LABELS = {"simulator": "trained simulator", "base": "untuned base", "instruct": "prompted instruct model"}


def systems_in(rows: list[dict[str, Any]]) -> list[str]:
    """simulator and base always (missing = "not computed"), instruct when present."""
    present = {r.get("system") for r in rows}
    return [s for s in COMPARED_SYSTEMS if s in ("simulator", "base") or s in present]


def metric_table(rows: list[dict[str, Any]], systems: list[str] | None = None) -> list[dict[str, Any]]:
    """One line per (group, metric name): a value [CI] per system, human reference, direction, n, description."""
    systems = systems or systems_in(rows)
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
        human = first.get("human_reference")
        if human is not None:
            human_text = fmt(human)
        elif "human" in by_system:
            human_text = fmt_ci(by_system["human"])
        else:
            human_text = "—"
        table.append({
            "group": group,
            "name": name,
            "description": first.get("description") or "",
            "values": {s: fmt_ci(by_system.get(s)) for s in systems},
            # kept for the card and older templates
            "simulator": fmt_ci(by_system.get("simulator")),
            "base": fmt_ci(by_system.get("base")),
            "human": human_text,
            "direction": direction(first),
            "n": fmt(first.get("n")),
        })
    return table


def _is_result(value: Any) -> bool:
    return isinstance(value, dict) and ("accuracy" in value or "value" in value)


def control_rows(controls: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (control, discriminator): accuracy [CI], AUC, n, passed, what it checks.

    metrics.json holds ``{"human_vs_human": {disc: result}, "non_human": {disc: result}, "flags",
    "description": {control: text}}``; a flat ``{control: result}`` is read as one discriminator.
    """
    descriptions = controls.get("description") if isinstance(controls.get("description"), dict) else {}
    rows = []
    for name, body in controls.items():
        if name in ("flags", "description") or not isinstance(body, dict):
            continue
        results = {"—": body} if _is_result(body) else {k: v for k, v in body.items() if isinstance(v, dict)}
        for disc, res in results.items():
            acc = res.get("accuracy", res.get("value"))
            n = res.get("n")
            if n is None and isinstance(res.get("n_real"), int) and isinstance(res.get("n_candidate"), int):
                n = res["n_real"] + res["n_candidate"]
            passed = res.get("passed", res.get("ok"))
            rows.append({
                "control": name.replace("_", " "),
                "discriminator": disc,
                "accuracy": fmt_ci({"value": acc, "ci_low": res.get("ci_low"), "ci_high": res.get("ci_high")}),
                "auc": fmt_ci({"value": res.get("auc"), "ci_low": res.get("auc_ci_low"), "ci_high": res.get("auc_ci_high")}),
                "n": fmt(n),
                "passed": NOT_COMPUTED if passed is None else ("passed" if passed else "FAILED"),
                "failed": passed is False,
                "description": str(descriptions.get(name, "")),
            })
    return rows


def control_sections(controls: dict[str, Any]) -> list[dict[str, Any]]:
    """Each control as a title and short ``key value`` items (for the model card)."""
    sections: dict[str, dict[str, Any]] = {}
    for row in control_rows(controls):
        section = sections.setdefault(row["control"], {"name": row["control"], "items": []})
        label = "accuracy" if row["discriminator"] == "—" else f"{row['discriminator']} accuracy"
        section["items"].append((label, f"{row['accuracy']} ({row['passed']})"))
    return list(sections.values())


def example_turns(samples: list[dict[str, Any]], n: int, tail: int = 4) -> list[dict[str, Any]]:
    """The first ``n`` held-out items: last ``tail`` history turns, then human / simulator / base (/ instruct)."""
    out = []
    for s in samples[:n]:
        history = [{"role": str(t.get("role", "")), "text": str(t.get("text", ""))}
                   for t in (s.get("history_tail") or [])[-tail:] if isinstance(t, dict)]
        condition = s.get("condition") if isinstance(s.get("condition"), dict) else {}
        turns = [("human", "human", _turn_text(s.get("real"), s.get("real_ends")))]
        turns += [(system, key, _turn_text(s.get(key), s.get(f"{key}_ends")))
                  for system, key in (("simulator", "simulated"), ("base", "base"), ("instruct", "instruct"))
                  if system != "instruct" or key in s]
        out.append({
            "id": str(s.get("id", "")),
            "user_id": str(s.get("user_id", "")),
            "turn_index": fmt(s.get("turn_index")),
            "goal": str(condition.get("goal") or ""),
            "persona": str(condition.get("persona") or ""),
            "history": history,
            "turns": [{"system": system, "text": text} for system, _, text in turns],
            "real": turns[0][2],
            "simulated": turns[1][2],
            "base": turns[2][2],
        })
    return out


def _turn_text(text: Any, ends: Any) -> str:
    if text is None:
        return NOT_COMPUTED
    text = str(text)
    if ends and "END OF CONVERSATION" not in text:
        text = (text + " [END OF CONVERSATION]").strip()
    return text


def report_context(run: EvalRun, plots: list[Plot], n_examples: int) -> dict[str, Any]:
    m = run.metrics
    worst = worst_failure_mode(run)
    worst_base = find_metric(run.rows, (worst["name"],), "base") if worst else None
    train_run = m.get("train_run")
    if isinstance(train_run, dict):
        train_run = train_run.get("run_dir") or train_run.get("path") or "(see metrics.json)"
    return {
        "title": "usersim fidelity report",
        "eval_dir": str(run.eval_dir),
        "train_run": str(train_run) if train_run else NOT_COMPUTED,
        "seed": fmt(m.get("seed", run.run_info.get("seed"))),
        "git_revision": str(m.get("git_revision") or run.run_info.get("git_revision") or NOT_COMPUTED),
        "versions": m.get("versions") or run.run_info.get("versions") or {},
        "headline": [{"label": h.label, "simulator": fmt_ci(h.simulator), "base": fmt_ci(h.base), "goal": h.goal,
                      "computed": h.simulator is not None or h.base is not None} for h in headline(run)],
        "systems": [{"key": sys_, "label": SYSTEM_LABELS[sys_]} for sys_ in systems_in(run.rows)],
        "summary": summary_lines(run),
        "flags": [explain_flag(f) for f in run.flags],
        "controls_status": controls_status(run),
        "controls": control_rows(run.controls),
        "worst": None if worst is None else {
            "name": worst["name"], "simulator": fmt_ci(worst), "human": fmt(worst.get("human_reference")),
            "base": fmt_ci(worst_base), "description": worst.get("description") or ""},
        "metrics": metric_table(run.rows),
        "plots": plots,
        "examples": example_turns(run.samples, n_examples),
        "n_samples": len(run.samples),
        "not_computed": NOT_COMPUTED,
    }


def md_cell(value: Any) -> str:
    """Text safe inside a markdown table cell: no pipes or newlines, HTML escaped."""
    import html
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
    context = report_context(run, plots, n_examples)
    html_path = out / "report.html"
    html_path.write_text(_environment(True).get_template("report.html.j2").render(**context), encoding="utf-8")
    (out / "report.md").write_text(_environment(False).get_template("report.md.j2").render(**context), encoding="utf-8")
    write_plot_files(plots, out)
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
