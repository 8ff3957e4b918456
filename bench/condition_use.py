"""Does the simulator read its condition? Teacher-forced, on held-out users, one field at a time.

    .venv/bin/python -m bench.condition_use --run runs/default/train --data runs/default/data

A simulator that follows a condition gives the real user's turns a higher likelihood under the user's
own condition than under a counterfactual one. Each sampled held-out conversation (``--split``, never the
training split) is cut to the whole turns that fit ``--max_seq_len`` tokens with its own condition, and its
user turns (text + EOS, and the end marker when it is kept: the supervised tokens of training, scored with
``usersim.eval.perplexity.window_nll``) are scored in one window, once with the own condition and once per
counterfactual, so every variant scores the very same tokens (checked) and only the header differs:

- ``style=blank``: no style line at all; ``style=swapped``: the style of another held-out conversation
  (a seeded derangement among conversations whose style differs);
- ``<key>=flip`` for each style key: only that bucket changed, to a fixed far value (e.g. casing
  lower -> proper, proper -> lower);
- ``goal=swapped``, ``knowledge=swapped``, ``persona=swapped``: that field from another conversation
  (only conversations that have the field take part).

Reported per counterfactual: the extra negative log-likelihood per user token it costs, in millinats
(1000 * (sum NLL_counterfactual - sum NLL_own) / sum tokens), with a 95% CI from resampling users. Zero
means the model ignores what was changed; > 0 means it reads it. The same for the untuned base (an
instruction-free LM reading the header as plain text) is the floor the fine-tune has to rise above.
The statistic is a likelihood, so it needs no sampling, no judge and no end decision: it isolates
"was the condition learned" from "does the decoding show it". ``--first_turn_only`` scores only each
conversation's first user turn, where no earlier turn of the user shows their style.

The style line in words instead of ``key=value`` codes was tried with this bench at commit 6c046db (and
reverted): BENCHMARKS.md, "Does the simulator read its condition".

Writes bench/results/condition_use.json (or ``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

FLIPS = {  # one far bucket per style key (usersim.data_prep.style)
    "length": {"short": "long", "medium": "short", "long": "short"},
    "casing": {"lower": "proper", "proper": "lower", "mixed": "proper"},
    "punctuation": {"none": "heavy", "light": "heavy", "heavy": "none"},
    "emoji": {"none": "some", "some": "none"},
    "typos": {"none": "many", "some": "none", "many": "none"},
}


def derangement(n: int, rng: random.Random, ok: Callable[[int, int], bool]) -> list[int | None]:
    """For each i a partner j != i with ok(i, j) (None if none is found in 50 draws); seeded."""
    out: list[int | None] = []
    for i in range(n):
        partner = None
        for _ in range(50):
            j = rng.randrange(n)
            if j != i and ok(i, j):
                partner = j
                break
        out.append(partner)
    return out


def counterfactuals(conditions: Sequence[Any], seed: int) -> dict[str, list[Any]]:
    """name -> per conversation the counterfactual Condition (None where it does not apply)."""
    rng = random.Random(seed)
    n = len(conditions)
    out: dict[str, list[Any]] = {}
    out["style=blank"] = [replace(c, style={}) if c.style else None for c in conditions]
    partner = derangement(n, rng, lambda i, j: bool(conditions[j].style) and conditions[j].style != conditions[i].style)
    out["style=swapped"] = [replace(c, style=dict(conditions[j].style)) if c.style and j is not None else None
                            for c, j in zip(conditions, partner)]
    for key, flip in FLIPS.items():
        out[f"{key}=flip"] = [replace(c, style={**c.style, key: flip[c.style[key]]}) if c.style.get(key) in flip
                              else None for c in conditions]
    for name, has, put in (
        ("goal", lambda c: bool(c.goal), lambda c, d: replace(c, goal=d.goal)),
        ("persona", lambda c: bool(c.persona), lambda c, d: replace(c, persona=d.persona)),
        ("knowledge", lambda c: bool(c.knowledge_discloses or c.knowledge_asks),
         lambda c, d: replace(c, knowledge_discloses=list(d.knowledge_discloses), knowledge_asks=list(d.knowledge_asks))),
    ):
        partner = derangement(n, rng, lambda i, j, has=has: has(conditions[i]) and has(conditions[j]))
        out[f"{name}=swapped"] = [put(c, conditions[j]) if has(c) and j is not None else None
                                  for c, j in zip(conditions, partner)]
    return out


def first_span(labels: Sequence[int]) -> list[int]:
    """Labels with only the first run of supervised tokens kept (the conversation's first user turn)."""
    from usersim.data_prep.prompt_format import IGNORE_INDEX

    out, started, ended = [], False, False
    for lab in labels:
        keep = lab != IGNORE_INDEX and not ended
        started |= keep
        ended |= started and lab == IGNORE_INDEX
        out.append(lab if keep else IGNORE_INDEX)
    return out


def opening(record: Mapping[str, Any], condition: Any, tokenizer: Any, budget: int) -> dict[str, Any]:
    """The record cut to its longest prefix of whole turns that fits ``budget`` tokens with ``condition``.

    Every counterfactual of a conversation then scores the same target tokens in one uncapped window
    (a capped window would drop other turns for a longer header, and score other tokens).
    """
    from usersim.data_prep.prompt_format import tokenize_conversation
    from usersim.data_prep.schema import Turn

    turns = [Turn(t["role"], t["text"]) for t in record["turns"]]
    end = bool(record.get("end_of_conversation"))
    n = len(turns)
    while n > 1 and len(tokenize_conversation(condition, turns[:n], tokenizer,
                                              end_of_conversation=end and n == len(turns)).input_ids) > budget:
        n -= 1
    row = dict(record)
    row["turns"] = list(record["turns"])[:n]
    row["end_of_conversation"] = end and n == len(turns)
    return row


def score(sim: Any, records: Sequence[Mapping[str, Any]], conditions: Sequence[Any], *, batch_size: int,
          first_turn_only: bool = False) -> list[tuple[float, int]]:
    """(summed NLL, tokens) of each record's user turns under the given conditions, one window each."""
    from usersim.data_prep.prompt_format import IGNORE_INDEX
    from usersim.eval.perplexity import Window, record_windows, window_nll

    windows: list[Window] = []
    for r, (record, condition) in enumerate(zip(records, conditions)):
        row = dict(record)
        row["condition"] = condition.to_row()
        (ids, labels), = record_windows(row, sim.tokenizer, 0)[0]
        if first_turn_only:  # a causal LM scores the first turn the same without the turns after it
            labels = first_span(labels)
            stop = max(i for i, lab in enumerate(labels) if lab != IGNORE_INDEX) + 1
            ids, labels = ids[:stop], labels[:stop]
        windows.append(Window(r, ids, labels))
    out = [[0.0, 0] for _ in records]
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].ids))
    for s in range(0, len(order), batch_size):
        batch = [windows[i] for i in order[s:s + batch_size]]
        for w, (nll, n) in zip(batch, window_nll(sim.model, batch, sim.tokenizer.pad_token_id)):
            out[w.record][0] += nll
            out[w.record][1] += n
    return [(a, b) for a, b in out]


