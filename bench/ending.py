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
4. Whether the decision is calibrated in *slope*, or only in rate: a logistic fit of the real ends on the
   model's log-odds, y ~ a * logit(p) + b, on validation users (never the test split), case-control: every
   sampled validation item where the real user ended is a case, the non-ends among the decoding's items
   (the same sampler and seed as ``usersim decoding``) are the controls; the slope ``a`` is consistent under
   that sampling, the intercept is not (and is not used). a ~ 1 says the end decision's F1 is bounded by
   what the model knows about *when* people end (the AUC), not by how the decision is drawn; sharpening
   the draw (a > 1 at decode time) would buy F1 by making ends nearly deterministic, not by knowing more.
   Beside it, on the test items: the F1 expected over the run's own end draws (``end_f1_expected``) and the
   chance that one draw gets no real end right, at the run's end_bias and, for reference, at sharper
   slopes re-calibrated to the same rate on the validation items.

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
    p.add_argument("--cases", type=int, default=48, help="validation end items for the slope fit (section 4)")
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
    out["slope"] = calibration_slope(sim, ds, logps, real, args.cases)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


def log_odds(logps) -> np.ndarray:
    """logit(p) of log-probabilities, as the end decision reads them (usersim.engine.end_log_odds)."""
    from usersim.engine import end_log_odds

    return end_log_odds(torch.as_tensor(np.asarray(logps, float))).numpy()


def logistic_fit(x: np.ndarray, y: np.ndarray, iters: int = 50) -> tuple[float, float]:
    """Maximum-likelihood (a, b) of P(y) = sigmoid(a x + b), by Newton's method from the rate's intercept."""
    a, b = 1.0, float(np.log(y.mean() / (1 - y.mean())) - x.mean())
    for _ in range(iters):
        q = 1 / (1 + np.exp(-(a * x + b)))
        w = q * (1 - q)
        grad = np.array([((y - q) * x).sum(), (y - q).sum()])
        hess = np.array([[(w * x * x).sum(), (w * x).sum()], [(w * x).sum(), w.sum()]])
        step = np.linalg.solve(hess + 1e-9 * np.eye(2), grad)
        a, b = a + float(step[0]), b + float(step[1])
        if np.abs(step).max() < 1e-10:
            break
    return a, b


def calibration_slope(sim, ds, test_logps, test_real: np.ndarray, n_cases: int) -> dict:
    """Section 4 of the module doc."""
    from usersim.engine import end_chance
    from usersim.eval.decoding_choice import NEVER_END, calibrate_end_bias
    from usersim.eval.failure_modes import end_auc, expected_end_f1
    from usersim.eval.items import select_items
    from usersim.eval.simulate import generate_turns

    val = ds["validation_turns"].to_list()
    everyone = select_items(val, 0, 13, 1)
    human_rate = float(np.mean([it["target_is_end"] for it in everyone]))
    decoding_items = select_items(val, 64, 13, 1)  # usersim decoding's items under configs/eval/default.yaml
    ends = [it for it in val if it["target_is_end"]]
    rng = np.random.default_rng(0)
    cases = [ends[i] for i in sorted(rng.choice(len(ends), size=min(n_cases, len(ends)), replace=False))]

    def logps_of(items):
        rows = generate_turns(sim, items, use_adapter=True, seed=13, batch_size=64, max_new_tokens=1,
                              do_sample=False, end_bias=NEVER_END, show_progress=False)
        return [float(r[0].end_logprob) for r in rows]

    dec_lp = np.asarray(logps_of(decoding_items))
    dec_end = np.asarray([bool(it["target_is_end"]) for it in decoding_items])
    case_lp = np.asarray(logps_of(cases))
    x = np.r_[log_odds(dec_lp[~dec_end]), log_odds(case_lp), log_odds(dec_lp[dec_end])]
    y = np.r_[np.zeros((~dec_end).sum()), np.ones(len(case_lp) + dec_end.sum())]
    a, _ = logistic_fit(x, y)
    boot = []
    neg, pos = x[y == 0], x[y == 1]
    for _ in range(500):
        xn, xp = rng.choice(neg, neg.size), rng.choice(pos, pos.size)
        boot.append(logistic_fit(np.r_[xn, xp], np.r_[np.zeros(xn.size), np.ones(xp.size)])[0])

    def sharpened(logps, scale: float) -> torch.Tensor:
        """log-probabilities whose log-odds are ``scale`` x those of ``logps`` (end_chance adds the bias to those)"""
        return torch.nn.functional.logsigmoid(torch.tensor(log_odds(logps) * scale, dtype=torch.float64))

    run_bias = (sim.decoding or {}).get("end_bias")
    at = {}
    for scale in (1.0, 2.0, 3.0):
        # each slope's bias matches the humans' rate on the decoding's items, as `usersim decoding` does at slope 1
        bias = (run_bias if scale == 1.0 and run_bias is not None
                else calibrate_end_bias(sharpened(dec_lp, scale).tolist(), human_rate))
        q = end_chance(sharpened(test_logps, scale), bias).numpy()
        at[f"slope_{scale:g}"] = {"end_bias": bias, "expected_rate": float(q.mean()),
                                  "expected_true_ends": float(q[test_real].sum()),
                                  "end_f1_expected": expected_end_f1(test_real, q),
                                  "p_no_true_end": float(np.prod(1 - q[test_real]))}
    return {"validation_human_rate": human_rate, "cases": len(case_lp), "controls": int((~dec_end).sum()),
            "case_control_auc": end_auc(x.tolist(), (y == 1).tolist()), "slope": a,
            "slope_ci": np.percentile(boot, [2.5, 97.5]).tolist(), "test": at}


if __name__ == "__main__":
    raise SystemExit(main())
