"""Where the data stage's time goes: wall time per stage of one single-process `usersim data` run
(``num_proc=1``), for this working tree and for older revisions, on the same WildChat-shaped file.

Each stage's functions are wrapped with a timer (a few hundred ns per call; included in the
figures), so the stages add up to the run: read + parse + map (the adapter), validate, PII scrub,
dedupe key, split, staging (the kept conversations written for pass 2), persona ranking,
conditioning (``build_condition``: persona, goal, knowledge, style, leak scrub), imports, and the
rest (records, per-turn items, Arrow writing, card, ...). A revision is checked out with ``git
archive`` into a temporary folder and imported from there; revisions before the ``usersim.``
namespace (issue 12) import ``data_prep`` directly. Runs alternate between revisions.

    .venv/bin/python bench/data_prep_stages.py                       # fe591d5 (before issue 11) vs this tree, 10k
    .venv/bin/python bench/data_prep_stages.py --revs fe591d5,. --n 40000
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.data_prep_speed import corpus  # noqa: E402
from bench.harness import BENCH_DIR, format_table, machine_info, write_result  # noqa: E402

REPO = BENCH_DIR.parent
STAGES = ("read+parse+map", "validate", "pii", "dedupe", "split", "staging", "persona ranking", "conditioning",
          "imports", "rest")


def _timed(acc: dict, stage: str, f):
    @functools.wraps(f)
    def g(*a, **k):
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            acc[stage] = acc.get(stage, 0.0) + time.perf_counter() - t
    return g


def _timed_iter(acc: dict, stage: str, f):
    """``f`` returns an iterator; time spent in its ``next`` goes to ``stage``."""
    @functools.wraps(f)
    def g(*a, **k):
        it = iter(f(*a, **k))
        while True:
            t = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            finally:
                acc[stage] = acc.get(stage, 0.0) + time.perf_counter() - t
            yield item
    return g


def use_tree(tree: Path) -> str:
    """Import the data stage from ``tree``: the package prefix its modules use."""
    source = (tree / "data_prep" / "main.py").read_text(encoding="utf-8")
    if "from usersim.data_prep" not in source:  # before the usersim. namespace: a top-level package
        sys.path.insert(0, str(tree))
        return "data_prep"
    import importlib.util

    import usersim

    spec = importlib.util.spec_from_file_location("usersim.data_prep", tree / "data_prep" / "__init__.py",
                                                  submodule_search_locations=[str(tree / "data_prep")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["usersim.data_prep"] = module
    spec.loader.exec_module(module)
    usersim.data_prep = module
    return "usersim.data_prep"


def work(path: str, tree: Path) -> dict:
    """One run in this interpreter, of the data stage in ``tree``."""
    t0 = time.perf_counter()
    prefix = use_tree(tree)
    main = importlib.import_module(f"{prefix}.main")
    acc: dict[str, float] = {"imports": time.perf_counter() - t0}
    cond = importlib.import_module(f"{prefix}.conditioning")
    main.validate_conversation = _timed(acc, "validate", main.validate_conversation)
    main.scrub_conversation = _timed(acc, "pii", main.scrub_conversation)
    main.route_conversation = _timed(acc, "split", main.route_conversation)
    main.build_condition = _timed(acc, "conditioning", cond.build_condition)
    if hasattr(main, "clean_conversations"):  # this tree: staged frames, raw lines parsed in the cleaning step
        main.conversation_key = _timed(acc, "dedupe", main.conversation_key)
        main.stage_frame = _timed(acc, "staging", main.stage_frame)
        main.user_heads = _timed(acc, "persona ranking", main.user_heads)
        for name in ("resolve_line", "resolve_block"):  # raw JSONL parsed and mapped in the cleaning step
            if hasattr(main, name):
                setattr(main, name, _timed(acc, "read+parse+map", getattr(main, name)))
        for name in ("iter_source", "iter_source_lines", "iter_source_blocks"):
            if hasattr(main, name):
                setattr(main, name, _timed_iter(acc, "read+parse+map", getattr(main, name)))
    else:  # before issue 11: JSONL staging, datasets builder
        dedupe = importlib.import_module(f"{prefix}.dedupe")
        dedupe.DuplicateFilter.seen = _timed(acc, "dedupe", dedupe.DuplicateFilter.seen)
        records_io = importlib.import_module(f"{prefix}.records_io")
        records_io.JsonlWriter.write_conversation = _timed(acc, "staging", records_io.JsonlWriter.write_conversation)
        main.iter_conversations = _timed_iter(acc, "staging", main.iter_conversations)
        main.iter_source = _timed_iter(acc, "read+parse+map", main.iter_source)
        main.rank_typical_openers = _timed(acc, "persona ranking", main.rank_typical_openers)
    config = importlib.import_module(f"{prefix}.config")
    with tempfile.TemporaryDirectory(dir=Path(path).parent) as tmp:
        cfg = config.DataPrepConfig(sources=[config.SourceConfig(adapter="wildchat", path=path)],
                                    output_dir=str(Path(tmp) / "data"), show_progress=False, num_proc=1)
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            out = main.main(cfg)
        summary = json.loads((Path(out) / "summary.json").read_text())
    total = time.perf_counter() - t0
    acc["rest"] = total - sum(acc.values())
    n = next(iter(summary["sources"].values()))["read"]
    return {"read": n, "seconds": total, "us_per_conversation": {s: 1e6 * acc.get(s, 0.0) / n for s in STAGES}}


def checkout(rev: str, into: Path) -> Path:
    """The repository at ``rev`` (``.``: this working tree) as a folder to import from."""
    if rev == ".":
        return REPO
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run(rev_dir: Path, path: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", "--path", str(path),
                           "--tree", str(rev_dir)], capture_output=True, text=True, cwd=rev_dir, env=env)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--revs", default="fe591d5,.", help="comma list of git revisions ('.' = this working tree)")
    p.add_argument("--n", type=int, default=10_000, help="conversations in the WildChat-shaped file")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="data_prep_stages")
    p.add_argument("--results-dir", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    p.add_argument("--tree", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(work(args.path, Path(args.tree))))
        return 0
    path, _ = corpus(args.n, args.seed)
    revs = args.revs.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="stages-"))
    try:
        dirs = {rev: checkout(rev, tmp / rev.replace("/", "_")) for rev in revs}
        runs: dict[str, list[dict]] = {rev: [] for rev in revs}
        for r in range(args.repeats):
            for rev in revs:
                out = run(dirs[rev], path)
                out["load_avg_1m_after"] = os.getloadavg()[0]
                runs[rev].append(out)
                print(f"[data_prep_stages] {rev} repeat {r}: {out['seconds']:.1f} s, "
                      f"{out['read'] / out['seconds']:.0f} conv/s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for stage in (*STAGES, "total"):
        row = {"stage": stage}
        for rev in revs:
            if stage == "total":
                row[rev] = statistics.median(1e6 * x["seconds"] / x["read"] for x in runs[rev])
            else:
                row[rev] = statistics.median(x["us_per_conversation"][stage] for x in runs[rev])
        rows.append(row)
    table = format_table(rows, ["stage", *revs])
    print(table)
    out = write_result(args.name, {"machine": machine_info(), "args": {k: v for k, v in vars(args).items()
                                                                       if k not in ("worker", "path", "tree")},
                                   "unit": "microseconds per conversation",
                                   "runs": runs, "rows": rows, "table": table}, args.results_dir)
    print(f"[data_prep_stages] wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
