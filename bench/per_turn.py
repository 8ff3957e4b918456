"""The per-turn baseline's samples, derived token-exactly from a conversation-level record.

UserLM-style per-turn training makes one sample per user turn: the whole history up to that turn
is the prompt and the user turn (with its EOS) is the completion; the final
``[END OF CONVERSATION]`` target is one more sample. Because ``usersim.data_prep.prompt_format`` tokenises
segment by segment, the token ids of every such prompt+completion are exactly a *prefix* of the
conversation-level record's ids, ending where a supervised span ends. So the baseline is built
here from the same ``(ids, labels)`` the conversation-level trainer sees: same tokens, same
targets, no tokenisation drift between the two formulations.
"""

from __future__ import annotations

from typing import Sequence

from usersim.data_prep.prompt_format import IGNORE_INDEX as IGNORE


def supervised_spans(labels: Sequence[int]) -> list[tuple[int, int]]:
    """``[start, end)`` of every maximal run of supervised (label != -100) positions."""
    spans: list[tuple[int, int]] = []
    start = None
    for i, lab in enumerate(labels):
        if lab != IGNORE and start is None:
            start = i
        elif lab == IGNORE and start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(labels)))
    return spans


def per_turn_samples(ids: Sequence[int], labels: Sequence[int]) -> list[dict[str, list[int]]]:
    """One prompt+completion sample per supervised span: ``input_ids`` and ``completion_mask``.

    ``completion_mask`` is 1 on the completion (that span) and 0 on the prompt (the history), the
    column TRL's SFTTrainer reads for ``completion_only_loss``.
    """
    out = []
    for s, e in supervised_spans(labels):
        out.append({"input_ids": list(ids[:e]), "completion_mask": [0] * s + [1] * (e - s)})
    return out


def completion_labels(sample: dict[str, list[int]]) -> list[int]:
    """Labels of a per-turn sample: its ids on the completion, -100 on the prompt."""
    return [t if m else IGNORE for t, m in zip(sample["input_ids"], sample["completion_mask"])]
