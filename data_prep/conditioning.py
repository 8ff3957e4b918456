"""Offline conditioning heuristics: persona, goal, knowledge and style of one conversation's user.

Every field is a small pure function of the conversation (and, for the persona, of the user's
*training* history, never a held-out conversation). An LLM annotator (usersim.data_prep.annotator) can
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
- style: :func:`usersim.data_prep.style.style_buckets` of the user's turns (the ruler eval measures with).

No oracle conditions (DESIGN.md): the target turns must not be readable from the condition.
Keyword items are picked so that they never hold a 4-word span (usersim.data_prep.leakage) of any user
turn of the conversation, and :func:`scrub_condition`, the last step of :func:`build_condition`,
enforces it for the whole condition text: a persona part or opener, or a knowledge item, that
would bring in a 4-word span of a user turn is dropped; such a goal (e.g. a corpus prompt the user
typed again) is replaced by its keywords. Every scrubbed item is counted.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from dataclasses import replace
from typing import AbstractSet, Any, Iterable, Mapping, Sequence

from usersim.data_prep.config import ConditioningConfig
from usersim.data_prep.leakage import LEAK_NGRAM, ngram_set, ngram_set_of_words, normalised_words, word_ngrams_of
from usersim.data_prep.prompt_format import Condition
from usersim.data_prep.schema import USER, Conversation
from usersim.data_prep.style import sentences, style_buckets

PERSONA_METADATA_KEYS = ("country", "state", "location", "language", "age", "gender", "occupation")
GOAL_METADATA_KEYS = ("goal", "intent", "topic", "prompt", "title")

# scikit-learn's ENGLISH_STOP_WORDS (the Glasgow list, 318 words), copied so that the data stage
# does not import scikit-learn (about a second); tests/test_data_fast_paths.py checks the copy.
ENGLISH_STOP_WORDS = frozenset("""
    a about above across after afterwards again against all almost alone along already also
    although always am among amongst amoungst amount an and another any anyhow anyone anything
    anyway anywhere are around as at back be became because become becomes becoming been before
    beforehand behind being below beside besides between beyond bill both bottom but by call can
    cannot cant co con could couldnt cry de describe detail do done down due during each eg
    eight either eleven else elsewhere empty enough etc even ever every everyone everything
    everywhere except few fifteen fifty fill find fire first five for former formerly forty
    found four from front full further get give go had has hasnt have he hence her here
    hereafter hereby herein hereupon hers herself him himself his how however hundred i ie if in
    inc indeed interest into is it its itself keep last latter latterly least less ltd made many
    may me meanwhile might mill mine more moreover most mostly move much must my myself name
    namely neither never nevertheless next nine no nobody none noone nor not nothing now nowhere
    of off often on once one only onto or other others otherwise our ours ourselves out over own
    part per perhaps please put rather re same see seem seemed seeming seems serious several she
    should show side since sincere six sixty so some somehow someone something sometime
    sometimes somewhere still such system take ten than that the their them themselves then
    thence there thereafter thereby therefore therein thereupon these they thick thin third this
    those though three through throughout thru thus to together too top toward towards twelve
    twenty two un under until up upon us very via was we well were what whatever when whence
    whenever where whereafter whereas whereby wherein whereupon wherever whether which while
    whither who whoever whole whom whose why will with within without would yet you your yours
    yourself yourselves
