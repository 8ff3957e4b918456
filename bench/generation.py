"""Benchmark 4: batched generation vs one row at a time, on two workloads.

* eval items: eval's simulation step as it runs (``usersim.eval.simulate.generate_turns``: the
  simulator's samples per item, 16 items x samples per batch, through ``decode_rows``) vs ``respond``
  semantics (``respond_batch`` on a single row) for every item and sample;
* RL rollouts: ``usersim.rl.env.BatchUserSimEnv`` stepping all episodes against a scripted assistant
  vs one environment per episode (on the first ``--rollout-alone-episodes`` episodes: alone, an
  episode costs the same whatever their number).

Both sides use the same rows with the same per-row seeds (so they write the same turns; the tables
count identical outputs) and alternate in one run. Tokens/s counts the generated tokens each turn
keeps (up to and including its EOS); steps a finished row would wait for its batch are not tokens.

    .venv/bin/python bench/generation.py                   # tiny model (+ Gemma-270M if converted)
    .venv/bin/python bench/generation.py --models tiny --items 8 --repeats 1 --rollout-episodes 8
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
                repeats: int, temperatures: list[float], top_p: float, max_prompt_tokens: int) -> dict:
    """Eval's simulation step (``len(temperatures)`` samples per item) batched vs one ``respond`` per row."""
    sim = load_simulator(name, texts)
    sim.max_prompt_tokens = max_prompt_tokens
    histories = [it["history"] for it in items]
    conditions = [Condition.from_row(it["condition"]) for it in items]
    n_samples = len(temperatures)
    # usersim.eval.simulate.generate_turns seeds row (item i, sample k) with derive_seed(seed, item id, k)
    seeds = [[derive_seed(0, it.get("id", i), k) for k in range(n_samples)] for i, it in enumerate(items)]
    gen = {"max_new_tokens": max_new_tokens, "top_p": top_p}

    def batched() -> dict:
        t0 = time.perf_counter()
        rows = generate_turns(sim, items, seed=0, batch_size=batch_size * n_samples, num_samples=n_samples,
                              temperatures=temperatures, show_progress=False, **gen)
        dt = time.perf_counter() - t0
        turns = [t for row in rows for t in row]
        return {"seconds": dt, "tokens": sum(t.tokens for t in turns), "texts": [t.text for t in turns]}

    def one_at_a_time() -> dict:
        t0 = time.perf_counter()
        # UserSimulator.respond(h, ...) is respond_batch([h], [condition], seed) for one row; called the
        # same way here so each row gets the very seed (and temperature) eval's batched path gives it.
        turns = [sim.respond_batch([h], [c], seed=[s[k]], temperature=temperatures[k], **gen)[0]
                 for h, c, s in zip(histories, conditions, seeds) for k in range(n_samples)]
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
        "model": name, "workload": "eval items", "items": len(items), "samples_per_item": n_samples,
        "batch_size": batch_size * n_samples, "max_new_tokens": max_new_tokens,
        "mean_prompt_tokens": sum(len(sim.prompt_ids(h, c)) for h, c in zip(histories, conditions)) / len(items),
        "batched_tokens_per_s": b, "one_at_a_time_tokens_per_s": o, "speedup": b / o,
        "identical_outputs": f"{same}/{len(items) * n_samples} turns", "runs": runs,
    }


# The scripted assistant of the rollout benchmark: short replies, so the user's turns (decode) dominate.
ASSISTANT_REPLIES = ("Sure, tell me more about that.", "That makes sense. What happened next?",
                     "Interesting! How do you feel about it?", "Got it. Anything else on your mind?")


def rollouts(sim: UserSimulator, scenarios: list, turns: int, max_new_tokens: int, batched: bool,
             episodes: int | None = None) -> dict:
    """RL rollouts against a scripted assistant: one BatchUserSimEnv over all episodes, or one per episode
    (the first ``episodes`` of them only).

    Both sides give episode ``i`` the same seed, so they write the same user turns. Tokens are those of
    the kept user turns re-tokenised, plus one EOS each (the environment keeps text, not ids): the same
    count on both sides.
    """
    from usersim.rl.env import BatchUserSimEnv

    seeds = [derive_seed(0, "episode", i) for i in range(len(scenarios))]
    scenarios = scenarios[:episodes] if episodes else scenarios
    groups = [list(range(len(scenarios)))] if batched else [[i] for i in range(len(scenarios))]
    gen = {"max_new_tokens": max_new_tokens}
    t0 = time.perf_counter()
    transcripts = {}
    for group in groups:
        env = BatchUserSimEnv(sim, max_turns=turns, generation=gen)
        env.reset(seeds=[seeds[i] for i in group], scenarios=[scenarios[i] for i in group])
        for t in range(turns):
            live = env.live
            if not any(live):
                break
            env.step([ASSISTANT_REPLIES[t % len(ASSISTANT_REPLIES)] if ok else None for ok in live])
        for i, ep in zip(group, env.episodes):
            transcripts[i] = [turn["text"] for turn in ep.transcript.turns if turn["role"] == "user"]
    dt = time.perf_counter() - t0
    texts = [transcripts[i] for i in range(len(scenarios))]
    tokens = sum(len(sim.tokenizer(t, add_special_tokens=False).input_ids) + 1 for tr in texts for t in tr)
    return {"seconds": dt, "tokens": tokens, "texts": texts, "user_turns": sum(len(tr) for tr in texts)}


