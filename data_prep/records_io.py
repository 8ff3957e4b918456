"""Arrow features of the data stage's outputs and the streaming writers it uses.

Kept conversations are streamed to one JSONL staging file per split (never a Python list of the
corpus); ``datasets.Dataset.from_generator`` then turns each into Arrow with the exact features
below, so empty splits and empty lists still have the contract's types.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datasets import Features, List, Value

from usersim.data_prep.prompt_format import STYLE_KEYS
from usersim.data_prep.schema import Conversation, Quarantined

TURN = {"role": Value("string"), "text": Value("string")}
CONDITION = {
    "persona": Value("string"),
    "goal": Value("string"),
    "knowledge_discloses": List(Value("string")),
    "knowledge_asks": List(Value("string")),
    "style": {k: Value("string") for k in STYLE_KEYS},
}
RECORD_FEATURES = Features({
    "id": Value("string"),
    "source": Value("string"),
    "user_id": Value("string"),
    "turns": List(TURN),
    "metadata": Value("string"),
    "group_id": Value("string"),
    "other_user_ids": List(Value("string")),
    "condition": CONDITION,
    "end_of_conversation": Value("bool"),
})
TURN_ITEM_FEATURES = Features({
    "id": Value("string"),
    "conversation_id": Value("string"),
    "user_id": Value("string"),
    "source": Value("string"),
    "condition": CONDITION,
    "history": List(TURN),
    "target": Value("string"),
    "target_is_end": Value("bool"),
    "is_last": Value("bool"),
    "turn_index": Value("int64"),
})


class JsonlWriter:
    """Append-only JSONL writer counting its lines."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("w", encoding="utf-8")
        self.n = 0

    def write_line(self, line: str) -> None:
        self._f.write(line + "\n")
        self.n += 1

    def write_conversation(self, conv: Conversation) -> None:
        self.write_line(json.dumps(conv.to_row(), ensure_ascii=False))

    def write_quarantined(self, q: Quarantined) -> None:
        self.write_line(q.to_json())

    def close(self) -> None:
        self._f.close()


def write_json(path: Path, obj: Any) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")