""".split())

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
_OPENERS_LABEL_WORDS = normalised_words(OPENERS_LABEL)
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


_NOT_CONTENT = ENGLISH_STOP_WORDS | CHAT_FILLER_WORDS


def is_content_word(word: str) -> bool:
    """A normalised word that can carry a fact: a number, or 3+ characters and no stop/filler word."""
    return word.isdigit() or (len(word) >= 3 and word not in _NOT_CONTENT)


def keywords(text: str, max_words: int, avoid: AbstractSet[tuple[str, ...]] = frozenset(),
             n: int = LEAK_NGRAM) -> list[str]:
    """Distinct content words of ``text`` in order of first appearance, at most ``max_words``.

    A word that would complete, with the words already picked, an n-gram in ``avoid`` is skipped,
    so ``", ".join(result)`` never holds a span of the texts ``avoid`` was made from.
    """
    return _pick_keywords(normalised_words(text), max_words, avoid, n)


def _pick_keywords(words: Iterable[str], max_words: int, avoid: AbstractSet[tuple[str, ...]], n: int) -> list[str]:
    """:func:`keywords` of a text's normalised words."""
    picked: list[str] = []
    for word in dict.fromkeys(words):
        if len(picked) >= max_words:
            break
        if not (word.isdigit() or (len(word) >= 3 and word not in _NOT_CONTENT)):  # is_content_word
            continue
        if len(picked) >= n - 1 and tuple(picked[len(picked) - n + 1:] + [word]) in avoid:
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
    return set(map(str.lower, _WORD.findall(text)))


