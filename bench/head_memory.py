"""Measure what the supervised-only LM head saves: one training step, supervised-only vs full logits.

    .venv/bin/python -m bench.head_memory --data_dir runs/default/data --tokens 2048 --repeats 2

Each measurement runs in a fresh process (peak RSS only grows within a process), alternating
supervised-only / full so machine noise hits both alike. A process loads the base model + LoRA,
packs validation records into one row of ``--tokens`` tokens, runs a tiny forward so every weight
is resident, notes its RSS, runs forward +
backward once and reports (peak RSS - RSS before the step) and the step time; on a GPU it reports
torch.cuda.max_memory_allocated instead of RSS. Prints one JSON line per run and a summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def one_step(mode: str, data_dir: str, tokens: int, base_model: str) -> dict:
    import torch

    from usersim.data_prep.prompt_format import IGNORE_INDEX
    from usersim.data_prep.run_info import peak_rss_mb
    from usersim.train.base_model import prepare_base_model
    from usersim.train.batching import collate_packed, pack_rows
    from usersim.train.config import LoraSettings, TrainConfig
    from usersim.train.examples import records_to_examples
    from usersim.train.lora import wrap_with_lora
    from usersim.train.loss import supervised_only_loss
    from usersim.train.main import load_records, resolve_dtype
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = TrainConfig(data_dir=data_dir, base_model=base_model, max_eval_records=400)
    path, tokenizer = prepare_base_model(cfg)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = resolve_dtype("auto", device)
    model = AutoModelForCausalLM.from_pretrained(str(path), use_safetensors=True, dtype=dtype).to(device)
    model = wrap_with_lora(model, LoraSettings())
    _, val = load_records(cfg)
    examples = [e for e in records_to_examples(val, tokenizer, max_seq_len=tokens) if len(e["input_ids"]) <= tokens]
    row = max(pack_rows([len(e["input_ids"]) for e in examples], tokens, seed=0),
              key=lambda r: sum(len(examples[i]["input_ids"]) for i in r))
    batch = {k: v.to(device) for k, v in collate_packed([examples[i] for i in row]).items()}
    n_real = batch["input_ids"].numel()
    n_sup = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    with torch.no_grad():  # fault in every (memory-mapped) weight first, with a tiny input
        model(input_ids=batch["input_ids"][:, :8], use_cache=False)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    rss_before = _current_rss_mb()
    start = time.perf_counter()
    if mode == "supervised":
        loss_sum, n = supervised_only_loss(model, **batch)
        loss = loss_sum / n
    else:
        loss = model(**batch, use_cache=False).loss
    loss.backward()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    out = {"mode": mode, "device": device, "tokens": n_real, "supervised_tokens": n_sup, "loss": float(loss),
           "step_s": seconds}
    if device == "cuda":
        out["extra_mb"] = (torch.cuda.max_memory_allocated() - before) / 2**20
    else:
        out["extra_mb"] = peak_rss_mb() - rss_before
        out["rss_before_mb"] = rss_before
    return out


def _current_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default="runs/default/data")
    parser.add_argument("--base_model", default="gemma3-270m-gguf")
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--one", choices=["supervised", "full"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(one_step(args.one, args.data_dir, args.tokens, args.base_model)), flush=True)
        return 0
    results: dict[str, list[dict]] = {"supervised": [], "full": []}
    for _ in range(args.repeats):
        for mode in ("supervised", "full"):
            proc = subprocess.run([sys.executable, "-m", "bench.head_memory", "--one", mode, "--data_dir", args.data_dir,
                                   "--tokens", str(args.tokens), "--base_model", args.base_model],
                                  capture_output=True, text=True, check=True)
            line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
            res = json.loads(line[len("RESULT "):])
            results[mode].append(res)
            print(json.dumps(res), flush=True)
    sup = statistics.median(r["extra_mb"] for r in results["supervised"])
    full = statistics.median(r["extra_mb"] for r in results["full"])
    print(json.dumps({"median_extra_mb_supervised_only": sup, "median_extra_mb_full_logits": full,
                      "full_over_supervised": full / sup if sup > 0 else float("nan"),
                      "median_step_s_supervised_only": statistics.median(r["step_s"] for r in results["supervised"]),
                      "median_step_s_full_logits": statistics.median(r["step_s"] for r in results["full"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
