"""Does the simulator read its condition? Teacher-forced, on held-out users, one field at a time.

    .venv/bin/python -m bench.condition_use --run runs/default/train --data runs/default/data

The test itself is usersim.eval.condition_use (method, counterfactuals and statistic in its docstring; ``usersim
eval`` reports it with ``condition_use_conversations`` > 0). This script runs it on a seeded sample of a
held-out split (``--split``, never the training split) for several train runs and the untuned base, and with
``--first_turn_only`` on each conversation's first user turn alone, where no earlier turn of the user shows
their style.

The style line in words instead of ``key=value`` codes was tried with this bench at commit 6c046db (and
reverted): BENCHMARKS.md section 8, "Does the simulator read its condition".

Writes bench/results/condition_use.json (or ``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import time
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None) -> int:
    from datasets import load_from_disk

    from usersim.eval.condition_use import condition_costs
    from usersim.simulator import UserSimulator

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", default=[],
                   help="a train run dir (repeatable); the first one's base is also scored untuned")
    p.add_argument("--data", default="runs/default/data")
    p.add_argument("--split", default="test", choices=["validation", "test"])
    p.add_argument("--conversations", type=int, default=48, help="seeded sample of the split's conversations")
    p.add_argument("--max_seq_len", type=int, default=320,
                   help="each conversation is cut to the whole turns that fit this many tokens with its own condition")
    p.add_argument("--first_turn_only", action="store_true",
                   help="score only each conversation's first user turn (no earlier turn of the user shows the style)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n_boot", type=int, default=1000)
    p.add_argument("--no-base", dest="base", action="store_false", help="skip the untuned base")
    p.add_argument("--base-only", dest="base_only", action="store_true",
                   help="score only the untuned base (the first --run's, adapter disabled)")
    p.add_argument("--out", default="bench/results/condition_use.json")
    args = p.parse_args(argv)
    runs = args.run or ["runs/default/train"]

    ds = load_from_disk(str(Path(args.data) / "dataset"))[args.split]
    pick = sorted(random.Random(args.seed).sample(range(len(ds)), min(args.conversations, len(ds))))
    records = [ds[i] for i in pick]
    result: dict[str, Any] = {"split": args.split, "conversations": len(records),
                              "users": len({r["user_id"] for r in records}), "max_seq_len": args.max_seq_len,
                              "first_turn_only": args.first_turn_only, "seed": args.seed, "models": {}}
    models = [] if args.base_only else [(run, run, True) for run in runs]
    if args.base or args.base_only:
        models.insert(0, ("base (untuned)", runs[0], False))
    for label, run, adapter in models:
        t0 = time.perf_counter()
        sim = UserSimulator.from_pretrained(run)
        with contextlib.ExitStack() as stack:
            if not adapter:
                stack.enter_context(sim.adapter_disabled())
            row = condition_costs(sim, records, max_tokens=args.max_seq_len, seed=args.seed, n_boot=args.n_boot,
                                  batch_size=args.batch_size, first_turn_only=args.first_turn_only,
                                  progress=lambda name, res, label=label: print(f"{label:32s} {name:20s} {res}",
                                                                                flush=True))
        row["wall_s"] = round(time.perf_counter() - t0, 1)
        result["models"][label] = row
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
