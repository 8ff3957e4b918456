"""Scenarios: who the simulated user is in an RL episode (a :class:`Condition`, an id, who opens).

Two sources:

- held-out records of a data run (``scenarios_from_dataset("runs/default/data", split="test")``):
  each record carries the ``condition`` data_prep extracted for a real user the simulator never
  trained on, so the policy meets users drawn from the same population as the eval;
- scenarios written by hand (``scenarios_from_dicts([...])`` or a JSONL/YAML file through
  ``load_scenarios_file``): dicts with the condition fields, or :class:`Condition` objects.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from usersim.data_prep.prompt_format import Condition
from usersim.simulator import make_condition

OPENERS = ("user", "assistant")


@dataclass
class Scenario:
    """One simulated user: the condition the simulator is given, an id, and who speaks first.

    ``opener``: ``"user"`` (the simulated user writes the first message, as in most chat logs) or
    ``"assistant"`` (the policy greets an empty history first).
    """

    id: str
    condition: Condition = field(default_factory=Condition)
    opener: str = "user"

    def __post_init__(self) -> None:
        if self.opener not in OPENERS:
            raise ValueError(f"scenario {self.id!r}: opener must be one of {OPENERS}, got {self.opener!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "opener": self.opener, "condition": self.condition.to_row()}


def scenario_from_dict(item: Mapping[str, Any] | Condition, index: int = 0, opener: str = "user") -> Scenario:
    """A scenario from a hand-written dict (or a bare :class:`Condition`).

    Accepted keys: ``id``, ``opener``, and the condition either nested under ``condition`` (the data
    run's row shape) or flat: ``persona``, ``goal``, ``knowledge_discloses``, ``knowledge_asks``,
    ``knowledge`` (``{"discloses": [...], "asks": [...]}``), ``style``. Unknown keys are an error.
    """
    if isinstance(item, Condition):
        return Scenario(id=f"scenario-{index}", condition=item, opener=opener)
    if not isinstance(item, Mapping):
        raise TypeError(f"scenario {index}: expected a dict or a Condition, got {type(item).__name__}")
    item = dict(item)
    scenario_id = str(item.pop("id", f"scenario-{index}"))
    opener = str(item.pop("opener", opener))
    if "condition" in item:
        nested = item.pop("condition")
        if item:
            raise ValueError(f"scenario {scenario_id!r}: keys {sorted(item)} next to 'condition' are not understood")
        condition = nested if isinstance(nested, Condition) else Condition.from_row(dict(nested or {}))
        return Scenario(id=scenario_id, condition=condition, opener=opener)
    known = {"persona", "goal", "knowledge", "knowledge_discloses", "knowledge_asks", "style"}
    unknown = sorted(set(item) - known)
    if unknown:
        raise ValueError(f"scenario {scenario_id!r}: unknown keys {unknown}; use id, opener, condition or "
                         f"{sorted(known)}")
    knowledge = dict(item.get("knowledge") or {})
    if item.get("knowledge_discloses"):
        knowledge["discloses"] = list(knowledge.get("discloses") or []) + list(item["knowledge_discloses"])
    if item.get("knowledge_asks"):
        knowledge["asks"] = list(knowledge.get("asks") or []) + list(item["knowledge_asks"])
    condition = make_condition(item.get("persona"), item.get("goal"), knowledge or None, item.get("style"))
    return Scenario(id=scenario_id, condition=condition, opener=opener)


def scenarios_from_dicts(items: Iterable[Mapping[str, Any] | Condition], opener: str = "user") -> list[Scenario]:
    """Hand-written scenarios; ids must be unique (they key the GRPO prompts)."""
    scenarios = [scenario_from_dict(item, i, opener) for i, item in enumerate(items)]
    _check_unique(scenarios)
    if not scenarios:
        raise ValueError("no scenarios given")
    return scenarios


def load_scenarios_file(path: str | Path, opener: str = "user") -> list[Scenario]:
    """Scenarios from a ``.jsonl`` file (one dict a line) or a ``.yaml``/``.json`` list of dicts."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scenarios file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        items = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        items = yaml.safe_load(text)
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a list of scenario dicts")
    return scenarios_from_dicts(items, opener=opener)


def scenarios_from_dataset(data_dir: str | Path, split: str = "test", max_scenarios: int | None = None,
                           seed: int = 0, opener: str = "user") -> list[Scenario]:
    """Conditions of the held-out records of a data run (``DATA_DIR/dataset``, one scenario per record).

    ``opener="record"`` lets each record's own first speaker open; ``max_scenarios`` keeps a
    seeded random subset (the same ``seed`` gives the same subset).
    """
    from datasets import load_from_disk

    dataset_dir = Path(data_dir) / "dataset"
    if not dataset_dir.is_dir():
        raise FileNotFoundError(f"{dataset_dir} does not exist: run `usersim data` (make data) first, "
                                "or give hand-written scenarios")
    splits = load_from_disk(str(dataset_dir))
    if split not in splits:
        raise ValueError(f"{dataset_dir} has no split {split!r}; it has {sorted(splits)}")
    rows = splits[split]
    if "condition" not in rows.column_names:
        raise ValueError(f"split {split!r} of {dataset_dir} has no 'condition' column (is it a per-turn split?)")
    indices = list(range(len(rows)))
    if max_scenarios is not None and max_scenarios < len(indices):
        indices = sorted(random.Random(seed).sample(indices, max_scenarios))
    scenarios = []
    for i in indices:
        row = rows[i]
        first = (row.get("turns") or [{"role": "user"}])[0]["role"]
        who = first if opener == "record" else opener
        scenarios.append(Scenario(id=str(row.get("id") or f"{split}-{i}"), condition=Condition.from_row(row["condition"]),
                                  opener=who))
    if not scenarios:
        raise ValueError(f"split {split!r} of {dataset_dir} is empty")
    _check_unique(scenarios)
    return scenarios


def _check_unique(scenarios: Sequence[Scenario]) -> None:
    seen: set[str] = set()
    for s in scenarios:
        if s.id in seen:
            raise ValueError(f"scenario id {s.id!r} appears twice; ids must be unique")
        seen.add(s.id)