def rank_typical_openers(openers: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """``(conversation_id, opener)`` pairs, most typical first (mean Jaccard with the others)."""
    bags = [_words(t) for _, t in openers]
    k = len(bags)
    sims = [[0.0] * k for _ in range(k)]  # Jaccard is symmetric: each pair is computed once
    for i in range(k):
        for j in range(i + 1, k):
            inter = len(bags[i] & bags[j])
            union = len(bags[i]) + len(bags[j]) - inter
            sims[i][j] = sims[j][i] = inter / union if union else 0.0

    def score(i: int) -> float:
        if k < 2:
            return 0.0
        return sum([sims[i][j] for j in range(k) if j != i]) / (k - 1)

    order = sorted(range(k), key=lambda i: (-score(i), openers[i][1], openers[i][0]))
    return [openers[i] for i in order]


def persona_from_history(ranked_openers: Sequence[tuple[str, str]], exclude_conversation_id: str,
                         n_turns: int, max_chars: int = 60) -> str:
    """The user's most typical openers from their *other* training conversations."""
    picked: list[str] = []
    seen: set[str] = set()
    for cid, text in ranked_openers:
        key = opener_key(text)
        if cid == exclude_conversation_id or key in seen:
            continue
        seen.add(key)
        picked.append(clip(text, max_chars))
        if len(picked) >= n_turns:
            break
    return format_openers(picked)


def opener_key(text: str) -> str:
    """What makes two openers the same for the persona ("Hello!" and "hello?" are one opener)."""
    return " ".join(_WORD.findall(text)).lower()  # (the words are ASCII: lower-casing them is per letter)


def persona_head(ranked_openers: Sequence[tuple[str, str]], n_turns: int,
                 max_chars: int = 60) -> list[tuple[str, int, str]]:
    """All that :func:`persona_from_history` reads of one user's ranked openers, for any excluded
    conversation: ``(conversation id, opener class, shown text)`` of the head entries, where
    entries of one class have the same :func:`opener_key` and the shown text is the opener
    clipped to ``max_chars``. :func:`persona_from_head` then gives the history.

    Excluding one conversation removes its entries only, so the first ``n_turns`` distinct
    openers of what is left lie within the entries up to the first one of the ``n_turns + 1``-th
    distinct opener (the head) when ids do not repeat. A list whose ids repeat (a corpus that
    reuses ids) is kept whole."""
    keys = [opener_key(text) for _, text in ranked_openers]
    ids = [cid for cid, _ in ranked_openers]
    end = len(keys)
    if len(set(ids)) == len(ids):
        distinct: set[str] = set()
        for i, key in enumerate(keys):
            distinct.add(key)
            if len(distinct) > max(1, n_turns):  # persona_from_history picks at least one
                end = i + 1
                break
    classes: dict[str, int] = {}
    return [(ids[i], classes.setdefault(keys[i], len(classes)), clip(ranked_openers[i][1], max_chars))
            for i in range(end)]


def persona_from_head(head: Sequence[tuple[str, int, str]], exclude_conversation_id: str | None,
                      n_turns: int) -> str:
    """:func:`persona_from_history` of the ranked openers ``head`` was made from (see :func:`persona_head`)."""
    picked: list[str] = []
    seen: set[int] = set()
    for cid, cls, shown in head:
        if cid == exclude_conversation_id or cls in seen:
            continue
        seen.add(cls)
        picked.append(shown)
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

def goal_from_conversation(conv: Conversation, max_chars: int,
                           avoid: AbstractSet[tuple[str, ...]] | None = None,
                           first_words: Sequence[str] | None = None) -> str:
    """Corpus goal metadata, else the keywords of the first user turn ("" when it has none).

    ``avoid``: ``ngram_set`` of the user turns, ``first_words``: the normalised words of the first
    one, when the caller has them already."""
    for key in GOAL_METADATA_KEYS:
        value = conv.metadata.get(key)
        if isinstance(value, str) and value.strip():
            return clip(value, max_chars)
    users = conv.user_turns()
    if not users:
        return ""
    avoid = ngram_set(users) if avoid is None else avoid
    words = normalised_words(users[0]) if first_words is None else first_words
    return clip(", ".join(_pick_keywords(words, GOAL_KEYWORDS, avoid, LEAK_NGRAM)), max_chars)


# ---- knowledge -----------------------------------------------------------------------------

def keyword_items(found: Iterable[str], user_turns: Sequence[str], max_items: int, max_chars: int,
                  avoid: AbstractSet[tuple[str, ...]] | None = None) -> list[str]:
    """One ``"word, word"`` item per sentence of ``found`` (sentences without content words give
    none), distinct, in order; no item holds a 4-word span of ``user_turns`` (``avoid``: their
    ``ngram_set``, when the caller has it already)."""
    avoid = ngram_set(user_turns) if avoid is None else avoid
    items = (", ".join(keywords(s, KEYWORDS_PER_ITEM, avoid)) for s in found)
    return _unique((clip(it, max_chars) for it in items if it), max_items)


def _is_disclosure(sentence: str) -> bool:
    return _DISCLOSURE.match(sentence) is not None and not sentence.endswith("?")


def _is_question(sentence: str) -> bool:
    return sentence.endswith("?") and len(sentence.split()) >= 2


def knowledge_discloses(user_turns: Sequence[str], max_items: int, max_chars: int,
                        avoid: AbstractSet[tuple[str, ...]] | None = None) -> list[str]:
    """Keywords of the first-person declarative sentences, in order of appearance."""
    found = (s for t in user_turns for s in sentences(t) if _is_disclosure(s))
    return keyword_items(found, user_turns, max_items, max_chars, avoid)


def knowledge_asks(user_turns: Sequence[str], max_items: int, max_chars: int,
                   avoid: AbstractSet[tuple[str, ...]] | None = None) -> list[str]:
    """Topic keywords of the question sentences (ending in '?', at least two words), in order."""
    found = (s for t in user_turns for s in sentences(t) if _is_question(s))
    return keyword_items(found, user_turns, max_items, max_chars, avoid)


# ---- all fields ----------------------------------------------------------------------------

def abstract_goal(goal: str, avoid: AbstractSet[tuple[str, ...]], n: int = LEAK_NGRAM) -> str:
    """The keywords of ``goal`` (none completing an n-gram of ``avoid``), comma-joined."""
    return ", ".join(keywords(goal, GOAL_KEYWORDS, avoid, n))


@lru_cache(maxsize=1 << 14)
def _piece_words(text: str) -> list[str]:
    """normalised_words of a persona part or opener (these repeat: a user's openers, countries);
    the list is never changed by its callers."""
    return normalised_words(text)


def scrub_condition(condition: Condition, user_turns: Sequence[str], n: int = LEAK_NGRAM,
                    counts: Counter | None = None, avoid: AbstractSet[tuple[str, ...]] | None = None) -> Condition:
    """``condition`` whose :func:`~usersim.data_prep.leakage.condition_text` shares no ``n``-word span
    with any of ``user_turns`` (``avoid``: their ``ngram_set(user_turns, n)``, when the caller has
    it already).

    Items are taken in the order of the condition text (persona metadata parts, persona openers,
    goal, knowledge_discloses, knowledge_asks) and each is kept only when the text built so far
    plus the item is still clean, so a span across two items is caught too. A goal that does not
    fit is replaced by its keywords when those fit (else dropped); any other item that does not fit
    is dropped. ``counts[field]`` grows by the number of items scrubbed (dropped or abstracted).

    How it is checked without rebuilding the text for every item: the condition text joins items
    with line breaks, and the persona its parts, label and openers with ``; ``, ``: "`` and
    ``" | "``; each separator ends words (and the lower-casing context), so the text's words are
    the pieces' words one after another. The text built so far is clean, so text + piece is clean
    exactly when no n-gram of (its last n - 1 words + the piece's words) is a user n-gram.
    """
    avoid = ngram_set(user_turns, n) if avoid is None else avoid
    keep = max(0, n - 1)  # words of the text so far that an n-gram ending in the next item can use
    tail: list[str] = []

    def fits(words: list[str]) -> list[str] | None:
        """The new tail if ``words`` can follow the text so far, else None."""
        words = tail + words
        if not avoid.isdisjoint(word_ngrams_of(words, n)):
            return None
        return words[-keep:] if keep else []

    # The persona's words are its parts' words, then (with openers) the label's and the openers'.
    parts, openers = split_persona(condition.persona)
    kept_parts: list[str] = []
    kept_openers: list[str] = []
    for part in parts:
        new_tail = fits(_piece_words(part))
        if new_tail is not None:
            kept_parts.append(part)
            tail = new_tail
    for opener in openers:
        new_tail = fits((_OPENERS_LABEL_WORDS if not kept_openers else []) + _piece_words(opener))
        if new_tail is not None:
            kept_openers.append(opener)
            tail = new_tail
    out = Condition(persona=join_persona(kept_parts, kept_openers), style=dict(condition.style))

    for goal in (condition.goal, None):
        goal = abstract_goal(condition.goal, avoid, n) if goal is None else goal
        new_tail = fits(normalised_words(goal)) if goal else None
        if new_tail is not None:
            out.goal, tail = goal, new_tail
            break
    for item in condition.knowledge_discloses:
        new_tail = fits(normalised_words(item))
        if new_tail is not None:
            out.knowledge_discloses.append(item)
            tail = new_tail
    for item in condition.knowledge_asks:
        new_tail = fits(normalised_words(item))
        if new_tail is not None:
            out.knowledge_asks.append(item)
            tail = new_tail
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
    words = [normalised_words(t) for t in users]
    avoid = ngram_set_of_words(words)  # the user's n-grams, shared by the keyword pickers and the scrub
    discloses: list[str] = []
    asks: list[str] = []
    if cfg.knowledge:
        split = [s for t in users for s in sentences(t)]
        discloses = keyword_items((s for s in split if _is_disclosure(s)), users, cfg.max_knowledge_items,
                                  cfg.max_item_chars, avoid)
        asks = keyword_items((s for s in split if _is_question(s)), users, cfg.max_knowledge_items,
                             cfg.max_item_chars, avoid)
    condition = Condition(
        persona=build_persona(conv.metadata, persona_history) if cfg.persona else "",
        goal=goal_from_conversation(conv, cfg.max_item_chars, avoid, words[0] if words else None) if cfg.goal else "",
        knowledge_discloses=discloses,
        knowledge_asks=asks,
        style=style_buckets(users) if cfg.style else {},
    )
    return scrub_condition(condition, users, counts=scrubbed, avoid=avoid)
