"""Held-out perplexity of real *user* turns under the simulator (or the untuned base).

The scored tokens are exactly the supervised tokens of training: ``render_simulator_prompt`` +
``tokenize_segments`` of a conversation record (every user turn's text + EOS, and the final
``[END OF CONVERSATION]`` + EOS when the user chose to stop). Assistant turns, markers and the
condition header are context only.

Long records: a record longer than ``max_seq_len`` tokens is scored in windows that always start
with the condition header and hold whole turns. Each window scores the next unscored turns and
carries up to half of ``max_seq_len`` of the preceding turns as context (the runtime also drops
the oldest turns first). A single turn that does not fit even alone is cut at ``max_seq_len``; its
cut tokens are not scored and are counted in ``n_tokens_dropped``.

``perplexity_with_ci`` aggregates rows: perplexity = exp(sum nll / sum tokens), with a 95% CI from
resampling *users* (eval.bootstrap).
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

from data_prep.prompt_format import Condition, Segment, render_simulator_prompt, tokenize_segments
from data_prep.schema import Turn
from eval.bootstrap import bootstrap_by_user


Unit = tuple[list[int], list[int]]  # (token ids, labels) of one header / turn / end marker


@dataclass
class Window:
    record: int  # index of the record this window scores
    ids: list[int]
    labels: list[int]  # -100 except at the tokens this window scores


def record_units(record: Mapping[str, Any], tokenizer: Any) -> list[Unit]:
    """(ids, labels) per unit: [header (BOS + condition), turn 1, ..., turn n, end marker (if any)].

    Every segment is tokenised on its own by ``tokenize_segments``, so the units concatenate to
    exactly the training tokenisation of the record.
    """
    segments = render_simulator_prompt(Condition.from_row(record.get("condition")),
                                       [Turn(t["role"], t["text"]) for t in record["turns"]],
                                       end_of_conversation=bool(record.get("end_of_conversation")))
    groups: list[list[Segment]] = [segments[:1]] + [segments[i:i + 2] for i in range(1, len(segments), 2)]
    return [tokenize_segments(g, tokenizer, add_bos=(j == 0)) for j, g in enumerate(groups)]


def record_windows(units: Sequence[Unit], max_seq_len: int) -> tuple[list[Unit], int]:
    """Split one record's units into windows of at most ``max_seq_len`` tokens; also the dropped count."""
    header_ids, header_labels = units[0]
    body = list(units[1:])
    lengths = [len(ids) for ids, _ in body]
    if len(header_ids) + sum(lengths) <= max_seq_len:
        ids = header_ids + [t for u, _ in body for t in u]
        labels = header_labels + [t for _, lab in body for t in lab]
        return [(ids, labels)], 0
    windows, dropped, scored_to = [], 0, 0
    while scored_to < len(body):
        if not any(t != -100 for t in body[scored_to][1]):  # context-only unit: nothing to score on its own
            scored_to += 1
            continue
        start = scored_to  # left context: earlier whole turns, up to half the window
        while start > 0 and len(header_ids) + sum(lengths[start - 1:scored_to]) <= max_seq_len // 2:
            start -= 1
        end = scored_to + 1
        while end < len(body) and len(header_ids) + sum(lengths[start:end + 1]) <= max_seq_len:
            end += 1
        ids = list(header_ids) + [t for u, _ in body[start:end] for t in u]
        labels = [-100] * (len(header_ids) + sum(lengths[start:scored_to]))
        labels += [t for _, lab in body[scored_to:end] for t in lab]
        if len(ids) > max_seq_len:  # one turn longer than the window: score what fits
            dropped += sum(t != -100 for t in labels[max_seq_len:])
            ids, labels = ids[:max_seq_len], labels[:max_seq_len]
        windows.append((ids, labels))
        scored_to = end
    return windows, dropped


def _accepts_logits_to_keep(model: Any) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


@torch.inference_mode()
def window_nll(model: Any, windows: Sequence[Window], pad_id: int) -> list[tuple[float, int]]:
    """(summed NLL, scored token count) of each window, in one right-padded forward pass."""
    width = max(len(w.ids) for w in windows)
    device = next(model.parameters()).device
    ids = torch.full((len(windows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(windows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(windows), width), dtype=torch.long)
    for i, w in enumerate(windows):
        ids[i, :len(w.ids)] = torch.tensor(w.ids)
        labels[i, :len(w.labels)] = torch.tensor(w.labels)
        mask[i, :len(w.ids)] = 1
    keep = torch.zeros_like(mask, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != -100  # position t predicts token t+1
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
        parts, dropped = record_windows(record_units(record, sim.tokenizer), max_seq_len)
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
