"""Simulated user turns for held-out per-turn items (the model-facing half of eval).

``generate_turns`` writes, for every item (condition, history), ``num_samples`` candidate next
user turns with the trained simulator or (``use_adapter=False``) the untuned base, batched.

Determinism: sample ``k`` of an item is drawn with its own generator seeded by
``derive_seed(seed, item_id, k)`` (see ``usersim.simulator``: every row samples independently).
Rows are sorted by prompt length (longest first, ties by position) to reduce padding and the
results are put back in item order. So the output depends on the seed, the item ids and the
model, not on batch size or item order (up to floating-point effects of padding, which can flip a
rare draw that lands on a probability boundary). Swapping ``conditions`` keeps the same random
streams per item (common random numbers for the controllability comparison).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import torch
from tqdm.auto import tqdm

from usersim.data_prep.prompt_format import Condition
from usersim.engine import end_chance, length_order
from usersim.simulator import SimulatorTurn, UserSimulator, derive_seed


@dataclass
class SystemTurns:
    """One system's next user turn for every eval item, aligned with the items.

    ``texts[i]`` is None where the turn ended the conversation; ``capped[i]`` marks a turn its
    generation cap cut before the comparison budget (eval leaves it out of every comparison);
    ``cut[i]`` marks a turn compared on its first ``budget`` tokens (see :meth:`at_budget`); an
    empty text is a failed turn.
    """

    texts: list[str | None]
    ends: list[bool]
    capped: list[bool]
    cut: list[bool] = field(default_factory=list)
    # log P(end marker) of the explicit end decision per item (None where the system made none)
    end_logprobs: list[float | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.cut:
            self.cut = [False] * len(self.texts)
        if not self.end_logprobs:
            self.end_logprobs = [None] * len(self.texts)

    @classmethod
    def from_turns(cls, turns: Sequence[SimulatorTurn]) -> "SystemTurns":
        return cls([None if t.ends_conversation else t.text for t in turns], [bool(t.ends_conversation) for t in turns],
                   [bool(t.hit_cap) for t in turns], end_logprobs=[getattr(t, "end_logprob", None) for t in turns])

    @classmethod
    def human(cls, items: Sequence[Mapping[str, Any]]) -> "SystemTurns":
        """The real next turns of the items (None for an end-of-conversation target)."""
        return cls([None if it["target_is_end"] else it["target"] for it in items],
                   [bool(it["target_is_end"]) for it in items], [False] * len(items))

    def at_budget(self, tokenizer: Any, budget: int, *, capped_at_budget: bool) -> "SystemTurns":
        """The turns as every comparison sees them: each cut to its first ``budget`` tokens of ``tokenizer``.

        Real and simulated turns go through the same cut, so a turn stopped by the generation cap is
        no tell: a long human turn is cut at the same place. ``capped_at_budget``: this system
        generated with ``tokenizer`` and a cap of exactly ``budget`` new tokens, so a capped turn is
        already cut there. A capped turn that falls short of the budget (a system with another
        tokenizer or a smaller cap) stays ``capped`` and is left out.
        """
        texts: list[str | None] = []
        capped: list[bool] = []
        cut: list[bool] = []
        for text, cap in zip(self.texts, self.capped):
            ids = [] if text is None else tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) > budget:
                texts.append(tokenizer.decode(ids[:budget], skip_special_tokens=True).strip())
                capped.append(False)
                cut.append(True)
            else:
                texts.append(text)
                capped.append(cap and not capped_at_budget)
                cut.append(cap and capped_at_budget)
        return SystemTurns(texts, list(self.ends), capped, cut, list(self.end_logprobs))

    def end_chances(self, end_bias: float | None) -> list[float | None]:
        """Per item, the chance that the explicit end decision (usersim.engine.EndControl) with ``end_bias`` ended
        there: sigmoid(logit p + end_bias) of the stored end probability p; None where the system made no such
        decision (no end_bias, or no end probability)."""
        if end_bias is None or any(lp is None for lp in self.end_logprobs):
            return [None] * len(self.texts)
        return end_chance(torch.tensor(self.end_logprobs, dtype=torch.float64), float(end_bias)).tolist()

    def compared(self) -> list[str | None]:
        """Texts as the statistics see them: capped and empty turns left out (None)."""
        return [None if t is None or cap or not t.strip() else t for t, cap in zip(self.texts, self.capped)]

    @property
    def n_capped(self) -> int:
        return sum(self.capped)

    @property
    def n_cut(self) -> int:
        return sum(self.cut)

    @property
    def n_empty(self) -> int:
        return sum(t is not None and not t.strip() for t in self.texts)


def item_condition(item: Mapping[str, Any], override: Condition | Mapping[str, Any] | None = None) -> Condition:
    """The condition to simulate an item under: the override if given, else the item's own."""
    chosen = override if override is not None else item.get("condition")
    return chosen if isinstance(chosen, Condition) else Condition.from_row(chosen)


