"""Why a trained simulator (almost) never ends a conversation: the numbers behind usersim.engine.EndControl.

    .venv/bin/python -m bench.ending --run runs/default/train --data runs/default/data

1. How often the end marker is a training target: records that end with it, and its share of the user's
   decisions (user turns + ends) in the training split.
2. What the model gives it on held-out items picked by the eval's rule (one per conversation): its own
   probability p of the whole marker (+ EOS) after the prompt, at the items where the real user ended
   against the others (AUC), and the humans' end rate on the same items.
3. Why sampling loses it: the share of items where the marker's first token falls outside the top-p
   nucleus, so nucleus sampling can never start it, and the rate at which nucleus sampling starts it
   (an upper bound of the end rate it can reach).

Writes bench/results/ending.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    from datasets import load_from_disk

    from usersim.data_prep.prompt_format import end_of_conversation_ids
    from usersim.engine import end_logprobs, prefill
    from usersim.eval.failure_modes import end_auc
    from usersim.eval.items import select_items
    from usersim.eval.simulate import item_condition
    from usersim.simulator import UserSimulator

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/default/train")
    p.add_argument("--data", default="runs/default/data")
    p.add_argument("--split", default="test")
    p.add_argument("--items", type=int, default=128)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--out", default="bench/results/ending.json")
    args = p.parse_args(argv)

    ds = load_from_disk(str(Path(args.data) / "dataset"))
    train = ds["train"]
    ends = int(sum(train["end_of_conversation"]))
    user_turns = sum(sum(t["role"] == "user" for t in turns) for turns in train["turns"])
    turns_split = ds[f"{args.split}_turns"]
    per_turn_rate = float(np.mean(turns_split["target_is_end"]))

    sim = UserSimulator.from_pretrained(args.run, max_prompt_tokens=256)
    items = select_items(turns_split.to_list(), args.items, 0, 1)
    real = np.asarray([bool(it["target_is_end"]) for it in items])
    ids = end_of_conversation_ids(sim.tokenizer)
    logps, first, inside = [], [], []
    tok = sim.tokenizer
    for s in range(0, len(items), 16):
        prompts = [sim.prompt_ids(it["history"], item_condition(it)) for it in items[s:s + 16]]
        with torch.inference_mode():
            cache, logits, mask = prefill(sim.model, prompts, tok.pad_token_id, sim.device)
            logps += end_logprobs(sim.model, cache, logits, mask, ids).tolist()
            probs = torch.softmax(logits.float(), -1)
            p0 = probs[:, ids[0]]
            # the nucleus: the smallest prefix of sorted probabilities whose mass reaches top_p (RowwiseSampler)
            top = torch.sort(probs, descending=True, dim=-1).values
            kept = (top.cumsum(-1) - top) < args.top_p
            mass = (top * kept).sum(-1)
            is_in = (probs * (probs > p0[:, None])).sum(-1) < args.top_p
            first += (p0 / mass * is_in).tolist()  # P(first marker token) under nucleus sampling
            inside += is_in.tolist()
    p_end = np.exp(np.asarray(logps))
    first_arr, inside_arr = np.asarray(first), np.asarray(inside, bool)
    out = {
        "run": args.run, "split": args.split, "n_items": len(items), "human_ends": int(real.sum()),
        "training": {"records": len(train), "records_ending_with_marker": ends, "user_turns": int(user_turns),
                     "end_share_of_decisions": ends / (user_turns + ends)},
        "held_out_per_turn_end_rate": per_turn_rate,
        "items_human_end_rate": float(real.mean()),
        "model_mean_p_end": float(p_end.mean()), "model_median_p_end": float(np.median(p_end)),
        "model_mean_p_end_at_real_ends": float(p_end[real].mean()) if real.any() else None,
        "auc": end_auc(logps, real),
        "top_p": args.top_p,
        "share_first_token_outside_nucleus": float(1 - inside_arr.mean()),
        # an upper bound of the end rate nucleus sampling reaches: the marker must then also be completed
        "first_token_rate_under_nucleus_sampling": float(first_arr.mean()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
