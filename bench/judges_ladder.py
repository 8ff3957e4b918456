"""Does each judge see a simulator improve? Paired accuracy of every judge against simulators trained
for different numbers of steps, on the same held-out items, at a size that resolves about +-0.07.

For each rung (a train run directory, or ``base`` = the first run's model with its adapter off) the
simulator writes one next user turn per held-out test item (one item per conversation, the eval's
sampler, seed and decoding), every turn is compared on its first ``max_new_tokens`` tokens, and the
fast, neural and lm judges run the paired test (usersim.eval.paired) against the real turns. The lm
judge reads with the base model loaded once (adapter-free), so every rung is judged by the same LM.

    .venv/bin/python -m bench.judges_ladder --data runs/default/data \\
        --rung base=runs/default/train --rung 18=runs/default/train \\
        --rung 200=runs/ladder/train600/checkpoints/step-00000200 --rung 600=runs/ladder/train600

A rung may be a training checkpoint (``RUN_DIR/checkpoints/step-N``): its adapter is written out as a
run directory beside it (``step-N-adapter/``, the run's adapter config, tokenizer and base model
record with the checkpoint's LoRA weights), so one long run gives several rungs.

Writes bench/results/judges_ladder.json and prints one row per (rung, judge).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from bench.harness import format_table, machine_info, write_result


def checkpoint_as_run_dir(path: str) -> str:
    """A train checkpoint dir as a loadable run dir (see the module docstring); a run dir is returned as is."""
    import shutil
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    ckpt = Path(path)
    if not (ckpt / "adapter.safetensors").is_file() or (ckpt / "adapter_model.safetensors").is_file():
        return path
    run = ckpt.parent.parent
    out = ckpt.with_name(ckpt.name + "-adapter")
    out.mkdir(exist_ok=True)
    for f in run.iterdir():
        if f.is_file() and f.name != "adapter_model.safetensors" and (f.suffix in (".json", ".yaml") or "token" in f.name):
            shutil.copy2(f, out / f.name)
    # checkpoint names are the training module's ("model.base_model.model...lora_A.default.weight"); PEFT's
    # saved adapter drops the wrapper prefix and the adapter name ("base_model.model...lora_A.weight")
    state = {k.removeprefix("model.").replace(".default.", "."): v
             for k, v in load_file(str(ckpt / "adapter.safetensors")).items()}
    save_file(state, str(out / "adapter_model.safetensors"))
    return str(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="runs/default/data", help="a `usersim data` run directory")
    ap.add_argument("--rung", action="append", required=True,
                    help="LABEL=RUN_DIR (a train run); LABEL 'base' = that run's model with its adapter off")
    ap.add_argument("--items", type=int, default=480, help="held-out items (one per conversation)")
    ap.add_argument("--max_new_tokens", type=int, default=48)
    ap.add_argument("--max_prompt_tokens", type=int, default=256)
    ap.add_argument("--context_tokens", type=int, default=128, help="transcript tokens the lm judge reads")
    ap.add_argument("--judges", default="fast,neural,lm")
    ap.add_argument("--n_permutations", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", default="judges_ladder")
    args = ap.parse_args(argv)

    import torch
    from datasets import load_from_disk

    from usersim.eval.judges import build_judges, item_context
    from usersim.eval.lm_judge import LMJudgeConfig, lm_judge, load_judge_lm
    from usersim.eval.items import select_items
    from usersim.eval.paired import complete_pairs, paired_discrimination
    from usersim.eval.simulate import SystemTurns, generate_turns
    from usersim.simulator import UserSimulator

    torch.manual_seed(args.seed)
    names = [j.strip() for j in args.judges.split(",") if j.strip()]
    pool = load_from_disk(f"{args.data}/dataset")["test_turns"].to_list()
    items = select_items(pool, args.items, args.seed, 1)
    users = [str(it["user_id"]) for it in items]
    contexts = [item_context(it["history"]) for it in items]
    lm = None
    if "lm" in names:
        model, tok = load_judge_lm()
        lm = lm_judge(model, tok, LMJudgeConfig(max_context_tokens=args.context_tokens,
                                                max_turn_tokens=args.max_new_tokens))
    judges = {n: j for n, j in build_judges("neural" in names, lm=lm).items() if n in names}
    rows: list[dict[str, Any]] = []
    tokenizer = None
    for spec in args.rung:
        label, run_dir = spec.split("=", 1)
        run_dir = checkpoint_as_run_dir(run_dir)
        t0 = time.perf_counter()
        sim = UserSimulator.from_pretrained(run_dir, device="cpu", max_prompt_tokens=args.max_prompt_tokens)
        tokenizer = tokenizer or sim.tokenizer
        turns = generate_turns(sim, items, use_adapter=label != "base", seed=args.seed, batch_size=48,
                               max_new_tokens=args.max_new_tokens, do_sample=True, top_p=0.95, temperature=1.0)
        gen_s = time.perf_counter() - t0
        cand = SystemTurns.from_turns([t[0] for t in turns]).at_budget(sim.tokenizer, args.max_new_tokens,
                                                                       capped_at_budget=True)
        real = SystemTurns.human(items).at_budget(sim.tokenizer, args.max_new_tokens, capped_at_budget=False)
        del sim
        keep, dropped = complete_pairs(real.texts, cand.texts, cand.capped)
        for name, judge in judges.items():
            t1 = time.perf_counter()
            r = paired_discrimination(judge, [real.texts[i] for i in keep], [cand.texts[i] for i in keep],
                                      [contexts[i] for i in keep], [users[i] for i in keep],
                                      n_permutations=args.n_permutations, seed=args.seed)
            inf = r.inference
            rows.append({"rung": label, "run_dir": run_dir, "judge": name, "accuracy": round(inf.accuracy, 4),
                         "ci_low": round(inf.ci_low, 4), "ci_high": round(inf.ci_high, 4),
                         "p_value": round(inf.p_value, 4), "mde": round(inf.mde, 4), "n_pairs": r.n_pairs,
                         "n_users": r.n_users, "excluded": dropped, "generate_s": round(gen_s, 1),
                         "judge_s": round(time.perf_counter() - t1, 1)})
            print(f"[judges_ladder] {label} {name}: {inf.accuracy:.3f} [{inf.ci_low:.3f}, {inf.ci_high:.3f}] "
                  f"p={inf.p_value:.4f} pairs={r.n_pairs} ({rows[-1]['judge_s']} s)", flush=True)
    print(format_table(rows, ["rung", "judge", "accuracy", "ci_low", "ci_high", "p_value", "mde", "n_pairs",
                              "n_users", "generate_s", "judge_s"]))
    path = write_result(args.output, {"machine": machine_info(), "args": vars(args), "rows": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
