"""Role reversal: conversations -> simulator records (train) and per-turn items (eval).

A *simulator record* is one (conversation, user) pair: every user turn is a target, every
assistant turn context, and when the assistant spoke last the user's decision to stop is a final
``[END OF CONVERSATION]`` target. In loss this equals the per-turn "history -> next user turn"
samples (UserLM's construction) at a fraction of the tokens, because the shared history is
processed once instead of once per turn.
"""

from __future__ import annotations

from typing import Any

from usersim.data_prep.prompt_format import END_OF_CONVERSATION, Condition
from usersim.data_prep.schema import ASSISTANT, USER, Conversation


def conversation_record(conv: Conversation, condition: Condition) -> dict[str, Any]:
    """One conversation-level record (the row schema of the train/validation/test splits)."""
    row = conv.to_row()
    row.pop("location", None)
    row["condition"] = condition.to_row()
    row["end_of_conversation"] = bool(conv.turns) and conv.turns[-1].role == ASSISTANT
    return row


def per_turn_items(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-turn eval items of one conversation record: (condition, history, real next user turn).

    Pure function of the record; the data stage builds the held-out splits' items with it.
    """
    turns = [{"role": t["role"], "text": t["text"]} for t in record["turns"]]
    user_idx = [i for i, t in enumerate(turns) if t["role"] == USER]
    items: list[dict[str, Any]] = []
    for k, i in enumerate(user_idx):
        items.append({
            "id": f"{record['id']}:{k}",
            "conversation_id": record["id"],
            "user_id": record["user_id"],
            "source": record["source"],
            "condition": record["condition"],
            "history": turns[:i],
            "target": turns[i]["text"],
            "target_is_end": False,
            "is_last": k == len(user_idx) - 1 and not record["end_of_conversation"],
            "turn_index": k,
        })
    if record["end_of_conversation"]:
        items.append({
            "id": f"{record['id']}:end",
            "conversation_id": record["id"],
            "user_id": record["user_id"],
            "source": record["source"],
            "condition": record["condition"],
            "history": turns,
            "target": END_OF_CONVERSATION,
            "target_is_end": True,
            "is_last": True,
            "turn_index": len(user_idx),
        })
    return items
