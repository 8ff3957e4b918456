"""Replicates of the eval's null control on a trained run: fresh pairs of simulator samples for the
same held-out contexts, each pair judged exactly as the eval judges ``simulator_vs_itself``.

    .venv/bin/python -m bench.null_control --config configs/eval/quality.yaml \
        data_dir=runs/quality/data run_dir=runs/quality/train [--replicates 2] [--seed_offset 1000]

Why: the null control's test is exact when the two samples are exchangeable (usersim.eval.paired), so a
rejection means either a real asymmetry between the eval's first and second simulator sample, or one
of the rare draws a valid test rejects (at alpha = 0.05 / judges, a few runs in a hundred). Fresh,
independent pairs from the same checkpoint, items, decoding and judges tell the two apart: with an
asymmetry they reject again; after a chance draw they sit at chance.

Replicate r draws samples with ``seed = cfg.seed + seed_offset + r`` (the eval itself used ``cfg.seed``),
two per item from one shared prefill, as the eval does. Everything else (items, decoding, judges,
folds, permutations) is the eval's own code. Writes bench/results/null_control.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from usersim.data_prep.stage_config import load_config
    from usersim.eval.config import EvalConfig
    from usersim.eval.controls import judge_alpha
    from usersim.eval.decoding_choice import resolve_decoding, sim_end_bias
    from usersim.eval.discrimination_suite import eval_judges, run_paired, warm_judges
    from usersim.eval.judges import item_context
    from usersim.eval.main import load_held_out
    from usersim.eval.simulate import SystemTurns, generate_turns
    from usersim.simulator import UserSimulator

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/eval/default.yaml")
    p.add_argument("--replicates", type=int, default=2)
    p.add_argument("--seed_offset", type=int, default=1000)
    p.add_argument("--output", default="bench/results/null_control.json")
    args, overrides = p.parse_known_args(argv)
    cfg = load_config(EvalConfig, args.config, overrides)
    items, _, _ = load_held_out(cfg)
    sim = UserSimulator.from_pretrained(cfg.run_dir, base_model=cfg.base_model or None, device=cfg.device or None,
                                        dtype=cfg.dtype or None, max_prompt_tokens=cfg.max_prompt_tokens)
    cfg, decoding = resolve_decoding(cfg, sim)
    judges = eval_judges(cfg, sim)
    users = [str(it["user_id"]) for it in items]
    contexts = [item_context(it["history"]) for it in items]
    out = {"config": args.config, "overrides": overrides, "decoding": decoding, "n_items": len(items),
           "judges": list(judges), "alpha_per_judge": judge_alpha(len(judges)), "replicates": []}
    for r in range(args.replicates):
        seed = cfg.seed + args.seed_offset + r
        start = time.perf_counter()
        rows = generate_turns(sim, items, use_adapter=True, seed=seed, num_samples=2,
                              temperatures=[cfg.temperature, cfg.temperature], batch_size=cfg.batch_size,
                              max_new_tokens=cfg.max_new_tokens, show_progress=cfg.show_progress,
                              do_sample=cfg.do_sample, top_p=cfg.top_p, end_bias=sim_end_bias(cfg, sim))
        first, second = (SystemTurns.from_turns([row[k] for row in rows]).at_budget(
            sim.tokenizer, cfg.max_new_tokens, capped_at_budget=True) for k in (0, 1))
        generate_s = time.perf_counter() - start
        left = [None if c else t for t, c in zip(first.texts, first.capped)]  # as the eval's control does
        warm_judges(judges, contexts, left, second.texts, show_progress=cfg.show_progress)
        res, keep, dropped = run_paired(judges, left, second, contexts, users, cfg)
        row = {"seed": seed, "generate_s": round(generate_s, 1), "n_pairs": len(keep), "excluded": dropped,
               **{name: r_.to_dict() for name, r_ in res.items()}}
        out["replicates"].append(row)
        print(f"[null_control] replicate {r} (seed {seed}, {len(keep)} pairs): " + ", ".join(
            f"{n} {v['accuracy']:.3f} p={v['p_value']:.3g}" for n, v in row.items() if isinstance(v, dict)
            and "accuracy" in v), flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=1), encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
