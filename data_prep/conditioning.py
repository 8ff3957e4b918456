"""Offline conditioning heuristics: persona, goal, knowledge and style of one conversation's user.

Every field is a small pure function of the conversation (and, for the persona, of the user's
*training* history, never a held-out conversation). An LLM annotator (data_prep.annotator) can
overwrite goal/persona; these heuristics are the default and the fallback.

- persona: corpus metadata (:data:`PERSONA_METADATA_KEYS`), plus, when the user has other
  *training* conversations, their most typical opening turns (clipped): the openers with the
  highest mean word overlap with the user's other openers. The conversation being conditioned is
  excluded, so its own targets never appear in its condition.
- goal: corpus goal/topic/prompt metadata (chit-chat's ``prompt``), else the first user turn, clipped.
- knowledge_discloses: the user's first-person declarative sentences ("I am / I have / my ...");
  knowledge_asks: the user's question sentences. Eval uses these to measure knowledge leak and
  gradual disclosure.
- style: buckets for STYLE_KEYS; every threshold lives in :data:`STYLE_THRESHOLDS`.
"""

from __future__ import annotations

import re
import string
from typing import Any, Iterable, Mapping, Sequence

from data_prep.config import ConditioningConfig
from data_prep.prompt_format import Condition
from data_prep.schema import USER, Conversation

PERSONA_METADATA_KEYS = ("country", "state", "location", "language", "age", "gender", "occupation")
GOAL_METADATA_KEYS = ("goal", "intent", "topic", "prompt", "title")

# All style thresholds in one place (applied to the user's turns of one conversation).
STYLE_THRESHOLDS: dict[str, Any] = {
    # mean words per user turn: < short_below -> short, < long_from -> medium, else long
    "length": {"short_below": 8.0, "long_from": 25.0},
    # share of user turns (with letters) written all lower case / starting with a capital
    "casing": {"lower_share": 0.7, "proper_share": 0.7},
    # punctuation marks per word: 0 -> none, < heavy_from -> light, else heavy
    "punctuation": {"heavy_from": 0.2},
    # any emoji or emoticon -> some
    "emoji": {},
    # non-standard spellings (NON_STANDARD_SPELLINGS) per word: 0 -> none, < many_from -> some, else many
    "typos": {"many_from": 0.05},
}

# Common non-standard spellings humans type in chat (the typo-rate proxy).
NON_STANDARD_SPELLINGS = frozenset({
    "im", "dont", "cant", "wont", "didnt", "doesnt", "isnt", "wasnt", "arent", "werent", "ive",
    "youre", "thats", "whats", "theyre", "shouldnt", "couldnt", "wouldnt", "u", "ur", "r", "ya",
    "thx", "pls", "plz", "cuz", "coz", "teh", "alot", "wat", "wut", "becuase", "recieve",
    "definately", "seperate", "tho", "thru", "gonna", "wanna", "gotta", "dunno", "idk", "ok", "k",
})

_WORD = re.compile(r"[A-Za-z']+")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\n+")
_DISCLOSURE = re.compile(
    r"^(?:i\s*(?:am|'m|was|have|'ve|had|work|worked|live|lived|love|like|own|got|study|studied|grew|"
    r"teach|play|moved|go)\b|im\b|ive\b|my\b)",
    re.IGNORECASE,
)
_EMOJI = re.compile(
    "[\U0001F300-\U0001FAFF\U00002600-\U000027BF\U0001F000-\U0001F02F\U0001F0A0-\U0001F0FF\U0001F100-\U0001F1FF]"
    r"|(?<!\w)[:;=8][-']?[)(DPpOo3/\\|\]\[](?!\w)|<3"
)
_PUNCT = set(string.punctuation) - {"'"}


def clip(text: str, max_chars: int) -> str:
    """Whitespace-collapsed ``text`` of at most ``max_chars`` characters (with an ellipsis if cut)."""
    text = " ".join(text.split())
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    return text[: max(0, max_chars - 1)].rstrip() + "…"


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_SPLIT.split(text) if s and s.strip()]


def _unique(items: Iterable[str], limit: int) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for it in items:
        key = it.lower()
        if key and key not in seen:
            seen.add(key)
            out.append(it)
        if len(out) >= limit:
            break
    return out


# ---- persona -------------------------------------------------------------------------------

def persona_from_metadata(metadata: Mapping[str, Any]) -> str:
    parts = []
    for key in PERSONA_METADATA_KEYS:
        value = metadata.get(key)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and str(value).strip():
            parts.append(f"{key}: {str(value).strip()}")
    return "; ".join(parts)


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text)}


