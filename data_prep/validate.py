"""Validation and cleaning of one conversation: drop, merge, or quarantine with a reason code.

Decisions (each documented here and in the dataset card):

- **Unknown role** / **non-string text** in any turn -> conversation quarantined
  (``unknown_role`` / ``non_string_content``): we cannot tell who said what.
- **No turns at all** -> ``no_turns``.
- **Empty turns** (empty or whitespace-only text) are *dropped* when dropping them cannot change
  who said what: at the start or end of the conversation, or next to a non-empty turn of the same
  role (the burst is merged anyway). An empty turn that is the *only* thing separating two
  non-empty turns of the other role (``user: a / assistant: "" / user: b``) would fabricate a
  burst when removed, so the conversation is quarantined as ``empty_turn``.
- **Consecutive same-role turns are merged** (joined with a newline): humans send bursts. Counted
  as ``merged_turns`` (number of turns absorbed into a previous one).
- **Leading assistant turns** are kept as context (the other side may open the chat).
- **No user turn** after cleaning -> ``no_user_turn``; fewer than ``filters.min_user_turns`` ->
  ``too_few_user_turns``.
- **Too long**: any single turn over ``filters.max_turn_chars`` or the whole conversation over
  ``filters.max_conversation_chars`` -> conversation quarantined as ``too_long`` (truncating a turn
  would train the simulator on text the human never wrote, and dropping a turn breaks the
  alternation).
- **Language** (``filters.languages`` non-empty): metadata ``language`` (case-insensitive) not in
  the list -> ``language_filtered``; a conversation *without* a language is also filtered, since
  we cannot show it is in a wanted language.
- **Toxic** (``filters.drop_toxic``): metadata ``toxic`` truthy -> ``toxic`` (whole conversation:
  the user's behaviour is the training target).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from usersim.data_prep.config import FilterConfig
from usersim.data_prep.schema import ROLES, USER, Conversation, Quarantined, Reason, Turn


@dataclass
class CleanStats:
    """What cleaning changed in one conversation (summed into summary.json)."""

    merged_turns: int = 0
    empty_turns_dropped: int = 0


def _quarantine(conv: Conversation, reason: str, detail: str) -> Quarantined:
    return Quarantined(source=conv.source, reason=reason, location=conv.location or conv.id,
                       detail=detail, raw=conv.to_row())


def _is_empty(turn: Turn) -> bool:
    return not turn.text or turn.text.isspace()  # (what ``not text.strip()`` says, without a copy)


def drop_empty_turns(turns: list[Turn]) -> tuple[list[Turn] | None, int]:
    """Turns without empty ones, and how many were dropped; ``None`` if dropping would fabricate a burst."""
    kept = [t for t in turns if not _is_empty(t)]
    if len(kept) == len(turns):
        return turns, 0
    # For each maximal run of empty turns between two non-empty turns: if both neighbours have the
    # same role and the run contains the other role, removing the run merges two separate turns.
    i = 0
    while i < len(turns):
        if not _is_empty(turns[i]):
            i += 1
            continue
        j = i
        while j < len(turns) and _is_empty(turns[j]):
            j += 1
        if i > 0 and j < len(turns):
            before, after = turns[i - 1].role, turns[j].role
            if before == after and any(t.role != before for t in turns[i:j]):
                return None, 0
        i = j
    return kept, len(turns) - len(kept)


def merge_consecutive_turns(turns: list[Turn]) -> tuple[list[Turn], int]:
    """Merge runs of same-role turns (joined by a newline); returns turns and number absorbed."""
    merged: list[Turn] = []
    absorbed = 0
    for t in turns:
        if merged and merged[-1].role == t.role:
            merged[-1] = Turn(t.role, merged[-1].text + "\n" + t.text)
            absorbed += 1
        else:
            merged.append(t)  # (turns are never changed in place: unmerged ones can be shared)
    return merged, absorbed


def _language_ok(metadata: dict[str, Any], languages: list[str]) -> bool:
    if not languages:
        return True
    lang = metadata.get("language")
    return isinstance(lang, str) and lang.strip().lower() in {x.lower() for x in languages}


def validate_conversation(conv: Conversation, filters: FilterConfig) -> tuple[Conversation | Quarantined, CleanStats]:
    """Clean ``conv`` (drop empty turns, merge bursts) or quarantine it with a reason code."""
    stats = CleanStats()
    if not conv.turns:
        return _quarantine(conv, Reason.NO_TURNS, "conversation has no turns"), stats
    for i, t in enumerate(conv.turns):
        if t.role not in ROLES:
            return _quarantine(conv, Reason.UNKNOWN_ROLE, f"turn {i} has role {t.role!r}"), stats
        if not isinstance(t.text, str):
            return _quarantine(conv, Reason.NON_STRING_CONTENT, f"turn {i} text is {type(t.text).__name__}"), stats
    turns, n_empty = drop_empty_turns(list(conv.turns))
    if turns is None:
        return _quarantine(conv, Reason.EMPTY_TURN, "an empty turn separates two turns of the other role"), stats
    stats.empty_turns_dropped = n_empty
    if not turns:
        return _quarantine(conv, Reason.EMPTY_TURN, "every turn is empty"), stats
    turns, stats.merged_turns = merge_consecutive_turns(turns)
    n_user = sum(t.role == USER for t in turns)
    if n_user == 0:
        return _quarantine(conv, Reason.NO_USER_TURN, "no user turn"), stats
    if n_user < filters.min_user_turns:
        return _quarantine(conv, Reason.TOO_FEW_USER_TURNS,
                           f"{n_user} user turns < min_user_turns={filters.min_user_turns}"), stats
    longest = max(len(t.text) for t in turns)
    if filters.max_turn_chars and longest > filters.max_turn_chars:
        return _quarantine(conv, Reason.TOO_LONG, f"a turn has {longest} chars > max_turn_chars"), stats
    total = sum(len(t.text) for t in turns)
    if filters.max_conversation_chars and total > filters.max_conversation_chars:
        return _quarantine(conv, Reason.TOO_LONG, f"{total} chars > max_conversation_chars"), stats
    if not _language_ok(conv.metadata, filters.languages):
        return _quarantine(conv, Reason.LANGUAGE, f"language {conv.metadata.get('language')!r} not in filter"), stats
    if filters.drop_toxic and conv.metadata.get("toxic"):
        return _quarantine(conv, Reason.TOXIC, "flagged toxic by the corpus"), stats
    return replace(conv, turns=turns), stats
