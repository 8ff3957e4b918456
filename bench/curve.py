"""The learning curve: the default recipe trained at several token budgets, each evaluated on the same items.

    .venv/bin/python -m bench.curve --steps 18,72,288          (make curve; after make data)

For each budget (optimizer steps of 512 packed tokens; the recipe is configs/train/gemma-270m.yaml,
cosine schedule over that many steps): ``usersim train`` -> ``usersim decoding`` (chosen on validation
users) -> ``usersim eval`` with the default eval config, the paired controls and the prompted baseline off
(neither changes the simulator's turns: every row samples from its own seed). Every point is read on
the same held-out test items with the same seeds; budget 0 is the untuned base, read from the first
point's eval (the base system). A point whose run directories are complete is reused, so the command
can be stopped and resumed, and ``--reuse 72=runs/default`` takes the default `make all` run as a point.

Writes bench/results/curve.json (one row per point: training tokens, each judge's paired accuracy with
its CI, held-out perplexity, end rate / F1, style mismatch, artefact rate, beside the humans' values)
and bench/results/curve.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
USERSIM = [sys.executable, "-m", "usersim.cli"]
JUDGE_METRICS = {"fast": "paired_accuracy", "neural": "paired_accuracy_neural", "lm": "paired_accuracy_lm"}
SYSTEM_METRICS = ("heldout_perplexity", "end_rate", "end_f1", "style_mismatch", "artefact_rate", "question_rate")
RECORDS_PER_STEP = 400 / 228  # the default's 400 seeded records make 228 packed 512-token rows


def run(cmd: list[str], log: Path) -> None:
    print("+", " ".join(cmd), flush=True)
    with log.open("w") as fh:
        subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, check=True)


def point_dirs(runs: Path, steps: int, reuse: dict[int, Path]) -> tuple[Path, Path]:
    base = reuse.get(steps, runs / f"steps{steps}")
    return base / "train", base / "eval"


def train_point(args: argparse.Namespace, steps: int, train_dir: Path) -> None:
    if (train_dir / "adapter_model.safetensors").is_file():
        return
    train_dir.parent.mkdir(parents=True, exist_ok=True)
    records = 400 if steps * RECORDS_PER_STEP * 1.1 <= 400 else 0  # 0 = every training record
    run([*USERSIM, "train", "--config", args.train_config, "--output_dir", str(train_dir), f"data_dir={args.data}",
         f"max_steps={steps}", f"max_train_records={records}", "save_steps=0", "logging_steps=20"],
        train_dir.parent / "train.log")


def eval_point(args: argparse.Namespace, train_dir: Path, eval_dir: Path) -> None:
    if (eval_dir / "metrics.json").is_file():
        return
    common = [f"data_dir={args.data}", f"run_dir={train_dir}", "show_progress=false"]
    if not (train_dir / "decoding.json").is_file():
        run([*USERSIM, "decoding", "--config", args.eval_config, *common], eval_dir.parent / "decoding.log")
    run([*USERSIM, "eval", "--config", args.eval_config, "--output_dir", str(eval_dir), *common, "controls=false",
         "prompted.model=", "prompted.endpoint="], eval_dir.parent / "eval.log")


def metric(doc: dict[str, Any], name: str, system: str) -> dict[str, Any] | None:
    for m in doc["metrics"]:
        if m["name"] == name and m["system"] == system:
            return {"value": m["value"], "ci": [m["ci_low"], m["ci_high"]], "n": m["n"]}
    return None


def row_of(doc: dict[str, Any], system: str, tokens: int, steps: int) -> dict[str, Any]:
    out: dict[str, Any] = {"steps": steps, "tokens": tokens, "system": system}
    for judge, name in JUDGE_METRICS.items():
        out[f"paired_accuracy_{judge}"] = metric(doc, name, system)
    for name in SYSTEM_METRICS:
        out[name] = metric(doc, name, system)
        human = metric(doc, name, "human")
        if human is not None:
            out[f"{name}_human"] = human
    return out


def _cell(m: dict[str, Any] | None, digits: int = 3) -> str:
    if not m or m.get("value") is None:
        return "-"
    lo, hi = m["ci"]
    return f"{m['value']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def table(rows: list[dict[str, Any]]) -> str:
    """The curve as a Markdown table (BENCHMARKS.md pastes it verbatim)."""
    head = ("| steps | tokens | fast | neural | lm | perplexity | end rate (humans) | end F1 | style mismatch (humans) "
            "| artefact rate |")
    lines = [head, "|" + "|".join(["---"] * 10) + "|"]
    for r in rows:
        name = "0 (untuned base)" if r["system"] == "base" else str(r["steps"])
        human_end = (r.get("end_rate_human") or {}).get("value")
        human_style = (r.get("style_mismatch_human") or {}).get("value")
        lines.append("| " + " | ".join([
            name, f"{r['tokens']:,}", _cell(r["paired_accuracy_fast"]), _cell(r["paired_accuracy_neural"]),
            _cell(r["paired_accuracy_lm"]), _cell(r["heldout_perplexity"], 1),
            f"{_cell(r['end_rate'])} ({human_end:.3f})" if human_end is not None else _cell(r["end_rate"]),
            _cell(r["end_f1"]),
            f"{_cell(r['style_mismatch'])} ({human_style:.3f})" if human_style is not None else _cell(r["style_mismatch"]),
            _cell(r["artefact_rate"])]) + " |")
    return "\n".join(lines)


def write(out: Path, rows: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps({"points": rows, **extra, "table": table(rows)}, indent=2) + "\n")
    draw(rows, Path(f"{out}.png"))


def draw(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 7.5))
    axes = fig.subplots(2, 2).ravel()
    xs = [max(r["tokens"], 1_000) for r in rows]  # the base (0 tokens) is drawn at 1k on the log axis
    panels = [("paired accuracy (0.5 = indistinguishable)", [f"paired_accuracy_{j}" for j in JUDGE_METRICS], 0.5),
              ("held-out perplexity of real user turns", ["heldout_perplexity"], None),
              ("end rate (the humans' is dashed)", ["end_rate"], "end_rate_human"),
              ("style mismatch (the humans' is dashed)", ["style_mismatch"], "style_mismatch_human")]
    for ax, (title, keys, ref) in zip(axes, panels):
        for key in keys:
            pts = [(x, r[key]) for x, r in zip(xs, rows) if r.get(key)]
            if not pts:
                continue
            ax.errorbar([x for x, _ in pts], [m["value"] for _, m in pts],
                        yerr=[[m["value"] - m["ci"][0] for _, m in pts], [m["ci"][1] - m["value"] for _, m in pts]],
                        marker="o", capsize=3, label=key.replace("paired_accuracy_", ""))
        if isinstance(ref, float):
            ax.axhline(ref, color="grey", linestyle="--", linewidth=1)
        elif isinstance(ref, str):
            refs = [r[ref]["value"] for r in rows if r.get(ref)]
            if refs:
                ax.axhline(refs[0], color="grey", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training tokens (base drawn at 1k)")
        if len(keys) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", default="18,72,288", help="comma-separated optimizer-step budgets")
    p.add_argument("--data", default="runs/default/data")
    p.add_argument("--runs", default="runs/curve", help="where each point's train/ and eval/ go")
    p.add_argument("--train-config", default="configs/train/gemma-270m.yaml")
    p.add_argument("--eval-config", default="configs/eval/default.yaml")
    p.add_argument("--reuse", default="", help="STEPS=RUN_ROOT,... points already run (RUN_ROOT/train, RUN_ROOT/eval)")
    p.add_argument("--out", default="bench/results/curve")
    p.add_argument("--redraw", action="store_true", help="rewrite the table and figure of an existing --out json")
    args = p.parse_args(argv)
    if args.redraw:
        doc = json.loads(Path(f"{args.out}.json").read_text())
        write(Path(args.out), doc.pop("points"), {k: v for k, v in doc.items() if k != "table"})
        print(table(json.loads(Path(f"{args.out}.json").read_text())["points"]))
        return 0
    steps = sorted({int(s) for s in args.steps.split(",") if s.strip()})
    reuse = {int(k): Path(v) for k, v in (kv.split("=", 1) for kv in args.reuse.split(",") if kv.strip())}
    rows: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    for n in steps:
        train_dir, eval_dir = point_dirs(Path(args.runs), n, reuse)
        start = time.perf_counter()
        train_point(args, n, train_dir)
        eval_point(args, train_dir, eval_dir)
        timings[str(n)] = round(time.perf_counter() - start, 1)
        doc = json.loads((eval_dir / "metrics.json").read_text())
        tokens = int(doc["train_run"]["train_metrics"]["tokens"])
        if not rows:
            rows.append(row_of(doc, "base", 0, 0))
        rows.append(row_of(doc, "simulator", tokens, n))
        out = Path(args.out)
        write(out, rows, {"wall_s": timings, "steps": steps, "items": doc["n_items"], "users": doc["n_users"],
                          "train_config": args.train_config, "eval_config": args.eval_config})
        acc = {j: (r or {}).get("value") for j, r in ((j, rows[-1][f"paired_accuracy_{j}"]) for j in JUDGE_METRICS)}
        print(f"[curve] {n} steps ({tokens:,} tokens): paired accuracy {acc}; wrote {out}.json/.png", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
