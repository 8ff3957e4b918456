"""What every benchmark shares: the machine record, the matmul peak, alternating runs, RSS, output.

Method (stated in BENCHMARKS.md): the machine is shared, so a comparison never runs contender A
to completion and then B. :func:`alternate` runs A, B, A, B, ... in one process invocation and
every figure is the median over repeats, the ratio taken from the same run. Peak RSS is measured
in a fresh child process per contender run (:func:`run_isolated`) so the contenders' memory never
mixes.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from usersim.data_prep.run_info import peak_rss_mb

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


def machine_info() -> dict[str, Any]:
    """CPU model, core count, torch threads and versions: recorded with every result."""
    import torch

    model = platform.processor() or ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    info = {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_avg_1m_at_start": os.getloadavg()[0],
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def matmul_peak(n: int = 2048, repeats: int = 10, dtype: str = "float32", device: str = "cpu") -> dict[str, float]:
    """Achieved GFLOP/s of ``torch.matmul`` on n×n operands (2·n³ FLOP per product).

    Returns the best and the median over ``repeats`` timed products (after one warm-up). The best
    is the denominator of every utilisation figure: it is the closest estimate of what this machine
    can do when the neighbours are quiet, so utilisation is never flattered by a noisy peak.
    """
    import torch

    dt = getattr(torch, dtype)
    a = torch.randn(n, n, dtype=dt, device=device)
    b = torch.randn(n, n, dtype=dt, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    torch.matmul(a, b)
    sync()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        sync()
        rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return {"n": n, "dtype": dtype, "repeats": repeats, "gflops_best": max(rates),
            "gflops_median": statistics.median(rates)}


def alternate(contenders: dict[str, Callable[[], dict[str, Any]]], repeats: int) -> dict[str, list[dict[str, Any]]]:
    """Run the contenders interleaved (A, B, A, B, ...) ``repeats`` times each; each call returns a dict."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    for r in range(repeats):
        for name, fn in contenders.items():
            out = fn()
            out["repeat"] = r
            runs[name].append(out)
    return runs


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(r[key]) for r in runs)


def _child(fn: Callable[..., dict[str, Any]], kwargs: dict[str, Any], conn: Any) -> None:
    try:
        out = fn(**kwargs)
        out["peak_rss_mb"] = peak_rss_mb()
        conn.send(("ok", out))
    except BaseException as err:  # report the failure to the parent instead of hanging it
        import traceback

        conn.send(("error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))
    finally:
        conn.close()


_PRELOAD = ["torch", "transformers", "peft", "datasets", "bench.train_runs"]


def run_isolated(fn: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    """Call ``fn(**kwargs)`` in a fresh child process; returns its dict plus the child's ``peak_rss_mb``.

    Children are forked from a *forkserver* that imported torch/transformers/peft once and never
    ran a kernel (so no OpenMP state is forked, and each child starts in a second, not in twenty).
    Every child's peak RSS therefore includes the same baseline: those imports.
    ``fn`` must be a module-level function of an importable module (it is pickled by name).
    """
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, kwargs, child))
    proc.start()
    child.close()
    status, payload = parent.recv()
    proc.join()
    if status != "ok":
        raise RuntimeError(f"isolated run of {fn.__name__} failed:\n{payload}")
    return payload


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A GitHub-markdown table (printed to stdout and pasted into BENCHMARKS.md)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_result(name: str, payload: dict[str, Any], results_dir: str | Path | None = None) -> Path:
    """``bench/results/<name>.json`` with the machine record and the command line attached."""
    out_dir = Path(results_dir) if results_dir else RESULTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "argv": sys.argv, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               **payload}
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    return path
