"""Which held-out per-turn items a run simulates: a seeded sample drawn conversation by conversation."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence


def select_items(items: Sequence[dict[str, Any]], max_items: int, seed: int, per_conversation: int = 0,
                 exclude_users: set[str] | None = None) -> list[dict[str, Any]]:
    """Seeded sample of held-out items, drawn by conversation, item order kept.

    Conversations are taken in a seeded random order until ``max_items`` items (0 = all); of each
    conversation at most ``per_conversation`` items (0 = all) are kept, chosen at random, so a long
    conversation does not eat the budget and more users are seen. ``exclude_users``: users whose
    items are never picked (the human floor's second group is disjoint from the first).
    """
    rng = random.Random(seed)
    by_conv: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        if exclude_users and str(it["user_id"]) in exclude_users:
            continue
        by_conv.setdefault(it["conversation_id"], []).append(i)
    convs = sorted(by_conv)
    rng.shuffle(convs)
    chosen: list[int] = []
    for c in convs:
        if max_items > 0 and len(chosen) >= max_items:
            break
        idx = by_conv[c]
        if 0 < per_conversation < len(idx):
            idx = rng.sample(idx, per_conversation)
        chosen.extend(idx)
    return [items[i] for i in sorted(chosen)]


REFERENCE_STYLE = "reference_style"  # item key: style buckets of the user's *other* turns in the conversation


def add_reference_styles(items: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]]) -> None:
    """Give each per-turn item the style buckets of its user's other turns in the conversation (in place).

    A conversation's ``style`` condition is computed over all of its user's turns, the item's own target
    included: for a user with one turn it *is* that turn's style, so the real turn matches it by
    construction. The human reference of style mismatch is therefore the real turn against the buckets of
    the user's other turns (leave-one-out: another sample of the same human); ``None`` where the user wrote
    no other turn, and on end items. Items whose conversation is not in ``records`` get ``None``.
    """
    from usersim.data_prep.schema import USER
    from usersim.data_prep.style import buckets_of, turn_style

    needed = {it["conversation_id"] for it in items}
    styles = {r["id"]: [turn_style(t["text"]) for t in r["turns"] if t["role"] == USER]  # each turn once
              for r in records if r["id"] in needed}
    for it in items:
        turns = styles.get(it["conversation_id"])
        k = int(it["turn_index"])
        others = [] if turns is None or it.get("target_is_end") else turns[:k] + turns[k + 1:]
        it[REFERENCE_STYLE] = buckets_of(others) if others else None


def other_users_items(data_dir: str, split: str, eval_split: str, purpose: str) -> list[dict[str, Any]]:
    """The per-turn items of ``split`` (e.g. validation) for a choice made before the eval (``purpose``), never
    the eval's own split: a clear error when it is the eval's split or the data run lacks it."""
    from datasets import load_from_disk

    if split == eval_split:
        raise ValueError(f"{split!r} is the eval's own split: {purpose} must be chosen on other users "
                         "(use validation)")
    ds = load_from_disk(str(Path(data_dir) / "dataset"))
    turns_split = f"{split}_turns"
    if turns_split not in ds:
        raise KeyError(f"{data_dir}/dataset has no split {turns_split!r} to choose {purpose} on; splits: {sorted(ds)}")
    return ds[turns_split].to_list()
