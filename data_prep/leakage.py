"""Copying from the condition: word n-grams shared between a user turn and a condition.

The single definition of "the condition hands the model the target's wording" (DESIGN.md "No
oracle conditions"). Text is compared on *normalised words*: lower-cased, apostrophes removed
("Don't" -> "dont"), every other non-alphanumeric character a word break. A span of ``n``
consecutive normalised words is an n-gram; the default ``n=4`` is the leak unit.

usersim.data_prep.conditioning uses these functions to scrub conditions; eval imports :func:`copy_rate`
to report how much of each turn (human or generated) is found in its condition.
"""

from __future__ import annotations

import re
from typing import AbstractSet, Iterable, Sequence

from usersim.data_prep.prompt_format import Condition

LEAK_NGRAM = 4  # a condition item may not share a span of this many words with a user turn

_APOSTROPHES = re.compile(r"['\u2018\u2019\u02bc`]")
_WORD = re.compile(r"[^\W_]+")  # runs of letters/digits (any script); everything else separates words


def normalised_words(text: str) -> list[str]:
    """Lower-cased words of ``text`` with punctuation stripped ("Don't stop, Rex!" -> dont, stop, rex)."""
    return _WORD.findall(_APOSTROPHES.sub("", text.lower()))


def word_ngrams_of(words: Sequence[str], n: int = LEAK_NGRAM) -> list[tuple[str, ...]]:
    """Every span of ``n`` consecutive items of ``words``, in order (repeats kept)."""
    if n == 4:
        return list(zip(words, words[1:], words[2:], words[3:]))
    if n < 1:
        return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return list(zip(*(words[i:] for i in range(n))))


def word_ngrams(text: str, n: int = LEAK_NGRAM) -> list[tuple[str, ...]]:
    """Every span of ``n`` consecutive normalised words of ``text``, in order (repeats kept)."""
    return word_ngrams_of(normalised_words(text), n)


def ngram_set(texts: Iterable[str], n: int = LEAK_NGRAM) -> set[tuple[str, ...]]:
    """The n-grams of each text, united; n-grams never span two texts."""
    return ngram_set_of_words((normalised_words(t) for t in texts), n)


def ngram_set_of_words(word_lists: Iterable[Sequence[str]], n: int = LEAK_NGRAM) -> set[tuple[str, ...]]:
    """:func:`ngram_set` of texts given as their normalised words."""
    out: set[tuple[str, ...]] = set()
    for w in word_lists:
        out.update(zip(w, w[1:], w[2:], w[3:]) if n == 4 else word_ngrams_of(w, n))
    return out


def shared_spans(text: str, reference: str, n: int = LEAK_NGRAM) -> list[str]:
    """The distinct n-grams of ``text`` that also occur in ``reference``, in order of first
    appearance in ``text``, each as its normalised words joined by one space."""
    ref = set(word_ngrams(reference, n))
    return list(dict.fromkeys(" ".join(g) for g in word_ngrams(text, n) if g in ref))


def shares_span(text: str, reference: AbstractSet[tuple[str, ...]], n: int = LEAK_NGRAM) -> bool:
    """True when some n-gram of ``text`` is in ``reference`` (a precomputed :func:`ngram_set`)."""
    return not reference.isdisjoint(word_ngrams(text, n))


def condition_items(condition: Condition) -> list[str]:
    """The free-text fields of ``condition``: persona, goal, then each knowledge item (empty ones
    left out). Style is left out: it is bucket names (``length=short``), never a user's words."""
    fields = [condition.persona, condition.goal, *condition.knowledge_discloses, *condition.knowledge_asks]
    return [f for f in fields if f]


def condition_text(condition: Condition) -> str:
    """:func:`condition_items` as one text, one item per line. Its n-grams run across lines, so a
    span made of the end of one item and the start of the next counts as found in the condition."""
    return "\n".join(condition_items(condition))


def copy_rate(turn: str, condition: Condition, n: int = LEAK_NGRAM) -> float | None:
    """Share of ``turn``'s word n-grams (counted with repeats) found in :func:`condition_text`.

    None when the turn has fewer than ``n`` words (no n-gram, so nothing could be copied); 0.0
    when none of its n-grams is in the condition, 1.0 when all are. A condition row (dict) is
    read with ``Condition.from_row`` first.
    """
    grams = word_ngrams(turn, n)
    if not grams:
        return None
    reference = set(word_ngrams(condition_text(condition), n))
    return sum(g in reference for g in grams) / len(grams)
