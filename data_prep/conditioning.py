"""Offline conditioning heuristics: persona, goal, knowledge and style of one conversation's user.

Every field is a small pure function of the conversation (and, for the persona, of the user's
*training* history, never a held-out conversation). An LLM annotator (data_prep.annotator) can
overwrite goal/persona; these heuristics are the default and the fallback.

- persona: corpus metadata (:data:`PERSONA_METADATA_KEYS`), plus, when the user has other
  *training* conversations, their most typical opening turns (clipped): the openers with the
  highest mean word overlap with the user's other openers. The conversation being conditioned is
  excluded, so its own targets never appear in its condition.
- goal: corpus goal/topic/prompt metadata (chit-chat's ``prompt``), else the content keywords of
  the first user turn (never the turn itself).
- knowledge_discloses: one short keyword item per first-person declarative sentence of the user
  ("I have two dogs named Rex" -> "dogs, rex"); knowledge_asks: one keyword item per
  question sentence (its topic words; a question with none is left out). Eval matches these by
  content-word overlap to measure knowledge leak and gradual disclosure.
- style: :func:`data_prep.style.style_buckets` of the user's turns (the ruler eval measures with).

No oracle conditions (DESIGN.md): the target turns must not be readable from the condition.
Keyword items are picked so that they never hold a 4-word span (data_prep.leakage) of any user
turn of the conversation, and :func:`scrub_condition`, the last step of :func:`build_condition`,
enforces it for the whole condition text: a persona part or opener, or a knowledge item, that
would bring in a 4-word span of a user turn is dropped; such a goal (e.g. a corpus prompt the user
typed again) is replaced by its keywords. Every scrubbed item is counted.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from typing import AbstractSet, Any, Iterable, Mapping, Sequence

from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from data_prep.config import ConditioningConfig
from data_prep.leakage import LEAK_NGRAM, condition_text, ngram_set, normalised_words, shares_span
from data_prep.prompt_format import Condition
from data_prep.schema import USER, Conversation
from data_prep.style import sentences, style_buckets

PERSONA_METADATA_KEYS = ("country", "state", "location", "language", "age", "gender", "occupation")
GOAL_METADATA_KEYS = ("goal", "intent", "topic", "prompt", "title")

# Words that carry no fact in chat (on top of the English stop words); normalised (no apostrophes).
CHAT_FILLER_WORDS = frozenset({
    "hey", "hello", "yeah", "yes", "yep", "yup", "nope", "lol", "haha", "hahaha", "lmao", "omg", "okay", "wow",
    "cool", "nice", "great", "awesome", "really", "just", "like", "likes", "liked", "love", "loved", "pretty",
    "actually", "maybe", "think", "thought", "know", "guess", "lot", "lots", "thing", "things", "stuff", "sure",
    "good", "bad", "gonna", "wanna", "gotta", "kind", "sort", "way", "want", "wanted", "got", "getting", "going",
    "said", "say", "tell", "honestly", "honest", "definitely", "probably", "did", "does", "doing", "make", "makes",
    "having", "im", "ive", "ill", "id", "dont", "didnt", "doesnt", "isnt", "wasnt", "arent", "werent", "wont",
    "youre", "youve", "youll", "youd", "thats", "whats", "theres", "hes", "shes", "theyre", "lets", "oh", "hmm",
    "thanks", "thank", "right", "totally", "bit", "little", "time", "today", "day", "named", "near", "live",
    "lives", "lived", "living",
})
KEYWORDS_PER_ITEM = 3  # a knowledge item is at most this many content words (shorter than one 4-gram)
GOAL_KEYWORDS = 6  # a goal abstracted to keywords keeps at most this many
OPENERS_LABEL = "typical openers: "
# The free-text fields scrub_condition may remove items from (the keys of its counts).
SCRUBBED_FIELDS = ("persona", "goal", "knowledge_discloses", "knowledge_asks")

_WORD = re.compile(r"[A-Za-z']+")
_DISCLOSURE = re.compile(
    r"^(?:i\s*(?:am|'m|was|have|'ve|had|work|worked|live|lived|love|like|own|got|study|studied|grew|"
    r"teach|play|moved|go)\b|im\b|ive\b|my\b)",
    re.IGNORECASE,
)


def clip(text: str, max_chars: int) -> str:
    """Whitespace-collapsed ``text`` of at most ``max_chars`` characters (with an ellipsis if cut)."""
    text = " ".join(text.split())
    if max_chars <= 0 or len(text) <= max_chars:
        return text
    return text[: max(0, max_chars - 1)].rstrip() + "…"


def is_content_word(word: str) -> bool:
    """A normalised word that can carry a fact: a number, or 3+ characters and no stop/filler word."""
    return word.isdigit() or (len(word) >= 3 and word not in ENGLISH_STOP_WORDS and word not in CHAT_FILLER_WORDS)


def keywords(text: str, max_words: int, avoid: AbstractSet[tuple[str, ...]] = frozenset(),
             n: int = LEAK_NGRAM) -> list[str]:
    """Distinct content words of ``text`` in order of first appearance, at most ``max_words``.

    A word that would complete, with the words already picked, an n-gram in ``avoid`` is skipped,
    so ``", ".join(result)`` never holds a span of the texts ``avoid`` was made from.
    """
    picked: list[str] = []
    for word in dict.fromkeys(normalised_words(text)):
        if len(picked) >= max_words:
            break
        completes = len(picked) >= n - 1 and tuple(picked[len(picked) - n + 1:] + [word]) in avoid
        if not is_content_word(word) or completes:
            continue
        picked.append(word)
    return picked


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
    return format_openers(picked)


def format_openers(openers: Sequence[str]) -> str:
    """The persona part listing openers (``typical openers: "a" | "b"``); "" when there are none."""
    return (OPENERS_LABEL + " | ".join(f'"{o}"' for o in openers)) if openers else ""


def split_persona(persona: str) -> tuple[list[str], list[str]]:
    """(metadata parts, openers) of a persona built by :func:`build_persona` (openers come last)."""
    head, label, tail = persona.partition(OPENERS_LABEL)
    parts = [p for p in head.split("; ") if p.strip()]
    if not label:
        return parts, []
    tail = tail.strip()
    openers = tail[1:-1].split('" | "') if len(tail) >= 2 and tail[0] == tail[-1] == '"' else [tail]
    return parts, [o for o in openers if o]


def build_persona(metadata: Mapping[str, Any], history: str) -> str:
    return "; ".join(p for p in (persona_from_metadata(metadata), history) if p)


def join_persona(parts: Sequence[str], openers: Sequence[str]) -> str:
    """The persona text of metadata ``parts`` and ``openers`` (the inverse of :func:`split_persona`)."""
    return "; ".join(p for p in (*parts, format_openers(openers)) if p)


# ---- goal ----------------------------------------------------------------------------------

def goal_from_conversation(conv: Conversation, max_chars: int) -> str:
    """Corpus goal metadata, else the keywords of the first user turn ("" when it has none)."""
    for key in GOAL_METADATA_KEYS:
        value = conv.metadata.get(key)
        if isinstance(value, str) and value.strip():
            return clip(value, max_chars)
    users = conv.user_turns()
    if not users:
        return ""
    return clip(", ".join(keywords(users[0], GOAL_KEYWORDS, ngram_set(users))), max_chars)


# ---- knowledge -----------------------------------------------------------------------------

def keyword_items(found: Iterable[str], user_turns: Sequence[str], max_items: int, max_chars: int) -> list[str]:
    """One ``"word, word"`` item per sentence of ``found`` (sentences without content words give
    none), distinct, in order; no item holds a 4-word span of ``user_turns``."""
    avoid = ngram_set(user_turns)
    items = (", ".join(keywords(s, KEYWORDS_PER_ITEM, avoid)) for s in found)
    return _unique((clip(it, max_chars) for it in items if it), max_items)


def knowledge_discloses(user_turns: Sequence[str], max_items: int, max_chars: int) -> list[str]:
    """Keywords of the first-person declarative sentences, in order of appearance."""
    found = (s for t in user_turns for s in sentences(t) if _DISCLOSURE.match(s) and not s.endswith("?"))
    return keyword_items(found, user_turns, max_items, max_chars)


def knowledge_asks(user_turns: Sequence[str], max_items: int, max_chars: int) -> list[str]:
    """Topic keywords of the question sentences (ending in '?', at least two words), in order."""
    found = (s for t in user_turns for s in sentences(t) if s.endswith("?") and len(s.split()) >= 2)
    return keyword_items(found, user_turns, max_items, max_chars)


# ---- all fields ----------------------------------------------------------------------------

def abstract_goal(goal: str, avoid: AbstractSet[tuple[str, ...]], n: int = LEAK_NGRAM) -> str:
    """The keywords of ``goal`` (none completing an n-gram of ``avoid``), comma-joined."""
    return ", ".join(keywords(goal, GOAL_KEYWORDS, avoid, n))


def scrub_condition(condition: Condition, user_turns: Sequence[str], n: int = LEAK_NGRAM,
                    counts: Counter | None = None) -> Condition:
    """``condition`` whose :func:`~data_prep.leakage.condition_text` shares no ``n``-word span
    with any of ``user_turns``.

    Items are taken in the order of the condition text (persona metadata parts, persona openers,
    goal, knowledge_discloses, knowledge_asks) and each is kept only when the text built so far
    plus the item is still clean, so a span across two items is caught too. A goal that does not
    fit is replaced by its keywords when those fit (else dropped); any other item that does not fit
    is dropped. ``counts[field]`` grows by the number of items scrubbed (dropped or abstracted).
    """
    avoid = ngram_set(user_turns, n)

    def clean(candidate: Condition) -> bool:
        return not shares_span(condition_text(candidate), avoid, n)

    parts, openers = split_persona(condition.persona)
    kept_parts: list[str] = []
    kept_openers: list[str] = []
    for part in parts:
        if clean(Condition(persona=join_persona(kept_parts + [part], []))):
            kept_parts.append(part)
    for opener in openers:
        if clean(Condition(persona=join_persona(kept_parts, kept_openers + [opener]))):
            kept_openers.append(opener)
    out = Condition(persona=join_persona(kept_parts, kept_openers), style=dict(condition.style))
    for goal in (condition.goal, abstract_goal(condition.goal, avoid, n)):
        if goal and clean(replace(out, goal=goal)):
            out.goal = goal
            break
    for item in condition.knowledge_discloses:
        if clean(replace(out, knowledge_discloses=out.knowledge_discloses + [item])):
            out.knowledge_discloses.append(item)
    for item in condition.knowledge_asks:
        if clean(replace(out, knowledge_asks=out.knowledge_asks + [item])):
            out.knowledge_asks.append(item)
    if counts is not None:
        counts["persona"] += len(parts) + len(openers) - len(kept_parts) - len(kept_openers)
        counts["goal"] += out.goal != condition.goal
        counts["knowledge_discloses"] += len(condition.knowledge_discloses) - len(out.knowledge_discloses)
        counts["knowledge_asks"] += len(condition.knowledge_asks) - len(out.knowledge_asks)
    return out


def build_condition(conv: Conversation, cfg: ConditioningConfig, persona_history: str = "",
                    scrubbed: Counter | None = None) -> Condition:
    """The heuristic condition of ``conv``'s user (fields switched off in ``cfg`` stay empty),
    scrubbed of the user's own wording (:func:`scrub_condition`, counted in ``scrubbed``)."""
    users = [t.text for t in conv.turns if t.role == USER]
    condition = Condition(
        persona=build_persona(conv.metadata, persona_history) if cfg.persona else "",
        goal=goal_from_conversation(conv, cfg.max_item_chars) if cfg.goal else "",
        knowledge_discloses=knowledge_discloses(users, cfg.max_knowledge_items, cfg.max_item_chars)
        if cfg.knowledge else [],
        knowledge_asks=knowledge_asks(users, cfg.max_knowledge_items, cfg.max_item_chars) if cfg.knowledge else [],
        style=style_buckets(users) if cfg.style else {},
    )
    return scrub_condition(condition, users, counts=scrubbed)
