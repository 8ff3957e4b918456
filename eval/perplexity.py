"""Held-out perplexity of real *user* turns under the simulator (or the untuned base).

The scored tokens are exactly the supervised tokens of training: every user turn's text + EOS,
and the final ``[END OF CONVERSATION]`` + EOS when the user chose to stop. Assistant turns,
markers and the condition header are context only.

Context: each target is scored with the context that the one length policy
(:func:`usersim.data_prep.prompt_format.tokenize_conversation`, shared with training and the runtime) gives
it in ``max_seq_len`` tokens: the condition header, then the newest whole turns that fit together
with the target. A record that fits is one window (its training tokenisation). In a longer record,
consecutive targets that keep the same turns share a window, so past the first window a long record
costs up to one ``max_seq_len`` window per target. (Before issue 12 a window carried at most half
of ``max_seq_len`` of earlier turns as context: a second policy, now gone.) A target too long to
fit after the header alone is cut at ``max_seq_len``; its cut tokens are not scored and are counted
in ``n_tokens_dropped``. ``max_seq_len`` <= 0: no cap.

``perplexity_with_ci`` aggregates rows: perplexity = exp(sum nll / sum tokens), with a 95% CI from
resampling *users* (usersim.eval.bootstrap).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from usersim.data_prep.prompt_format import IGNORE_INDEX, Condition, tokenize_conversation
from usersim.data_prep.schema import USER, Turn
from usersim.eval.bootstrap import bootstrap_by_user


@dataclass
class Window:
    record: int  # index of the record this window scores
    ids: list[int]
    labels: list[int]  # IGNORE_INDEX except at the tokens this window scores


class _SegmentMemo:
    """A tokenizer that remembers each text's ids: prompt_format tokenises every segment on its own,
    so re-rendering a record's prefixes (one per target) re-uses the ids of its turns exactly."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.eos_token_id, self.bos_token_id = tokenizer.eos_token_id, getattr(tokenizer, "bos_token_id", None)
        self.ids: dict[str, list[int]] = {}

    def __call__(self, texts: list[str], add_special_tokens: bool = False) -> dict[str, list[list[int]]]:
        new = [t for t in dict.fromkeys(texts) if t not in self.ids]
        if new:
            self.ids.update(zip(new, self.tokenizer(new, add_special_tokens=add_special_tokens)["input_ids"]))
        return {"input_ids": [self.ids[t] for t in texts]}


def record_windows(record: Mapping[str, Any], tokenizer: Any,
                   max_seq_len: int) -> tuple[list[tuple[list[int], list[int]]], int]:
    """(ids, labels) windows that score every target of one record, and the count of cut target tokens.

    Target k's window is ``tokenize_conversation`` of the turns up to k (``last_target_only``);
    consecutive targets that keep the same turns share one window (the earlier one is a prefix).
    """
    condition = Condition.from_row(record.get("condition"))
    turns = [Turn(t["role"], t["text"]) for t in record["turns"]]
    end = bool(record.get("end_of_conversation"))
    whole = tokenize_conversation(condition, turns, tokenizer, max_tokens=max_seq_len, end_of_conversation=end)
    if whole.turns_dropped == 0 and whole.tokens_cut == 0:
        return [(whole.input_ids, whole.labels)], 0
    targets = [(k + 1, False) for k, t in enumerate(turns) if t.role == USER] + ([(len(turns), True)] if end else [])
    tokenizer = _SegmentMemo(tokenizer)
    windows: list[tuple[list[int], list[int]]] = []
    cut, previous = 0, None
    for n_turns, is_end in targets:
        seq = tokenize_conversation(condition, turns[:n_turns], tokenizer, max_tokens=max_seq_len,
                                    end_of_conversation=is_end, last_target_only=True)
        cut += seq.supervised_cut
        if (previous is not None and seq.turns_dropped == previous.turns_dropped
                and not seq.tokens_cut and not previous.tokens_cut):
            labels = windows[-1][1]
            windows[-1] = (seq.input_ids, labels + seq.labels[len(labels):])
        else:
            windows.append((seq.input_ids, seq.labels))
        previous = seq
    return windows, cut


def _accepts_logits_to_keep(model: Any) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