def generate_turns(sim: UserSimulator, items: Iterable[Mapping[str, Any]], *, use_adapter: bool = True, seed: int,
                   batch_size: int = 16, max_new_tokens: int = 48, num_samples: int = 1,
                   conditions: Sequence[Condition | Mapping[str, Any] | None] | None = None,
                   temperatures: Sequence[float] | None = None, show_progress: bool = True,
                   prompt_ids: Sequence[Sequence[int]] | None = None, **generation: Any) -> list[list[SimulatorTurn]]:
    """``num_samples`` simulated next user turns per item: ``out[i][k]`` is sample k of item i.

    ``items`` are per-turn item dicts (docs/contracts.md: ``id``, ``condition``, ``history``, ...);
    ``conditions`` optionally replaces each item's condition (same length as items);
    ``temperatures`` optionally gives sample k its own temperature (one per sample; the samples of
    an item share one prompt, which the runtime prefills once); ``prompt_ids`` optionally gives each
    item's prompt token ids, built by the caller once for several calls (instead of ``conditions``). Extra
    ``generation`` keys go to ``UserSimulator.generate_from_prompt_ids`` (e.g. ``do_sample=False``).
    """
    items = list(items)
    if conditions is not None and len(conditions) != len(items):
        raise ValueError(f"{len(items)} items but {len(conditions)} conditions")
    if num_samples < 1 or batch_size < 1:
        raise ValueError("num_samples and batch_size must be >= 1")
    if temperatures is not None and len(temperatures) != num_samples:
        raise ValueError(f"{num_samples} samples but {len(temperatures)} temperatures")
    if prompt_ids is not None:
        if conditions is not None or len(prompt_ids) != len(items):
            raise ValueError(f"prompt_ids: one per item ({len(items)}), and not together with conditions")
        prompts = [list(p) for p in prompt_ids]
    else:
        prompts = [sim.prompt_ids(item["history"], item_condition(item, conditions[i] if conditions else None))
                   for i, item in enumerate(items)]
    rows = [(i, k) for i in range(len(items)) for k in range(num_samples)]
    order = length_order([len(prompts[i]) for i, _ in rows])
    out: list[list[SimulatorTurn | None]] = [[None] * num_samples for _ in items]
    context = contextlib.nullcontext() if use_adapter else sim.adapter_disabled()
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    with context:
        for batch in tqdm(batches, desc="simulate" if use_adapter else "simulate (base)", disable=not show_progress,
                          unit="batch"):
            picked = [rows[j] for j in batch]
            seeds = [derive_seed(seed, items[i].get("id", i), k) for i, k in picked]
            if temperatures is not None:
                generation["temperature"] = [float(temperatures[k]) for _, k in picked]
            turns = sim.generate_from_prompt_ids([prompts[i] for i, _ in picked], seeds=seeds,
                                                 max_new_tokens=max_new_tokens, **generation)
            for (i, k), turn in zip(picked, turns):
                out[i][k] = turn
    return out  # type: ignore[return-value]
