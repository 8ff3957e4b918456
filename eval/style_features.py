"""Per-turn features for eval: the style counts of usersim.data_prep.style, questions and politeness.

All pure functions of one string. They feed the behavioural statistics and the fast judge's
features. Words, sentences, emoji, typos, punctuation and casing come from usersim.data_prep.style, the one
style ruler, which also writes the training conditions and measures style mismatch and drift.
"""

from __future__ import annotations

import re

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from usersim.data_prep.style import sentences, turn_style, words

# A sentence opening with one of these and not ending in . or ! is a question even without "?".
QUESTION_WORDS = ("what", "why", "how", "when", "where", "who", "which", "whose", "whom")
POLITENESS_RE = re.compile(
    r"\b(please|pls|plz|thanks|thank you|thank u|thx|sorry|apologi[sz]e|appreciate|kindly|"
    r"could you|would you|would you mind|excuse me|cheers)\b", re.IGNORECASE)


def content_tokens(text: str) -> set[str]:
    """Lower-cased word tokens of 3+ characters that are not English stop words."""
    return {w.lower() for w in words(text) if len(w) >= 3 and w.lower() not in ENGLISH_STOP_WORDS}


def is_question_sentence(sentence: str) -> bool:
    s = sentence.strip()
    if s.endswith("?"):
        return True
    first = s.split(" ", 1)[0].lower() if s else ""
    return first in QUESTION_WORDS and not s.endswith((".", "!"))


def has_question(text: str) -> bool:
    return "?" in text or any(is_question_sentence(s) for s in sentences(text))


def politeness_count(text: str) -> int:
    return len(POLITENESS_RE.findall(text))


def text_features(text: str) -> dict[str, float]:
    """Numeric features of one turn (the vector behind statistics and the fast discriminator); the
    style ones are usersim.data_prep.style's counts, so they agree with the style buckets."""
    style = turn_style(text)
    per_word = max(style.words, 1)
    return {
        "n_words": float(style.words),
        "n_chars": float(len(text)),
        "question": float(has_question(text)),
        "upper_ratio": style.capitals / style.letters if style.letters else 0.0,
        "punct_per_word": style.punctuation / per_word,
        "ends_with_punct": float(text.rstrip()[-1:] in ".!?") if text.strip() else 0.0,
        "emoji": float(style.emoji > 0),
        "typo_rate": style.typos / per_word,
        "politeness": float(politeness_count(text) > 0),
        "newlines": float(text.count("\n")),
    }


FEATURE_NAMES = tuple(text_features("x"))


def feature_matrix(texts: list[str]) -> np.ndarray:
    """Rows of :func:`text_features` (log-scaled counts), for classifiers."""
    rows = []
    for t in texts:
        f = text_features(t)
        f["n_words"] = float(np.log1p(f["n_words"]))
        f["n_chars"] = float(np.log1p(f["n_chars"]))
        f["newlines"] = float(np.log1p(f["newlines"]))
        rows.append([f[k] for k in FEATURE_NAMES])
    return np.asarray(rows, dtype=float).reshape(len(texts), len(FEATURE_NAMES))
