"""Arrow features of the data stage's outputs, and its JSON writer.

The stage stages kept conversations on disk (data_prep.main) and writes the train/validation/test
records and the per-turn items as Arrow with the exact features below
(data_prep.dataset_writer), so empty splits and empty lists still have the contract's types.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datasets import Features, List, Value

from usersim.data_prep.prompt_format import STYLE_KEYS

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


def write_json(path: Path, obj: Any) -> None:
    Path(path).write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")