def bench_rollouts(name: str, items: list[dict], texts: list[str], turns: int, max_new_tokens: int,
                   repeats: int, alone_episodes: int = 0) -> dict:
    """Batched rollouts of every episode vs one episode at a time.

    ``alone_episodes`` > 0 runs the one-at-a-time side on the first that many episodes only: an episode
    run alone costs the same whatever the number of episodes, so its tokens/s is measured on a subset
    (its outputs are compared with the same episodes of the batched run).
    """
    from usersim.rl.scenarios import Scenario

    sim = load_simulator(name, texts)
    scenarios = [Scenario(id=str(it.get("id", i)), condition=Condition.from_row(it["condition"]))
                 for i, it in enumerate(items)]
    rollouts(sim, scenarios[:2], 1, 4, batched=True)  # warm-up
    runs = alternate({"batched": lambda: rollouts(sim, scenarios, turns, max_new_tokens, True),
                      "one_at_a_time": lambda: rollouts(sim, scenarios, turns, max_new_tokens, False,
                                                        alone_episodes or None)}, repeats)
    alone = runs["one_at_a_time"][0]["texts"]
    same = sum(a == b for a, b in zip(runs["batched"][0]["texts"], alone))
    user_turns = runs["batched"][0]["user_turns"]
    for rs in runs.values():
        for r in rs:
            r["tokens_per_s"] = r["tokens"] / r["seconds"]
            r.pop("texts")
    b, o = median_of(runs["batched"], "tokens_per_s"), median_of(runs["one_at_a_time"], "tokens_per_s")
    return {"model": name, "workload": f"rl rollouts, {turns} assistant turns", "items": len(items),
            "samples_per_item": 1, "batch_size": len(items), "max_new_tokens": max_new_tokens,
            "user_turns": user_turns, "batched_tokens_per_s": b, "one_at_a_time_tokens_per_s": o, "speedup": b / o,
            "one_at_a_time_episodes": len(alone), "identical_outputs": f"{same}/{len(alone)} episodes", "runs": runs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="tiny,gemma", help="comma list of tiny,gemma (gemma skipped if not converted)")
    p.add_argument("--convert-gemma", action="store_true", help="convert the packaged Gemma GGUF if no checkpoint exists")
    p.add_argument("--source", default="chitchat", choices=["chitchat", "synthetic"])
    p.add_argument("--items", type=int, default=32, help="per-turn items per model (tiny)")
    p.add_argument("--gemma-items", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=16,
                   help="items per batch (x samples = rows, as eval's batch_size)")
    # eval's default profile (configs/eval/default.yaml): the simulator's 3 samples per item (headline,
    # null control, hot control at 1.6), 48 new tokens, prompts of up to 256 tokens, top_p 0.95.
    p.add_argument("--temperatures", default="1.0,1.0,1.6", help="one sample per temperature, per item")
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--max-prompt-tokens", type=int, default=256)
    p.add_argument("--rollout-episodes", type=int, default=48, help="RL rollouts: episodes (0 = skip)")
    p.add_argument("--rollout-turns", type=int, default=2, help="RL rollouts: assistant turns per episode")
    p.add_argument("--rollout-max-new-tokens", type=int, default=64, help="as usersim.rl.env.DEFAULT_USER_GENERATION")
    p.add_argument("--rollout-repeats", type=int, default=1, help="repeats of the rollout workload (0 = as the items)")
    p.add_argument("--rollout-alone-episodes", type=int, default=12,
                   help="run the one-at-a-time side on this many of the episodes (0 = all)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--gemma-repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine; 0 = torch's default)")
    p.add_argument("--name", default="generation", help="results file name")
    p.add_argument("--results-dir", default=None)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    temperatures = [float(t) for t in args.temperatures.split(",") if t.strip()]
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        if name == "gemma" and gemma_checkpoint(create=args.convert_gemma) is None:
            print("[generation] no converted Gemma checkpoint in ~/.cache/usersim/models: skipping gemma")
            continue
        n = args.items if name == "tiny" else args.gemma_items
        items, texts = eval_items(args.source, n)
        repeats = args.repeats if name == "tiny" else args.gemma_repeats
        rows.append(bench_model(name, items, texts, args.batch_size, args.max_new_tokens, repeats, temperatures,
                                args.top_p, args.max_prompt_tokens))
        print(format_table(rows[-1:], ["model", "workload", "speedup", "identical_outputs"]), flush=True)
        if args.rollout_episodes:
            episodes, _ = eval_items(args.source, args.rollout_episodes)
            rows.append(bench_rollouts(name, episodes, texts, args.rollout_turns, args.rollout_max_new_tokens,
                                       args.rollout_repeats or repeats, args.rollout_alone_episodes))
            print(format_table(rows[-1:], ["model", "workload", "speedup", "identical_outputs"]), flush=True)
    cols = ["model", "workload", "items", "samples_per_item", "batch_size", "max_new_tokens", "mean_prompt_tokens",
            "one_at_a_time_episodes", "one_at_a_time_tokens_per_s", "batched_tokens_per_s", "speedup",
            "identical_outputs"]
    table = format_table(rows, cols)
    print(table)
    path = write_result(args.name, {"machine": machine_info(), "args": vars(args), "results": rows, "table": table},
                        args.results_dir)
    print(f"[generation] wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
