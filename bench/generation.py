"""Benchmark 4: batched generation (KV cache, left padding) vs one prompt at a time.

Eval's simulation step writes the next user turn for every held-out per-turn item. This compares
that step as eval runs it (``usersim.eval.simulate.generate_turns``: prompts ordered by length, batches of
16 through ``UserSimulator.generate_from_prompt_ids``, the engine of ``respond_batch``) with one
item at a time (``respond`` semantics: ``respond_batch`` on a single row), on the same items, the
same per-row seeds (so both produce the same turns) and the same ``max_new_tokens``, alternating
the two in one run. Tokens/s counts the generated tokens each
turn keeps (up to and including its EOS, ``SimulatorTurn.tokens``); the steps a finished row
spends waiting for the rest of its batch are time, not tokens.

    .venv/bin/python bench/generation.py                   # tiny model (+ Gemma-270M if converted)
    .venv/bin/python bench/generation.py --models tiny --items 8 --repeats 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.corpora import all_texts, real_records, synthetic_records
from bench.gemma_base import gemma_checkpoint
from bench.harness import alternate, format_table, machine_info, median_of, write_result
from usersim.data_prep.prompt_format import Condition
from usersim.data_prep.records import per_turn_items
from usersim.eval.simulate import generate_turns
from usersim.simulator import UserSimulator, derive_seed

def eval_items(source: str, n_items: int) -> tuple[list[dict], list[str]]:
    """Per-turn eval items (condition + history), spread over conversations; plus texts for a tokenizer."""
    records = (real_records("chitchat", max(8, n_items)) if source == "chitchat"
               else synthetic_records(max(8, n_items), user_turns=4, seed=1))
    items = []
    for rec in records:
        per = per_turn_items(rec)
        items.append(per[len(per) // 2])  # one mid-conversation item per conversation: varied history lengths
        if len(items) == n_items:
            break
    return items, all_texts(records)


def load_simulator(name: str, texts: list[str]) -> UserSimulator:
    if name == "tiny":
        from usersim.train.tiny_model import build_tiny_model, train_tiny_tokenizer

        tok = train_tiny_tokenizer(texts, vocab_size=512)
        return UserSimulator(build_tiny_model(tok, seed=0), tok)
    path = gemma_checkpoint()
    if path is None:
        raise FileNotFoundError("no Gemma checkpoint: run with --convert-gemma (or `usersim train` once)")
    return UserSimulator.from_base(str(path), device="cpu", dtype="float32")


def bench_model(name: str, items: list[dict], texts: list[str], batch_size: int, max_new_tokens: int,
                repeats: int) -> dict:
    sim = load_simulator(name, texts)
    histories = [it["history"] for it in items]
    conditions = [Condition.from_row(it["condition"]) for it in items]
    # usersim.eval.simulate.generate_turns seeds row (item i, sample 0) with derive_seed(seed, item id, 0)
    seeds = [derive_seed(0, it.get("id", i), 0) for i, it in enumerate(items)]
    gen = {"max_new_tokens": max_new_tokens}

    def batched() -> dict:
        t0 = time.perf_counter()
        turns = [t[0] for t in generate_turns(sim, items, seed=0, batch_size=batch_size, show_progress=False, **gen)]
        dt = time.perf_counter() - t0
        return {"seconds": dt, "tokens": sum(t.tokens for t in turns), "texts": [t.text for t in turns]}

    def one_at_a_time() -> dict:
        t0 = time.perf_counter()
        # UserSimulator.respond(h, ...) is respond_batch([h], [condition], seed) for one row; called the
        # same way here so each row gets the very seed eval's batched path gives it.
        turns = [sim.respond_batch([h], [c], seed=[s], **gen)[0] for h, c, s in zip(histories, conditions, seeds)]
        dt = time.perf_counter() - t0
        return {"seconds": dt, "tokens": sum(t.tokens for t in turns), "texts": [t.text for t in turns]}

    batched()  # warm-up (first-call allocations, lazy imports)
    runs = alternate({"batched": batched, "one_at_a_time": one_at_a_time}, repeats)
    same = sum(a == b for a, b in zip(runs["batched"][0]["texts"], runs["one_at_a_time"][0]["texts"]))
    for rs in runs.values():
        for r in rs:
            r["tokens_per_s"] = r["tokens"] / r["seconds"]
            r.pop("texts")
    b, o = median_of(runs["batched"], "tokens_per_s"), median_of(runs["one_at_a_time"], "tokens_per_s")
    return {
        "model": name, "items": len(items), "batch_size": batch_size, "max_new_tokens": max_new_tokens,
        "mean_prompt_tokens": sum(len(sim.prompt_ids(h, c)) for h, c in zip(histories, conditions)) / len(items),
        "batched_tokens_per_s": b, "one_at_a_time_tokens_per_s": o, "speedup": b / o,
        "identical_outputs": f"{same}/{len(items)}", "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="tiny,gemma", help="comma list of tiny,gemma (gemma skipped if not converted)")
    p.add_argument("--convert-gemma", action="store_true", help="convert the packaged Gemma GGUF if no checkpoint exists")
    p.add_argument("--source", default="chitchat", choices=["chitchat", "synthetic"])
    p.add_argument("--items", type=int, default=32, help="per-turn items per model (tiny)")
    p.add_argument("--gemma-items", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--gemma-repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine; 0 = torch's default)")
    p.add_argument("--results-dir", default=None)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name == "gemma" and gemma_checkpoint(create=args.convert_gemma) is None:
            print("[generation] no converted Gemma checkpoint in ~/.cache/usersim/models: skipping gemma")
            continue
        n = args.items if name == "tiny" else args.gemma_items
        items, texts = eval_items(args.source, n)
        repeats = args.repeats if name == "tiny" else args.gemma_repeats
        rows.append(bench_model(name, items, texts, args.batch_size, args.max_new_tokens, repeats))
    cols = ["model", "items", "batch_size", "max_new_tokens", "mean_prompt_tokens", "one_at_a_time_tokens_per_s",
            "batched_tokens_per_s", "speedup", "identical_outputs"]
    table = format_table(rows, cols)
    print(table)
    path = write_result("generation", {"machine": machine_info(), "source": args.source, "repeats": args.repeats,
                                       "results": rows, "table": table}, args.results_dir)
    print(f"[generation] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
