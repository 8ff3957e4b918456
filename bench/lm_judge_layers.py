"""Which hidden layers and how much context give the lm judge its power (the choice behind its defaults).

On a finished default eval run (``make all``): the run's held-out items and every system's turns from
``samples.jsonl``, plus the same user's turn from another context, are read by the Gemma-3-270M base
once with every layer kept; then the paired test (usersim.eval.paired) is run for several layer sets.

    .venv/bin/python -m bench.lm_judge_layers [--eval runs/default/eval] [--context_tokens 128]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

LAYER_SETS = {"6,12,18 (default)": [6, 12, 18], "12,18": [12, 18], "4,8,12": [4, 8, 12], "6,12": [6, 12],
              "3,6,9": [3, 6, 9], "6": [6], "9": [9], "12": [12], "18": [18]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval", default="runs/default/eval")
    ap.add_argument("--context_tokens", type=int, default=128)
    ap.add_argument("--n_permutations", type=int, default=200)
    args = ap.parse_args(argv)

    from datasets import load_from_disk

    from usersim.eval.controls import same_user_other_turns
    from usersim.eval.judges import Judge, item_context
    from usersim.eval.lm_judge import LMFeaturiser, LMJudgeConfig, load_judge_lm
    from usersim.eval.paired import paired_discrimination

    cfg = json.load(open(f"{args.eval}/metrics.json"))["config"]
    samples = [json.loads(line) for line in open(f"{args.eval}/samples.jsonl")]
    pool = load_from_disk(f"{cfg['data_dir']}/dataset")[f"{cfg['split']}_turns"].to_list()
    by_id = {it["id"]: it for it in pool}
    items = [by_id[s["id"]] for s in samples]
    ctx = [item_context(it["history"]) for it in items]
    users = [str(it["user_id"]) for it in items]
    real = [s["real"] for s in samples]
    cands = {"simulator": [s.get("simulated") for s in samples], "base": [s.get("base") for s in samples],
             "prompted": [s.get("prompted") for s in samples],
             "same_user_other_context": same_user_other_turns(items, pool, cfg["seed"])}
    model, tok = load_judge_lm()
    feat = LMFeaturiser(model, tok, LMJudgeConfig(max_context_tokens=args.context_tokens,
                                                  max_turn_tokens=cfg["max_new_tokens"]))
    depth = model.config.num_hidden_layers
    feat.layers = list(range(1, depth + 1))  # keep every layer once; the sets below are slices of it
    texts, contexts = [], []
    for col in [real, *cands.values()]:
        for t, c in zip(col, ctx):
            if t and t.strip():
                texts.append(t)
                contexts.append(c)
    start = time.perf_counter()
    feat.warm(texts, contexts)
    print(f"featurised {len(texts)} turns in {len(items)} contexts: {time.perf_counter() - start:.1f} s")

    def judge_of(layers: list[int]) -> Judge:
        def features(ts, cs):
            x = feat.raw(ts, cs).astype(np.float64)
            dim = (x.shape[1] - 1) // (depth + 1)
            blocks = [x[:, (k - 1) * dim:k * dim] for k in layers] + [x[:, -1:]]
            return np.hstack([(b - b.mean(0)) / np.where(b.std(0) > 0, b.std(0), 1.0) / np.sqrt(b.shape[1])
                              for b in blocks])
        return Judge("lm", "", features)

    rows = {}
    for name, layers in LAYER_SETS.items():
        row = {}
        for system, col in cands.items():
            keep = [i for i in range(len(items)) if real[i] and real[i].strip() and col[i] and col[i].strip()]
            r = paired_discrimination(judge_of(layers), [real[i] for i in keep], [col[i] for i in keep],
                                      [ctx[i] for i in keep], [users[i] for i in keep],
                                      n_permutations=args.n_permutations, seed=0)
            row[system] = round(r.inference.accuracy, 3)
        rows[name] = row
        print(f"{name:20s} " + "  ".join(f"{s} {a:.3f}" for s, a in row.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