@torch.inference_mode()
def window_nll(model: Any, windows: Sequence[Window], pad_id: int) -> list[tuple[float, int]]:
    """(summed NLL, scored token count) of each window, in one right-padded forward pass."""
    width = max(len(w.ids) for w in windows)
    device = next(model.parameters()).device
    ids = torch.full((len(windows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(windows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(windows), width), dtype=torch.long)
    for i, w in enumerate(windows):
        ids[i, :len(w.ids)] = torch.tensor(w.ids)
        labels[i, :len(w.labels)] = torch.tensor(w.labels)
        mask[i, :len(w.ids)] = 1
    keep = torch.zeros_like(mask, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX  # position t predicts token t+1
    targets = labels[:, 1:][keep[:, :-1]]
    row_of = torch.arange(len(windows)).unsqueeze(1).expand_as(keep)[keep]
    if _accepts_logits_to_keep(model):  # only the scored positions go through the LM head
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                       logits_to_keep=keep.to(device)).logits
    else:
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[keep.to(device)]
    nll = F.cross_entropy(logits.float(), targets.to(device), reduction="none").cpu().double()
    sums = torch.zeros(len(windows), dtype=torch.double).index_add_(0, row_of, nll)
    counts = torch.bincount(row_of, minlength=len(windows))
    return [(float(s), int(c)) for s, c in zip(sums, counts)]


def user_turn_nll(sim: Any, records: Iterable[Mapping[str, Any]], *, use_adapter: bool = True, batch_size: int = 8,
                  max_seq_len: int = 1024, max_windows: int = 0, show_progress: bool = True) -> list[dict[str, Any]]:
    """Per record: ``{user_id, conversation_id, nll_sum, n_tokens, n_windows, n_tokens_dropped}``.

    ``sim`` is a ``usersim.simulator.UserSimulator``; ``records`` are conversation records (the
    ``test`` split). ``use_adapter=False`` scores the untuned base with the same loaded model.
    ``max_windows`` > 0 scores only each record's first windows (the opening of every conversation:
    more conversations for the same compute); the user-turn tokens after them are not scored.
    """
    records = list(records)
    windows: list[Window] = []
    rows = []
    for r, record in enumerate(records):
        parts, dropped = record_windows(record, sim.tokenizer, max_seq_len)
        if max_windows > 0:
            parts = parts[:max_windows]
        windows += [Window(r, ids, labels) for ids, labels in parts]
        rows.append({"user_id": record["user_id"], "conversation_id": record["id"], "nll_sum": 0.0, "n_tokens": 0,
                     "n_windows": len(parts), "n_tokens_dropped": dropped})
    order = sorted(range(len(windows)), key=lambda i: (-len(windows[i].ids), i))
    batches = [[windows[i] for i in order[s:s + batch_size]] for s in range(0, len(order), batch_size)]
    context = contextlib.nullcontext() if use_adapter else sim.adapter_disabled()
    with context:
        for batch in tqdm(batches, desc="perplexity" if use_adapter else "perplexity (base)", unit="batch",
                          disable=not show_progress):
            for w, (nll, n) in zip(batch, window_nll(sim.model, batch, sim.tokenizer.pad_token_id)):
                rows[w.record]["nll_sum"] += nll
                rows[w.record]["n_tokens"] += n
    dropped = sum(r["n_tokens_dropped"] for r in rows)
    if dropped:
        warnings.warn(f"{dropped} user-turn tokens did not fit max_seq_len={max_seq_len} and were not scored "
                      "(see n_tokens_dropped); raise max_seq_len to score them", stacklevel=2)
    return rows


def perplexity_with_ci(rows: Sequence[Mapping[str, Any]], n_boot: int = 1000, seed: int = 0,
                       confidence: float = 0.95) -> dict[str, float | int]:
    """exp(sum nll / sum tokens) over rows, with a bootstrap-by-user percentile CI."""
    nll = np.array([float(r["nll_sum"]) for r in rows])
    tokens = np.array([int(r["n_tokens"]) for r in rows])
    users = [str(r["user_id"]) for r in rows]

    def ppl(ix: np.ndarray) -> float:
        n = tokens[ix].sum()
        return math.exp(nll[ix].sum() / n) if n else float("nan")

    value, low, high = bootstrap_by_user(users, ppl, n_boot=n_boot, seed=seed, confidence=confidence)
    return {"perplexity": value, "ci_low": low, "ci_high": high, "n_tokens": int(tokens.sum()),
            "n_users": len(set(users)), "n_conversations": len(rows)}
