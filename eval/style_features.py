"""Measurable per-text features: length, questions, casing, punctuation, emoji, typos, politeness.

All pure functions of one string. They feed the behavioural statistics, the fast discriminator's
style features, the style buckets used for drift and controllability, and the bring-your-own
simulator scoring. The typo rate is a *proxy* (no spell-checker is available offline): see
:func:`typo_count`.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

WORD_RE = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")
LETTER_RE = re.compile(r"[A-Za-z]")
PUNCT_RE = re.compile(r"[.,!?;:\-()\"…]")
# Emoji and pictographs (Misc Symbols & Pictographs, Emoticons, Transport, Supplemental, Dingbats)
# plus ASCII emoticons such as :) ;-) :D <3.
EMOJI_RE = re.compile(
    "[\U0001F300-\U0001FAFF\U00002600-\U000027BF\U0001F000-\U0001F2FF]"
    r"|(?:[:;=8][\-o']?[)(\]\[dDpP/\\|])|<3"
)
SENTENCE_RE = re.compile(r"[^.!?\n]+[.!?]*")
QUESTION_WORDS = ("what", "why", "how", "when", "where", "who", "which", "whose", "whom", "do", "does",
                  "did", "is", "are", "can", "could", "would", "should", "will", "have", "has", "am")
# Typo proxy: contractions written without the apostrophe, lower-case "i" as a word, a letter
# repeated 3+ times ("sooo"), and a short list of frequent chat misspellings.
APOSTROPHELESS = frozenset({"dont", "cant", "wont", "didnt", "doesnt", "isnt", "arent", "wasnt", "werent",
                            "im", "ive", "youre", "theyre", "thats", "whats", "hes", "shes", "couldnt",
                            "wouldnt", "shouldnt", "havent", "hasnt", "ill", "id", "lets"})
MISSPELLINGS = frozenset({"teh", "recieve", "definately", "seperate", "occured", "wierd", "untill", "thier",
                          "alot", "becuase", "beacuse", "freind", "goverment", "tommorow", "tomorow",
                          "realy", "probaly", "knwo", "waht", "jsut", "taht", "becasue", "whcih", "u",
                          "ur", "pls", "plz", "thx", "ya", "gonna", "wanna", "dunno"})
REPEATED_LETTER_RE = re.compile(r"([a-z])\1\1")
POLITENESS_RE = re.compile(
    r"\b(please|pls|plz|thanks|thank you|thank u|thx|sorry|apologi[sz]e|appreciate|kindly|"
    r"could you|would you|would you mind|excuse me|cheers)\b", re.IGNORECASE)


def words(text: str) -> list[str]:
    return WORD_RE.findall(text)


def content_tokens(text: str) -> set[str]:
    """Lower-cased word tokens of 3+ characters that are not English stop words."""
    return {w.lower() for w in words(text) if len(w) >= 3 and w.lower() not in ENGLISH_STOP_WORDS}


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_RE.findall(text) if s.strip()]


def is_question_sentence(sentence: str) -> bool:
    s = sentence.strip()
    if s.endswith("?"):
        return True
    first = s.split(" ", 1)[0].lower() if s else ""
    return first in QUESTION_WORDS[:9] and not s.endswith((".", "!"))


def has_question(text: str) -> bool:
    return "?" in text or any(is_question_sentence(s) for s in sentences(text))


def emoji_count(text: str) -> int:
    return len(EMOJI_RE.findall(text))


def typo_count(text: str) -> int:
    """Typo *proxy* per text (see module docstring); counts words, not characters."""
    n = 0
    for w in words(text):
        lw = w.lower()
        if lw in APOSTROPHELESS or lw in MISSPELLINGS or REPEATED_LETTER_RE.search(lw) or w == "i":
            n += 1
    return n


def politeness_count(text: str) -> int:
    return len(POLITENESS_RE.findall(text))


def casing_bucket(text: str) -> str:
    """``lower`` (no capitals), ``upper`` (mostly capitals), ``proper`` (capitalised sentences), ``mixed``."""
    letters = LETTER_RE.findall(text)
    if not letters:
        return "lower"
    upper = sum(c.isupper() for c in letters)
    if upper == 0:
        return "lower"
    if upper / len(letters) > 0.6 and len(letters) >= 4:
        return "upper"
    firsts = [s.lstrip("\"'(")[:1] for s in sentences(text)]
    firsts = [c for c in firsts if c.isalpha()]
    if firsts and all(c.isupper() for c in firsts):
        return "proper"
    return "mixed"


def text_features(text: str) -> dict[str, float]:
    """Numeric features of one turn (the vector behind statistics and the fast discriminator)."""
    ws = words(text)
    n_words = len(ws)
    letters = LETTER_RE.findall(text)
    return {
        "n_words": float(n_words),
        "n_chars": float(len(text)),
        "question": float(has_question(text)),
        "upper_ratio": (sum(c.isupper() for c in letters) / len(letters)) if letters else 0.0,
        "punct_per_word": len(PUNCT_RE.findall(text)) / max(n_words, 1),
        "ends_with_punct": float(text.rstrip()[-1:] in ".!?") if text.strip() else 0.0,
        "emoji": float(emoji_count(text) > 0),
        "typo_rate": typo_count(text) / max(n_words, 1),
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


def style_buckets(text: str) -> dict[str, str]:
    """The style buckets of one turn, keyed and valued like the condition's ``style`` (STYLE_KEYS).

    Uses ``data_prep.conditioning.style_buckets([text])`` (the ruler data_prep conditions with) when
    that module is present; otherwise :func:`local_style_buckets`.
    """
    shared = _shared_bucket_fn()
    if shared is not None:
        return {k: str(v) for k, v in shared([text]).items()}
    return local_style_buckets(text)


def local_style_buckets(text: str) -> dict[str, str]:
    """Fallback buckets: length short<=8 words<medium<=30<long; punctuation none/light/heavy by marks per
    word; emoji none/some; typos none/some (the typo proxy above)."""
    f = text_features(text)
    n = f["n_words"]
    ppw = f["punct_per_word"]
    return {
        "length": "short" if n <= 8 else ("medium" if n <= 30 else "long"),
        "casing": casing_bucket(text),
        "punctuation": "none" if ppw == 0 else ("light" if ppw <= 0.15 else "heavy"),
        "emoji": "some" if f["emoji"] else "none",
        "typos": "some" if f["typo_rate"] > 0 else "none",
    }


@lru_cache(maxsize=1)
def _shared_bucket_fn():
    try:
        from data_prep.conditioning import style_buckets as shared
    except ImportError:
        return None
    return shared
