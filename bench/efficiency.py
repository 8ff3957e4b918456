"""Benchmark 2: achieved training FLOP/s vs this machine's matmul peak, and LM-head memory.

Training FLOP/s: a few optimizer steps of conversation-level LoRA training (packed rows,
usersim.train.loss.supervised_only_loss) on a chitchat slice, FLOPs counted by bench/flops.py
(4·N_non-embedding per token + 4·d·V per supervised position), divided by the wall time of
the timed steps (after one warm-up step). The denominator is ``torch.matmul`` float32 on
2048×2048 operands measured in the same run, at the same thread count, before and after the
training steps (the best of both).

LM-head memory (Gemma): one forward+backward on the same packed row with supervised-only logits
vs the model's own full-logits loss, each in a fresh child process; the figure is the child's
peak RSS minus its RSS just before the step (activations, logits and their gradients).

    .venv/bin/python bench/efficiency.py                  # tiny + Gemma-3-270M (a few steps)
    .venv/bin/python bench/efficiency.py --models tiny --steps 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from usersim.data_prep.prompt_format import IGNORE_INDEX

from bench.corpora import all_texts, real_records
from bench.flops import lora_train_flops, non_embedding_params
from bench.harness import format_table, machine_info, matmul_peak, peak_rss_mb, run_isolated, write_result
from bench.train_runs import lora_model, load_tokenizer

LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": []}


def packed_rows(tok_dir: str, records: list[dict[str, Any]], max_seq_len: int, max_tokens: int,
                seed: int) -> list[dict[str, torch.Tensor]]:
    from usersim.train.batching import collate, plan_batches
    from usersim.train.examples import record_to_example

    tok = load_tokenizer(tok_dir)
    examples = [record_to_example(r, tok, max_seq_len=max_seq_len) for r in records]
    plan = plan_batches(examples, max_tokens, seed, packing=True)
    plan.sort(key=lambda idx: -sum(len(examples[i]["input_ids"]) for i in idx))  # fullest rows first
    return [collate([examples[i] for i in idx], True, tok.pad_token_id) for idx in plan]


def train_flops_rate(spec: dict[str, Any], tok_dir: str, records: list[dict[str, Any]], *, steps: int,
                     max_seq_len: int, max_tokens: int, seed: int, threads: int) -> dict[str, Any]:
    """Timed conversation-level LoRA steps; FLOPs by the convention in bench/flops.py (child process)."""
    from usersim.train.batching import batch_token_counts
    from usersim.train.loss import supervised_only_loss

    torch.set_num_threads(threads)
    tokenizer = load_tokenizer(tok_dir)
    model = lora_model(spec, tokenizer, LORA, seed)
    rows = packed_rows(tok_dir, records, max_seq_len, max_tokens, seed)
    rows = [rows[i % len(rows)] for i in range(steps + 1)]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    model.train()
    base = model.get_base_model()
    n_params, d, vocab = non_embedding_params(model), base.config.hidden_size, base.config.vocab_size
    peak_before = matmul_peak(repeats=5)
    tokens = supervised = 0
    slots = 0
    t0 = 0.0
    for i, batch in enumerate(rows):
        if i == 1:  # step 0 is the warm-up
            t0 = time.perf_counter()
        total, count = supervised_only_loss(model, **batch)
        (total / count.clamp(min=1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 1:
            real, s, n = batch_token_counts(batch)
            tokens, slots, supervised = tokens + real, slots + s, supervised + n
    seconds = time.perf_counter() - t0
    peak_after = matmul_peak(repeats=5)
    flops = lora_train_flops(n_params, tokens, supervised, d, vocab)
    peak = max(peak_before["gflops_best"], peak_after["gflops_best"])
    return {
        "non_embedding_params": n_params, "hidden": d, "vocab": vocab, "timed_steps": steps, "tokens": tokens,
        "supervised_positions": supervised, "row_fill": tokens / (steps * max_tokens), "seconds": seconds,
        "tokens_per_s": tokens / seconds, "train_gflops": flops / 1e9, "achieved_gflops_per_s": flops / seconds / 1e9,
        "matmul_peak_gflops_per_s": peak, "matmul_before": peak_before, "matmul_after": peak_after,
        "utilisation": flops / seconds / 1e9 / peak, "head_share_of_flops": 4.0 * d * vocab * supervised / flops,
    }


def head_memory(spec: dict[str, Any], tok_dir: str, records: list[dict[str, Any]], *, mode: str, max_seq_len: int,
                max_tokens: int, seed: int, threads: int) -> dict[str, Any]:
    """One forward+backward of the fullest packed row; peak RSS growth over the step (child process)."""
    from usersim.train.loss import supervised_only_loss

    torch.set_num_threads(threads)
    tokenizer = load_tokenizer(tok_dir)
    model = lora_model(spec, tokenizer, {**LORA, "dropout": 0.0}, seed)
    batch = packed_rows(tok_dir, records, max_seq_len, max_tokens, seed)[0]
    model.train()
    before = peak_rss_mb()
    if mode == "supervised_only":
        total, count = supervised_only_loss(model, **batch)
        loss = total / count
    else:
        loss = model(**batch).loss
    loss.backward()
    return {"mode": mode, "tokens": batch["input_ids"].numel(),
            "supervised_positions": int((batch["labels"][:, 1:] != IGNORE_INDEX).sum()),
            "rss_before_step_mb": before, "loss": float(loss.detach()), "step_peak_growth_mb": peak_rss_mb() - before}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="tiny,gemma")
    p.add_argument("--steps", type=int, default=4, help="timed optimizer steps per model (after 1 warm-up)")
    p.add_argument("--conversations", type=int, default=64)
    p.add_argument("--tiny-max-tokens", type=int, default=2048)
    p.add_argument("--gemma-max-tokens", type=int, default=512)
    p.add_argument("--memory-repeats", type=int, default=2)
    p.add_argument("--memory-set", default="sharegpt", choices=["sharegpt", "chitchat"],
                   help="records for the LM-head memory comparison (ShareGPT: user tokens a minority, as in chatbot logs)")
    p.add_argument("--no-memory", action="store_true", help="skip the LM-head memory comparison")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results-dir", default=None)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    records = real_records("chitchat", args.conversations)
    mem_records = (real_records("sharegpt", 16, min_user_turns=2, max_chars=6000, read_limit=400)
                   if args.memory_set == "sharegpt" else records)
    rows, memory_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            if name == "tiny":
                from usersim.train.tiny_model import train_tiny_tokenizer

                tok_dir = str(Path(tmp) / "tok")
                train_tiny_tokenizer(all_texts(records), vocab_size=512).save_pretrained(tok_dir)
                spec, max_tokens = {"kind": "tiny", "seed": args.seed}, args.tiny_max_tokens
            else:
                from bench.gemma_base import gemma_checkpoint

                path = gemma_checkpoint(create=True)
                spec, tok_dir, max_tokens = {"kind": "path", "path": str(path)}, str(path), args.gemma_max_tokens
            out = run_isolated(train_flops_rate, spec=spec, tok_dir=tok_dir, records=records, steps=args.steps,
                               max_seq_len=max_tokens, max_tokens=max_tokens, seed=args.seed, threads=args.threads)
            out["model"] = name
            rows.append(out)
            print(f"[efficiency] {name}: {out['achieved_gflops_per_s']:.1f} GFLOP/s of "
                  f"{out['matmul_peak_gflops_per_s']:.1f} peak ({100 * out['utilisation']:.1f}%)")
            if name == "gemma" and not args.no_memory:
                for r in range(args.memory_repeats):
                    for mode in ("supervised_only", "full_logits"):
                        m = run_isolated(head_memory, spec=spec, tok_dir=tok_dir, records=mem_records, mode=mode,
                                         max_seq_len=max_tokens, max_tokens=max_tokens, seed=args.seed,
                                         threads=args.threads)
                        m.update({"model": name, "repeat": r, "set": args.memory_set})
                        memory_rows.append(m)
                        print(f"[efficiency] {name} {mode}: +{m['step_peak_growth_mb']:.0f} MB over the step")
    table = format_table(rows, ["model", "non_embedding_params", "vocab", "timed_steps", "tokens",
                                "supervised_positions", "row_fill", "tokens_per_s", "achieved_gflops_per_s",
                                "matmul_peak_gflops_per_s", "utilisation", "head_share_of_flops"])
    mem_summary = []
    for mode in ("supervised_only", "full_logits"):
        ms = [m for m in memory_rows if m["mode"] == mode]
        if ms:
            mem_summary.append({"mode": mode, "set": ms[0]["set"], "tokens": ms[0]["tokens"],
                                "supervised_positions": ms[0]["supervised_positions"],
                                "step_peak_growth_mb": statistics.median(m["step_peak_growth_mb"] for m in ms),
                                "peak_rss_mb": statistics.median(m["peak_rss_mb"] for m in ms)})
    if len(mem_summary) == 2:
        ratio = mem_summary[0]["step_peak_growth_mb"] / mem_summary[1]["step_peak_growth_mb"]
        for m in mem_summary:
            m["ratio_to_full_logits"] = m["step_peak_growth_mb"] / mem_summary[1]["step_peak_growth_mb"]
    else:
        ratio = None
    mem_table = format_table(mem_summary, ["mode", "set", "tokens", "supervised_positions", "step_peak_growth_mb",
                                           "peak_rss_mb", "ratio_to_full_logits"]) if mem_summary else ""
    print(table)
    print()
    print(mem_table)
    path = write_result("efficiency", {"machine": machine_info(), "args": vars(args), "lora": LORA,
                                       "flop_convention": "4*N_non_embedding per token + 4*d*V per supervised position "
                                                          "(LoRA: no weight gradients of the frozen base); attention "
                                                          "score FLOPs ignored",
                                       "results": rows, "memory": memory_rows, "memory_summary": mem_summary,
                                       "supervised_only_over_full_logits_memory": ratio, "table": table,
                                       "memory_table": mem_table}, args.results_dir)
    print(f"[efficiency] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
