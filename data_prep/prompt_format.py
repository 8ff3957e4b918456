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

:func:`tokenize_conversation` is the one way from (condition, turns) to token ids, labels and
truncation: training, perplexity, eval simulation and the runtime all call it, so they share one
length policy (see its docstring).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

from usersim.data_prep.schema import ASSISTANT, USER, Turn

HEADER = "[Simulated user]\n"
CONVERSATION_HEADER = "[Conversation]"
USER_MARKER = "\nUser: "
ASSISTANT_MARKER = "\nAssistant: "
END_OF_CONVERSATION = "[END OF CONVERSATION]"
STYLE_KEYS = ("length", "casing", "punctuation", "emoji", "typos")
IGNORE_INDEX = -100  # label of a token that carries no loss (torch cross-entropy's default ignore_index)
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


def render_units(condition: Condition, turns: Sequence[Turn], *, end_of_conversation: bool = False,
                 generation_prompt: bool = False, last_target_only: bool = False) -> list[list[Segment]]:
    """The rendering grouped into units: [header], one unit per turn (marker + text), then the tail.

    The tail is the end-of-conversation target (``end_of_conversation``) or the bare user marker
    that cues the next turn (``generation_prompt``; nothing is supervised then). With
    ``last_target_only`` only the newest unit keeps its supervision (perplexity scores one target).
    """
    if end_of_conversation and generation_prompt:
        raise ValueError("a generation prompt cannot also end with the end-of-conversation target")
    supervise = not generation_prompt
    units = [[Segment(render_condition(condition))]]
    units += [_turn_segments(turn, supervise) for turn in turns]
    if end_of_conversation:
        units.append([Segment(USER_MARKER), Segment(END_OF_CONVERSATION, supervised=supervise, eos=True)])
    if generation_prompt:
        units.append([Segment(USER_MARKER)])
    if last_target_only:
        units[1:-1] = [[replace(seg, supervised=False) for seg in unit] for unit in units[1:-1]]
    return units


def render_simulator_prompt(condition: Condition, turns: Sequence[Turn], *, end_of_conversation: bool) -> list[Segment]:
    """Training rendering: every user turn supervised, optional end-of-conversation target.

    ``end_of_conversation`` appends ``User: [END OF CONVERSATION]<eos>`` as a supervised target;
    data_prep sets it when the conversation's last turn is the assistant's (the user chose to stop).
    """
    return [seg for unit in render_units(condition, turns, end_of_conversation=end_of_conversation) for seg in unit]


def render_generation_prompt(condition: Condition, history: Sequence[Turn]) -> list[Segment]:
    """Prompt for the next user turn: context segments ending in the user marker, nothing supervised."""
    return [seg for unit in render_units(condition, history, generation_prompt=True) for seg in unit]


def is_end_of_conversation(generated: str) -> bool:
    return generated.strip().startswith(END_OF_CONVERSATION)


def end_of_conversation_ids(tokenizer: Any) -> list[int]:
    """The token ids the model is trained to write after the user marker to end a conversation (EOS included)."""
    return tokenize_segments([Segment(END_OF_CONVERSATION, supervised=True, eos=True)], tokenizer, add_bos=False)[0]


def _tokenize_units(units: Sequence[Sequence[Segment]], tokenizer: Any,
                    add_bos: bool = True) -> list[tuple[list[int], list[int]]]:
    """(ids, labels) per unit; BOS opens the first unit. One batched tokenizer call, segment by segment."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("tokenizer has no eos_token_id; the simulator format ends turns with EOS")
    segments = [seg for unit in units for seg in unit]
    encoded = iter(tokenizer([s.text for s in segments], add_special_tokens=False)["input_ids"])
    bos = getattr(tokenizer, "bos_token_id", None)
    out = []
    for j, unit in enumerate(units):
        ids: list[int] = []
        labels: list[int] = []
        if j == 0 and add_bos and bos is not None:
            ids.append(bos)
            labels.append(IGNORE_INDEX)
        for seg in unit:
            piece = list(next(encoded)) + ([eos] if seg.eos else [])
            ids.extend(piece)
            labels.extend(piece if seg.supervised else [IGNORE_INDEX] * len(piece))
        out.append((ids, labels))
    return out


def tokenize_segments(segments: Sequence[Segment], tokenizer: Any, add_bos: bool = True) -> tuple[list[int], list[int]]:
    """Token ids and labels (IGNORE_INDEX where not supervised) for rendered segments, untruncated.

    Each segment is tokenised on its own (one batched tokenizer call), so supervised spans are
    exact by construction.
    """
    return _tokenize_units([segments], tokenizer, add_bos)[0]


@dataclass(frozen=True)
class TokenizedConversation:
    """Token ids and labels of one rendered conversation, and what the length cap removed."""

    input_ids: list[int]
    labels: list[int]  # the token id where supervised, IGNORE_INDEX elsewhere
    turns_dropped: int = 0  # oldest whole turns left out to fit max_tokens
    tokens_cut: int = 0  # tokens cut off the right end (header + newest unit alone were too long)
    supervised_cut: int = 0  # supervised tokens among the cut ones

    @property
    def n_supervised(self) -> int:
        """Supervised tokens that are predicted (token 0 has no preceding position)."""
        return sum(1 for lab in self.labels[1:] if lab != IGNORE_INDEX)


def tokenize_conversation(condition: Condition, turns: Sequence[Turn], tokenizer: Any, *, max_tokens: int = 0,
                          end_of_conversation: bool = False, generation_prompt: bool = False,
                          last_target_only: bool = False) -> TokenizedConversation:
    """Ids, labels and truncation of (condition, turns): the one sequence builder and length policy.

    Units are those of :func:`render_units`: BOS + condition header, one per turn, then the tail (end
    target or generation cue). When ``max_tokens`` > 0 and the sequence is longer:

    1. the header always stays; the oldest whole turns are dropped until the rest fits, but the
       newest unit (the last target, or the generation cue) is never dropped;
    2. if the header plus that unit is still too long, the ids are cut at ``max_tokens`` from the
       right (``tokens_cut``, ``supervised_cut``). A generation prompt is never cut, since it must
       end with the user marker: it comes back longer than ``max_tokens`` instead.

    Labels: every user turn's text + EOS and the end marker + EOS (only the newest unit's with
    ``last_target_only``; none for a generation prompt); IGNORE_INDEX elsewhere.
    """
    units = _tokenize_units(render_units(condition, turns, end_of_conversation=end_of_conversation,
                                         generation_prompt=generation_prompt,
                                         last_target_only=last_target_only), tokenizer)
    lengths = [len(ids) for ids, _ in units]
    first, total = 1, sum(lengths)
    if max_tokens > 0:
        while total > max_tokens and first < len(units) - 1:
            total -= lengths[first]
            first += 1
    kept = units[:1] + units[first:]
    ids = [t for unit_ids, _ in kept for t in unit_ids]
    labels = [t for _, unit_labels in kept for t in unit_labels]
    cut = supervised_cut = 0
    if max_tokens > 0 and len(ids) > max_tokens and not generation_prompt:
        cut = len(ids) - max_tokens
        supervised_cut = sum(1 for lab in labels[max_tokens:] if lab != IGNORE_INDEX)
        ids, labels = ids[:max_tokens], labels[:max_tokens]
    return TokenizedConversation(ids, labels, turns_dropped=first - 1, tokens_cut=cut, supervised_cut=supervised_cut)


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
