"""The simulator prompt format: the one place that turns condition + history into model text.

train/, eval/ and the runtime (usersim.simulator) all import this module; nothing else renders
prompts. The format is plain text made of tokens every base LM already has, so no new embeddings
must be learned::

    <bos>[Simulated user]
    Persona: country: US
    Goal: talk about weekend plans
    Knows and may reveal: I have two dogs
    Wants to find out: what is a good hike nearby?
    Style: length=short; casing=lower; punctuation=light; emoji=none; typos=some
    [Conversation]
    User: hey<eos>
    Assistant: Hi! How can I help?<eos>
    User: [END OF CONVERSATION]<eos>

Supervised (loss-bearing) spans: the *text* of every user turn plus its EOS, and the final
end-of-conversation marker plus its EOS. Markers (``User: ``), the condition header and assistant
turns are context only. Rendering returns :class:`Segment` objects; tokenisation happens segment by
segment so the supervised token span is exact (no offset-mapping guesswork), and generation uses
the very same tokenisation of the prompt.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Sequence

from data_prep.schema import ASSISTANT, USER, Turn

HEADER = "[Simulated user]\n"
CONVERSATION_HEADER = "[Conversation]"
USER_MARKER = "\nUser: "
ASSISTANT_MARKER = "\nAssistant: "
END_OF_CONVERSATION = "[END OF CONVERSATION]"
STYLE_KEYS = ("length", "casing", "punctuation", "emoji", "typos")
CONDITION_FIELDS = ("persona", "goal", "knowledge", "style")


@dataclass
class Condition:
    """What the simulated user is: every field optional (empty = unspecified)."""

    persona: str = ""
    goal: str = ""
    knowledge_discloses: list[str] = field(default_factory=list)  # facts they know and may reveal
    knowledge_asks: list[str] = field(default_factory=list)  # what they don't know / ask about
    style: dict[str, str] = field(default_factory=dict)  # bucket per STYLE_KEYS

    def to_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["style"] = {k: self.style.get(k, "") for k in STYLE_KEYS}
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any] | None) -> "Condition":
        if not row:
            return cls()
        return cls(
            persona=row.get("persona") or "",
            goal=row.get("goal") or "",
            knowledge_discloses=list(row.get("knowledge_discloses") or []),
            knowledge_asks=list(row.get("knowledge_asks") or []),
            style={k: v for k, v in (row.get("style") or {}).items() if v},
        )


@dataclass(frozen=True)
class Segment:
    text: str
    supervised: bool = False
    eos: bool = False  # append the tokenizer's EOS after text (same supervision as text)


def render_condition(condition: Condition) -> str:
    lines = [HEADER.rstrip("\n")]
    if condition.persona:
        lines.append(f"Persona: {condition.persona}")
    if condition.goal:
        lines.append(f"Goal: {condition.goal}")
    if condition.knowledge_discloses:
        lines.append("Knows and may reveal: " + " | ".join(condition.knowledge_discloses))
    if condition.knowledge_asks:
        lines.append("Wants to find out: " + " | ".join(condition.knowledge_asks))
    style = "; ".join(f"{k}={condition.style[k]}" for k in STYLE_KEYS if condition.style.get(k))
    if style:
        lines.append(f"Style: {style}")
    lines.append(CONVERSATION_HEADER)
    return "\n".join(lines)


def _turn_segments(turn: Turn, supervise_user: bool) -> list[Segment]:
    if turn.role == USER:
        return [Segment(USER_MARKER), Segment(turn.text, supervised=supervise_user, eos=True)]
    if turn.role == ASSISTANT:
        return [Segment(ASSISTANT_MARKER), Segment(turn.text, eos=True)]
    raise ValueError(f"unknown role {turn.role!r}")


def render_simulator_prompt(
    condition: Condition, turns: Sequence[Turn], *, end_of_conversation: bool, supervise_user: bool = True
) -> list[Segment]:
    """Training rendering: every user turn supervised, optional end-of-conversation target.

    ``end_of_conversation`` appends ``User: [END OF CONVERSATION]<eos>`` as a supervised target;
    data_prep sets it when the conversation's last turn is the assistant's (the user chose to stop).
    """
    segments = [Segment(render_condition(condition))]
    for turn in turns:
        segments.extend(_turn_segments(turn, supervise_user))
    if end_of_conversation:
        segments.append(Segment(USER_MARKER))
        segments.append(Segment(END_OF_CONVERSATION, supervised=supervise_user, eos=True))
    return segments


def render_generation_prompt(condition: Condition, history: Sequence[Turn]) -> list[Segment]:
    """Prompt for the next user turn: context segments ending in the user marker, nothing supervised."""
    segments = render_simulator_prompt(condition, history, end_of_conversation=False, supervise_user=False)
    segments.append(Segment(USER_MARKER))
    return segments


def is_end_of_conversation(generated: str) -> bool:
    return generated.strip().startswith(END_OF_CONVERSATION)


def tokenize_segments(segments: Sequence[Segment], tokenizer: Any, add_bos: bool = True) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 where not supervised) for rendered segments.

    Each segment is tokenised on its own (one batched tokenizer call), so supervised spans are
    exact by construction.
    """
    encoded = tokenizer([s.text for s in segments], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("tokenizer has no eos_token_id; the simulator format ends turns with EOS")
    ids: list[int] = []
    labels: list[int] = []
    bos = getattr(tokenizer, "bos_token_id", None)
    if add_bos and bos is not None:
        ids.append(bos)
        labels.append(-100)
    for seg, seg_ids in zip(segments, encoded):
        piece = list(seg_ids) + ([eos] if seg.eos else [])
        ids.extend(piece)
        labels.extend(piece if seg.supervised else [-100] * len(piece))
    return ids, labels


def drop_condition_fields(condition: Condition, probability: float, rng: random.Random) -> Condition:
    """Blank each conditioning field independently with ``probability`` (condition dropout)."""
    if probability <= 0:
        return condition
    changes: dict[str, Any] = {}
    for name in CONDITION_FIELDS:
        if rng.random() < probability:
            if name == "knowledge":
                changes["knowledge_discloses"] = []
                changes["knowledge_asks"] = []
            elif name == "style":
                changes["style"] = {}
            else:
                changes[name] = ""
    return replace(condition, **changes)


def supervised_texts(segments: Iterable[Segment]) -> list[str]:
    return [s.text for s in segments if s.supervised]


def visualize_segments(segments: Sequence[Segment], color: bool = True) -> str:
    """The record as text with supervised spans highlighted (green) or bracketed as ⟦...⟧."""
    out = []
    for seg in segments:
        text = seg.text + ("<eos>" if seg.eos else "")
        if seg.supervised:
            out.append(f"\x1b[42;30m{text}\x1b[0m" if color else f"⟦{text}⟧")
        else:
            out.append(text)
    return "".join(out)