def rank_typical_openers(openers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """``(conversation_id, opener)`` pairs, most typical first (mean Jaccard with the others)."""
    bags = [_words(t) for _, t in openers]

    def score(i: int) -> float:
        others = [j for j in range(len(bags)) if j != i]
        if not others:
            return 0.0
        sims = [len(bags[i] & bags[j]) / len(bags[i] | bags[j]) if bags[i] | bags[j] else 0.0 for j in others]
        return sum(sims) / len(sims)

    order = sorted(range(len(openers)), key=lambda i: (-score(i), openers[i][1], openers[i][0]))
    return [openers[i] for i in order]


def persona_from_history(ranked_openers: Sequence[tuple[str, str]], exclude_conversation_id: str,
                         n_turns: int, max_chars: int = 60) -> str:
    """The user's most typical openers from their *other* training conversations."""
    picked: list[str] = []
    seen: set[str] = set()
    for cid, text in ranked_openers:
        key = " ".join(w.lower() for w in _WORD.findall(text))  # "Hello!" and "hello?" are one opener
        if cid == exclude_conversation_id or key in seen:
            continue
        seen.add(key)
        picked.append(clip(text, max_chars))
        if len(picked) >= n_turns:
            break
    return ("typical openers: " + " | ".join(f'"{p}"' for p in picked)) if picked else ""


def build_persona(metadata: Mapping[str, Any], history: str) -> str:
    return "; ".join(p for p in (persona_from_metadata(metadata), history) if p)


# ---- goal ----------------------------------------------------------------------------------

def goal_from_conversation(conv: Conversation, max_chars: int) -> str:
    for key in GOAL_METADATA_KEYS:
        value = conv.metadata.get(key)
        if isinstance(value, str) and value.strip():
            return clip(value, max_chars)
    users = conv.user_turns()
    return clip(users[0], max_chars) if users else ""


# ---- knowledge -----------------------------------------------------------------------------

def knowledge_discloses(user_turns: Sequence[str], max_items: int, max_chars: int) -> list[str]:
    """First-person declarative sentences, in order of appearance."""
    found = (s for t in user_turns for s in sentences(t) if _DISCLOSURE.match(s) and not s.endswith("?"))
    return _unique((clip(s, max_chars) for s in found), max_items)


def knowledge_asks(user_turns: Sequence[str], max_items: int, max_chars: int) -> list[str]:
    """Question sentences (ending in '?', at least two words), in order of appearance."""
    found = (s for t in user_turns for s in sentences(t) if s.endswith("?") and len(s.split()) >= 2)
    return _unique((clip(s, max_chars) for s in found), max_items)


# ---- style ---------------------------------------------------------------------------------

def length_bucket(user_turns: Sequence[str]) -> str:
    th = STYLE_THRESHOLDS["length"]
    mean = sum(len(t.split()) for t in user_turns) / max(1, len(user_turns))
    return "short" if mean < th["short_below"] else "medium" if mean < th["long_from"] else "long"


def casing_bucket(user_turns: Sequence[str]) -> str:
    th = STYLE_THRESHOLDS["casing"]
    lettered = [t for t in user_turns if any(c.isalpha() for c in t)]
    if not lettered:
        return "mixed"
    lower = sum(not any(c.isupper() for c in t) for t in lettered) / len(lettered)
    proper = sum(next(c for c in t if c.isalpha()).isupper() for t in lettered) / len(lettered)
    if lower >= th["lower_share"]:
        return "lower"
    if proper >= th["proper_share"]:
        return "proper"
    return "mixed"


def punctuation_bucket(user_turns: Sequence[str]) -> str:
    marks = sum(c in _PUNCT for t in user_turns for c in t)
    words = sum(len(t.split()) for t in user_turns)
    if marks == 0:
        return "none"
    return "heavy" if marks / max(1, words) >= STYLE_THRESHOLDS["punctuation"]["heavy_from"] else "light"


def emoji_bucket(user_turns: Sequence[str]) -> str:
    return "some" if any(_EMOJI.search(t) for t in user_turns) else "none"


def typo_bucket(user_turns: Sequence[str]) -> str:
    words = [w.lower() for t in user_turns for w in _WORD.findall(t)]
    bad = sum(w in NON_STANDARD_SPELLINGS for w in words)
    if bad == 0:
        return "none"
    return "many" if bad / max(1, len(words)) >= STYLE_THRESHOLDS["typos"]["many_from"] else "some"


def style_buckets(user_turns: Sequence[str]) -> dict[str, str]:
    return {
        "length": length_bucket(user_turns),
        "casing": casing_bucket(user_turns),
        "punctuation": punctuation_bucket(user_turns),
        "emoji": emoji_bucket(user_turns),
        "typos": typo_bucket(user_turns),
    }


# ---- all fields ----------------------------------------------------------------------------

def build_condition(conv: Conversation, cfg: ConditioningConfig, persona_history: str = "") -> Condition:
    """The heuristic condition of ``conv``'s user (fields switched off in ``cfg`` stay empty)."""
    users = [t.text for t in conv.turns if t.role == USER]
    return Condition(
        persona=build_persona(conv.metadata, persona_history) if cfg.persona else "",
        goal=goal_from_conversation(conv, cfg.max_item_chars) if cfg.goal else "",
        knowledge_discloses=knowledge_discloses(users, cfg.max_knowledge_items, cfg.max_item_chars)
        if cfg.knowledge else [],
        knowledge_asks=knowledge_asks(users, cfg.max_knowledge_items, cfg.max_item_chars) if cfg.knowledge else [],
        style=style_buckets(users) if cfg.style else {},
    )
