"""Optional second baseline: a prompted instruct model asked to "act like a user".

This is the baseline the project exists to beat (DESIGN.md). The instruct model sees the
simulator's condition in its system prompt and the conversation with roles *flipped* (the real
assistant's turns are its "user" messages, the human's turns its own "assistant" messages), uses
its own chat template, and writes the next user turn. Off unless ``instruct_baseline`` is set.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from data_prep.prompt_format import Condition, is_end_of_conversation, render_condition

OPENING_CUE = "(The conversation has not started yet. Write the user's first message.)"


def instruct_messages(item: Mapping[str, Any], system_prompt: str,
                      condition: Mapping[str, Any] | None = None) -> list[dict[str, str]]:
    """Chat messages for one per-turn item, roles flipped so the model speaks as the user."""
    cond = Condition.from_row(condition if condition is not None else item.get("condition"))
    header = render_condition(cond).replace("[Conversation]", "").strip()
    messages = [{"role": "system", "content": f"{system_prompt}\n\n{header}".strip()}]
    flipped = [{"role": "assistant" if t["role"] == "user" else "user", "content": t["text"]}
               for t in item["history"]]
    if not flipped or flipped[0]["role"] != "user":
        flipped.insert(0, {"role": "user", "content": OPENING_CUE})
    merged: list[dict[str, str]] = []
    for m in flipped:  # chat templates want alternating roles
        if merged and merged[-1]["role"] == m["role"]:
            merged[-1] = {"role": m["role"], "content": merged[-1]["content"] + "\n" + m["content"]}
        else:
            merged.append(dict(m))
    if merged[-1]["role"] == "assistant":  # the user spoke last: cue the next user message
        merged.append({"role": "user", "content": "(continue)"})
    return messages + merged


def generate_instruct_turns(model_path: str, items: Sequence[Mapping[str, Any]], *, system_prompt: str,
                            max_new_tokens: int, batch_size: int, seed: int, do_sample: bool = True,
                            temperature: float = 1.0, top_p: float = 0.95, device: str = "",
                            trust_remote_code: bool = False, show_progress: bool = True) -> list[tuple[str, bool]]:
    """``(text, ends_conversation)`` per item from the instruct model (safetensors weights only)."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tok = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    if tok.chat_template is None:
        raise ValueError(f"instruct_baseline {model_path!r} has no chat template; use an instruct/chat model")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_path, use_safetensors=True,
                                                 trust_remote_code=trust_remote_code).to(device).eval()
    torch.manual_seed(seed)
    out: list[tuple[str, bool]] = []
    for start in tqdm(range(0, len(items), batch_size), desc="simulate (instruct)", disable=not show_progress):
        batch = items[start:start + batch_size]
        prompts = [tok.apply_chat_template(instruct_messages(it, system_prompt), tokenize=False,
                                           add_generation_prompt=True) for it in batch]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.inference_mode():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                 temperature=temperature if do_sample else None, top_p=top_p if do_sample else None,
                                 pad_token_id=tok.pad_token_id)
        for row in gen[:, enc["input_ids"].shape[1]:]:
            text = tok.decode(row, skip_special_tokens=True).strip()
            ends = is_end_of_conversation(text)
            out.append(("" if ends else text, ends))
    return out
