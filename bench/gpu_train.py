"""Benchmark 5 (GPU): LoRA on a random-initialised ~1B Llama in bf16, conversation-level vs per-turn.

One prepared script for one H100 (no network: the model is random-initialised from a config, the
data are random token conversations with the simulator format's structure). Both contenders
train the same LoRA settings on the same conversations:

- ``conversation``: one sequence per conversation, every user turn supervised, rows packed
  padding-free (usersim.train.batching), LM head at supervised positions only (usersim.train.loss);
- ``per_turn``: one sample per user turn carrying its whole history (bench.per_turn), padded
  batches in random order (TRL's default collation), the model's own full-logits loss.

Steps alternate in blocks (A, B, A, B, ...). Reported per contender: tokens/s (real tokens through
the transformer), supervised tokens/s (an epoch is a fixed number of supervised tokens, so their
ratio is the per-epoch speed-up), peak GPU memory, and MFU = FLOPs (bench/flops.py convention:
4·N_non-embedding per token + 4·d·V per logit position) / time / the card's bf16 matmul peak,
measured in this script (torch.matmul, 8192² bf16).

    python bench/gpu_train.py                 # on the GPU: about 5 minutes
    .venv/bin/python bench/gpu_train.py --tiny   # CPU check of the whole path, seconds

Not run on a GPU in this task (no device was lent); ``--tiny`` was run on CPU.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.flops import lora_train_flops, non_embedding_params
from bench.harness import format_table, machine_info, matmul_peak, write_result
from bench.per_turn import completion_labels, per_turn_samples

from usersim.data_prep.prompt_format import IGNORE_INDEX as IGNORE
BOS, EOS, PAD = 1, 2, 0


def model_config(tiny: bool):
    from transformers import LlamaConfig

    if tiny:
        return LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                           bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, tie_word_embeddings=True)
    # Llama-3.2-1B's shape (16 layers, d=2048, GQA 32/8, 128k vocabulary, tied embeddings).
    return LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                       num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                       bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, tie_word_embeddings=True,
                       rope_theta=500000.0)


def synthetic_conversation(rng: random.Random, vocab: int, turns: int, header: int, user: int,
                           assistant: int) -> dict[str, list[int]]:
    """Random tokens in the simulator format's layout: header, then (marker, user turn+EOS, marker,
    assistant turn+EOS) x turns, then marker + end-of-conversation target + EOS. User turns and the
    end target are supervised."""
    def toks(n: int) -> list[int]:
        return [rng.randrange(3, vocab) for _ in range(max(1, n))]

    ids, labels = [BOS] + toks(header), [IGNORE] * (header + 1)
    for _ in range(turns):
        u = toks(int(user * rng.uniform(0.5, 1.5))) + [EOS]
        a = toks(int(assistant * rng.uniform(0.5, 1.5))) + [EOS]
        ids += [5, 6] + u + [7, 8] + a
        labels += [IGNORE, IGNORE] + u + [IGNORE, IGNORE] + [IGNORE] * len(a)
    end = toks(4) + [EOS]
    ids += [5, 6] + end
    labels += [IGNORE, IGNORE] + end
    return {"input_ids": ids, "labels": labels}


def per_turn_batches(samples: list[dict], max_tokens: int, seed: int) -> list[list[int]]:
    """Random-order padded batches (TRL's default) of at most max_tokens padded tokens."""
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    batches, cur, longest = [], [], 0
    for i in order:
        n = len(samples[i]["input_ids"])
        if cur and max(longest, n) * (len(cur) + 1) > max_tokens:
            batches.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        batches.append(cur)
    return batches


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny model on CPU (checks the whole path in seconds)")
    p.add_argument("--conversations", type=int, default=256)
    p.add_argument("--turns", type=int, default=8, help="user turns per conversation")
    p.add_argument("--header", type=int, default=64, help="condition header tokens")
    p.add_argument("--user-len", type=int, default=48, help="mean user-turn tokens")
    p.add_argument("--assistant-len", type=int, default=192, help="mean assistant-turn tokens (ShareGPT-like: long)")
    p.add_argument("--max-tokens", type=int, default=16384, help="tokens per step (packed row / padded batch)")
    p.add_argument("--steps", type=int, default=8, help="timed steps per contender per block")
    p.add_argument("--blocks", type=int, default=3, help="alternating blocks (A, B, A, B, ...)")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--attn", default="sdpa", help="attn_implementation (sdpa | flash_attention_2 if installed)")
    p.add_argument("--packed-attention", default="per_record", choices=["per_record", "row_mask"],
                   help="with --attn sdpa: attention once per record of a packed row (as training runs) or "
                        "over the whole row with a block-diagonal mask")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results-dir", default=None)
    args = p.parse_args(argv)
    if args.tiny:
        args.conversations, args.turns, args.header = min(args.conversations, 8), min(args.turns, 4), 8
        args.user_len, args.assistant_len, args.max_tokens = 8, 32, 512
        args.steps, args.blocks = min(args.steps, 2), min(args.blocks, 2)
    torch.manual_seed(args.seed)
    cuda = torch.cuda.is_available() and not args.tiny
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    peak = matmul_peak(n=8192 if cuda else 512, repeats=20 if cuda else 5, dtype="bfloat16" if cuda else "float32",
                       device=str(device))
    print(f"[gpu_train] matmul peak on {device}: {peak['gflops_best']:.1f} GFLOP/s ({peak['dtype']}, n={peak['n']})")

    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    from usersim.train.batching import collate, plan_batches
    from usersim.train.loss import supervised_only_loss
    from usersim.train.record_attention import use_record_attention

    config = model_config(args.tiny)
    config._attn_implementation = args.attn
    with torch.device(device):
        base = LlamaForCausalLM(config).to(dtype)
    model = get_peft_model(base, LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0,
                                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                            "up_proj", "down_proj"], task_type="CAUSAL_LM"))
    if args.packed_attention == "per_record":
        use_record_attention(model)  # padded per-turn batches still go through plain SDPA
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    model.train()
    n_params, d, vocab = non_embedding_params(model), config.hidden_size, config.vocab_size
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-4)

    rng = random.Random(args.seed)
    convs = [synthetic_conversation(rng, vocab, args.turns, args.header, args.user_len, args.assistant_len)
             for _ in range(args.conversations)]
    samples = [{"input_ids": s["input_ids"], "labels": completion_labels(s)}
               for c in convs for s in per_turn_samples(c["input_ids"], c["labels"])]
    packed = plan_batches(convs, args.max_tokens, args.seed, packing=True)
    padded = per_turn_batches(samples, args.max_tokens, args.seed)
    plans = {"conversation": (convs, packed, True), "per_turn": (samples, padded, False)}
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def step(kind: str, idx: list[int]) -> dict:
        examples, _, packing = plans[kind]
        batch = {k: v.to(device) for k, v in collate([examples[i] for i in idx], packing, PAD).items()}
        real = int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
        slots = batch["input_ids"].numel()
        sup = int((batch["labels"][:, 1:] != IGNORE).sum())
        sync()
        t0 = time.perf_counter()
        if kind == "conversation":
            total, count = supervised_only_loss(model, **batch)
            loss = total / count.clamp(min=1)
            logit_positions = sup
        else:
            loss = model(**batch).loss
            logit_positions = slots
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        dt = time.perf_counter() - t0
        return {"seconds": dt, "real": real, "slots": slots, "supervised": sup,
                "flops": lora_train_flops(n_params, slots, logit_positions, d, vocab), "loss": float(loss.detach())}

    for kind in plans:  # warm-up (kernels, allocator)
        step(kind, plans[kind][1][0])
    runs: dict[str, list[dict]] = {k: [] for k in plans}
    mem: dict[str, int] = {}
    cursor = {k: 0 for k in plans}
    for b in range(args.blocks):
        for kind, (_, batches, _) in plans.items():
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            for _ in range(args.steps):
                runs[kind].append(step(kind, batches[cursor[kind] % len(batches)]))
                cursor[kind] += 1
            if cuda:
                mem[kind] = max(mem.get(kind, 0), torch.cuda.max_memory_allocated())
    rows = []
    for kind, rs in runs.items():
        sec = sum(r["seconds"] for r in rs)
        rows.append({
            "contender": kind, "steps": len(rs), "tokens_per_s": sum(r["real"] for r in rs) / sec,
            "supervised_tokens_per_s": sum(r["supervised"] for r in rs) / sec,
            "non_pad_share": sum(r["real"] for r in rs) / sum(r["slots"] for r in rs),
            "median_step_s": statistics.median(r["seconds"] for r in rs),
            "achieved_tflops": sum(r["flops"] for r in rs) / sec / 1e12,
            "mfu": sum(r["flops"] for r in rs) / sec / 1e9 / peak["gflops_best"],
            "peak_mem_gib": mem.get(kind, 0) / 2**30,
        })
    speedup = rows[0]["supervised_tokens_per_s"] / rows[1]["supervised_tokens_per_s"]
    for r in rows:
        r["epoch_speedup_vs_per_turn"] = r["supervised_tokens_per_s"] / rows[1]["supervised_tokens_per_s"]
    table = format_table(rows, ["contender", "steps", "tokens_per_s", "supervised_tokens_per_s", "non_pad_share",
                                "median_step_s", "achieved_tflops", "mfu", "peak_mem_gib", "epoch_speedup_vs_per_turn"])
    print(table)
    out = write_result("gpu_train_tiny" if args.tiny else "gpu_train",
                       {"machine": machine_info(), "device": str(device), "dtype": str(dtype), "args": vars(args),
                        "model": {"non_embedding_params": n_params, "hidden": d, "vocab": vocab,
                                  "layers": config.num_hidden_layers},
                        "matmul_peak": peak, "per_turn_samples": len(samples), "conversations": len(convs),
                        "rows": rows, "epoch_speedup": speedup, "runs": runs, "table": table}, args.results_dir)
    print(f"[gpu_train] wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
