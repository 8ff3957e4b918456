"""A tiny synthetic data run directory (DatasetDict of conversation records) for the tests.

Built only from data_prep's own record builder, so it has exactly the schema the data stage writes
(docs/contracts.md); it lets train/ be exercised without running the data stage.
"""

from __future__ import annotations

import random
from pathlib import Path

from usersim.data_prep.prompt_format import Condition
from usersim.data_prep.records import conversation_record
from usersim.data_prep.schema import ASSISTANT, USER, Conversation, Turn

WORDS = ("hey hi so um well yeah no maybe dogs cats weekend hike pizza rain movie music work school "
         "tired happy weird cool lol ok sure what why how when where tomorrow today friend game").split()


def toy_records(n: int, seed: int = 0, split: str = "train") -> list[dict]:
    rng = random.Random(f"{seed}:{split}")
    out = []
    for i in range(n):
        turns = []
        for k in range(rng.randint(1, 4)):
            user = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8)))
            turns.append(Turn(USER, user + rng.choice(["", "?", "!", " :)"])))
            if k or rng.random() < 0.7:
                turns.append(Turn(ASSISTANT, "Sure, " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))))
        conv = Conversation(id=f"{split}-{i}", source="toy", user_id=f"{split}-user-{i % 7}", turns=turns,
                            group_id=f"{split}-{i}")
        cond = Condition(persona=f"country: {rng.choice(['US', 'UK', 'IN'])}", goal=f"talk about {rng.choice(WORDS)}",
                         knowledge_discloses=[f"I like {rng.choice(WORDS)}"], knowledge_asks=[f"what {rng.choice(WORDS)}?"],
                         style={"length": rng.choice(["short", "long"]), "casing": "lower"})
        out.append(conversation_record(conv, cond))
    return out


def write_toy_data_dir(data_dir: str | Path, n_train: int = 24, n_validation: int = 6, seed: int = 0) -> Path:
    """``data_dir/dataset`` with train/validation splits of toy conversation records."""
    from datasets import Dataset, DatasetDict

    dd = DatasetDict({"train": Dataset.from_list(toy_records(n_train, seed, "train")),
                      "validation": Dataset.from_list(toy_records(n_validation, seed, "validation"))})
    dd.save_to_disk(str(Path(data_dir) / "dataset"))
    return Path(data_dir)