def cost_with_ci(own: Sequence[tuple[float, int]], other: Sequence[tuple[float, int] | None], users: Sequence[str],
                 n_boot: int, seed: int) -> dict[str, Any]:
    """Millinats per user token that the counterfactual costs, over the records where it applies."""
    from usersim.eval.bootstrap import bootstrap_by_user

    keep = [i for i, o in enumerate(other) if o is not None]
    if not keep:
        return {"millinats_per_token": None, "n_conversations": 0}
    diff = np.asarray([other[i][0] - own[i][0] for i in keep])
    tokens = np.asarray([own[i][1] for i in keep], dtype=float)
    u = [users[i] for i in keep]

    def stat(ix: np.ndarray) -> float:
        return 1000.0 * diff[ix].sum() / tokens[ix].sum()

    value, low, high = bootstrap_by_user(u, stat, n_boot=n_boot, seed=seed)
    return {"millinats_per_token": round(value, 2), "ci": [round(low, 2), round(high, 2)],
            "n_conversations": len(keep), "n_users": len(set(u)), "n_tokens": int(tokens.sum())}


def main(argv: list[str] | None = None) -> int:
    from datasets import load_from_disk

    from usersim.data_prep.prompt_format import Condition
    from usersim.simulator import UserSimulator

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", default=[],
                   help="a train run dir (repeatable); the first one's base is also scored untuned")
    p.add_argument("--data", default="runs/default/data")
    p.add_argument("--split", default="test", choices=["validation", "test"])
    p.add_argument("--conversations", type=int, default=120, help="seeded sample of the split's conversations")
    p.add_argument("--max_seq_len", type=int, default=448,
                   help="each conversation is cut to the whole turns that fit this many tokens with its own condition")
    p.add_argument("--first_turn_only", action="store_true",
                   help="score only each conversation's first user turn (no earlier turn of the user shows the style)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n_boot", type=int, default=1000)
    p.add_argument("--no-base", dest="base", action="store_false", help="skip the untuned base")
    p.add_argument("--out", default="bench/results/condition_use.json")
    args = p.parse_args(argv)
    runs = args.run or ["runs/default/train"]

    ds = load_from_disk(str(Path(args.data) / "dataset"))[args.split]
    pick = sorted(random.Random(args.seed).sample(range(len(ds)), min(args.conversations, len(ds))))
    records = [ds[i] for i in pick]
    users = [str(r["user_id"]) for r in records]
    conditions = [Condition.from_row(r["condition"]) for r in records]
    variants = counterfactuals(conditions, args.seed)

    result: dict[str, Any] = {"split": args.split, "conversations": len(records), "users": len(set(users)),
                              "max_seq_len": args.max_seq_len,
                              "first_turn_only": args.first_turn_only, "seed": args.seed, "models": {}}
    models: list[tuple[str, str, bool]] = [(run, run, True) for run in runs]
    if args.base:
        models.insert(0, ("base (untuned)", runs[0], False))
    for label, run, adapter in models:
        t0 = time.perf_counter()
        sim = UserSimulator.from_pretrained(run)
        with contextlib.ExitStack() as stack:
            if not adapter:
                stack.enter_context(sim.adapter_disabled())
            cut = [opening(r, c, sim.tokenizer, args.max_seq_len) for r, c in zip(records, conditions)]
            own = score(sim, cut, conditions, batch_size=args.batch_size, first_turn_only=args.first_turn_only)
            row: dict[str, Any] = {"nll_per_token_own": round(sum(a for a, _ in own) / sum(b for _, b in own), 4)}
            for name, conds in variants.items():
                idx = [i for i, c in enumerate(conds) if c is not None]
                scored = score(sim, [cut[i] for i in idx], [conds[i] for i in idx], batch_size=args.batch_size,
                               first_turn_only=args.first_turn_only)
                other: list[tuple[float, int] | None] = [None] * len(records)
                for i, s in zip(idx, scored):
                    if s[1] != own[i][1]:
                        raise AssertionError(f"{name}: conversation {i} scored {s[1]} tokens, its own condition {own[i][1]}")
                    other[i] = s
                row[name] = cost_with_ci(own, other, users, args.n_boot, args.seed)
                print(f"{label:32s} {name:20s} {row[name]}", flush=True)
        row["wall_s"] = round(time.perf_counter() - t0, 1)
        result["models"][label] = row
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
