"""The one place tests build a tiny train run directory (importable from any test: ``from tiny_run import ...``).

``build_tiny_run(tmp_dir)`` writes what ``usersim train`` writes (docs/contracts.md), at toy size:

    tmp_dir/base_model/   random-initialised 2-layer Llama (safetensors) + tokenizer
    tmp_dir/run/          adapter_model.safetensors, adapter_config.json, tokenizer files, base_model.json

The LoRA adapter (q_proj, v_proj) is trained for ``train_steps`` AdamW steps on the rendered
records, so it is not the identity. Nothing is downloaded; a build takes a few seconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from usersim.data_prep.prompt_format import Condition, render_simulator_prompt, tokenize_segments
from usersim.data_prep.schema import Turn
from usersim.train.tiny_model import build_tiny_model, train_tiny_tokenizer

TINY_CONDITION = {"persona": "country: US", "goal": "talk about weekend plans",
                  "knowledge_discloses": ["I have two dogs"], "knowledge_asks": ["a good hike nearby"],
                  "style": {"length": "short", "casing": "lower", "punctuation": "", "emoji": "", "typos": ""}}


def tiny_records() -> list[dict[str, Any]]:
    """Three small conversation records in the data contract's row shape (train/test splits)."""
    def record(i: int, user_id: str, turns: list[tuple[str, str]], end: bool) -> dict[str, Any]:
        return {"id": f"conv{i}", "source": "tiny", "user_id": user_id, "group_id": f"g{i}", "other_user_ids": [],
                "turns": [{"role": r, "text": t} for r, t in turns], "condition": dict(TINY_CONDITION),
                "end_of_conversation": end, "metadata": "{}"}

    return [
        record(0, "alice", [("user", "hey there how are you"), ("assistant", "Hi! I am fine, thanks."),
                            ("user", "i have two dogs and they love walks"),
                            ("assistant", "Lovely! Where do you walk them?")], True),
        record(1, "bob", [("user", "any good hike nearby"), ("assistant", "Try the river trail."),
                          ("user", "cool thanks see you")], False),
        record(2, "carol", [("user", "what should i cook tonight"), ("assistant", "Pasta is quick."),
                            ("user", "nice idea i will make pasta"), ("assistant", "Enjoy your dinner!")], True),
    ]


def record_tensors(record: dict[str, Any], tokenizer: Any) -> tuple[list[int], list[int]]:
    """Training ids and labels of one record, exactly as train renders it."""
    segments = render_simulator_prompt(Condition.from_row(record["condition"]),
                                       [Turn(t["role"], t["text"]) for t in record["turns"]],
                                       end_of_conversation=record["end_of_conversation"])
    return tokenize_segments(segments, tokenizer)


def build_tiny_run(tmp_dir: str | Path, records: Sequence[dict[str, Any]] | None = None, train_steps: int = 5,
                   lr: float = 1e-2, seed: int = 0, lora_r: int = 4) -> Path:
    """Write tmp_dir/base_model and tmp_dir/run (a loadable train run directory); return the run dir."""
    from peft import LoraConfig, get_peft_model

    from usersim.train.base_model import write_base_model_json

    torch.manual_seed(seed)
    tmp_dir = Path(tmp_dir)
    records = list(records if records is not None else tiny_records())
    texts = [t["text"] for r in records for t in r["turns"]] + [str(v) for v in TINY_CONDITION.values()]
    tokenizer = train_tiny_tokenizer(texts, vocab_size=400)
    model = build_tiny_model(tokenizer, hidden_size=32, num_heads=2, seed=seed)
    base_dir, run_dir = tmp_dir / "base_model", tmp_dir / "run"
    model.save_pretrained(base_dir, safe_serialization=True)
    tokenizer.save_pretrained(base_dir)

    peft_model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.0,
                                                  target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    if train_steps:
        optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=lr)
        peft_model.train()
        for step in range(train_steps):
            ids, labels = record_tensors(records[step % len(records)], tokenizer)
            loss = peft_model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    peft_model.eval()
    peft_model.save_pretrained(run_dir, safe_serialization=True)
    tokenizer.save_pretrained(run_dir)
    write_base_model_json(run_dir, base_dir, "tiny-random", "")
    return run_dir
