"""The style ruler: words, sentences, emoji, typos, punctuation and casing, and the style buckets.

This is the only definition of style in usersim. ``usersim.data_prep.conditioning`` writes a conversation's
``style`` condition with :func:`style_buckets` over the user's turns; eval measures a turn with
:func:`turn_style` and ``style_buckets([turn])`` (style mismatch, drift, controllability) and builds
its behavioural statistics from the same counts. A text therefore gets the same buckets whether it
is conditioned on or measured. Every threshold lives in :data:`STYLE_THRESHOLDS`.

Per turn (:func:`turn_style`):

- words: runs of letters or digits, with inner apostrophes ("don't" is one word, "😀" and "-" none);
- punctuation: the marks in :data:`PUNCTUATION_MARKS` (sentence punctuation; apostrophes are
  spelling, and symbols such as ``$ % @ / #`` belong to prices, URLs and tags, not to style);
- emoji: pictographs and dingbats, plus ASCII emoticons (``:) ;-) :D =P <3``) that stand alone,
  so times (10:30), URLs (http://) and numbered items (8)) are not emoticons;
- typos: a proxy (no spell-checker offline): apostrophe-less contractions (dont, im), chat
  spellings (u, ur, pls, gonna), frequent misspellings (teh, recieve) and a letter typed three
  times in a row (sooo); a lone lower-case "i" is casing, not spelling, and is not counted;
- casing: ``lower`` (no capital letter; also a turn without cased letters), ``upper`` (mostly
  capitals), ``proper`` (every sentence starts with a capital), else ``mixed``.

Over a conversation's user turns (:func:`style_buckets`): length is the mean words per turn,
punctuation and typos are per word over all turns, emoji is whether any turn has one, casing is the
class that at least a given share of the lettered turns has.
"""

from __future__ import annotations

import re
import string
from typing import Any, NamedTuple, Sequence

STYLE_THRESHOLDS: dict[str, Any] = {
    # mean words per user turn: < short_below -> short, < long_from -> medium, else long
    "length": {"short_below": 8.0, "long_from": 25.0},
    # a turn is upper when >= upper_letter_share of its (>= upper_min_letters) cased letters are capitals;
    # the turns' bucket is lower/upper/proper when >= turn_share of the lettered turns are
    "casing": {"upper_letter_share": 0.6, "upper_min_letters": 4, "turn_share": 0.7},
    # punctuation marks per word: 0 -> none, < heavy_from -> light, else heavy
    "punctuation": {"heavy_from": 0.2},
    # any emoji or emoticon -> some
    "emoji": {},
    # typo-proxy words per word: 0 -> none, < many_from -> some, else many
    "typos": {"many_from": 0.05},
}

WORD_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_ASCII_WORD_RE = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z0-9]+)*")  # WORD_RE on ASCII text, faster
# A sentence ends at . ! ? or … followed by white space, or at a line break ("3.5" and "a.com" do not end one).
SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?…])\s+|\n+")
# Where a sentence's first character is, past white space and opening quotes or brackets: after the
# text's start or a split point (with the end mark taken too, which changes no sentence's start).
_SENTENCE_FIRST_RE = re.compile(r"(?:^|[.!?…]\s+|\n+)\s*[\"'“‘(\[]*(?=(.))", re.DOTALL)
PUNCTUATION_MARKS = ".,!?;:()\"…“”-–—"
PUNCTUATION_RE = re.compile("[" + re.escape(PUNCTUATION_MARKS) + "]")
_PICTOGRAPHS = "\U0001F000-\U0001FAFF\u2600-\u27BF\u2B50\u2B55"
_MOUTH = r"[)(\]\[DPpOo3/\\|]"
# The definition: a pictograph, or an emoticon that stands alone.
EMOJI_RE = re.compile(
    f"[{_PICTOGRAPHS}]"
    rf"|(?<!\w)(?:[:;=][-']?|8-){_MOUTH}(?!\w)"
    r"|(?<!\w)<3(?!\d)"
)
# The same matches, found faster (see :func:`emoji_count`): pictographs apart (none in ASCII text), and
# emoticons with each branch led by its first character and the "stands alone" check moved after it.
_PICTOGRAPH_RE = re.compile(f"[{_PICTOGRAPHS}]")
_EMOTICON_RE = re.compile(rf"[:;=](?<!\w[:;=])[-']?{_MOUTH}(?!\w)|8(?<!\w8)-{_MOUTH}(?!\w)|<(?<!\w<)3(?!\d)")
APOSTROPHELESS = frozenset({
    "dont", "cant", "wont", "didnt", "doesnt", "isnt", "wasnt", "arent", "werent", "havent", "hasnt", "hadnt",
    "couldnt", "wouldnt", "shouldnt", "aint", "im", "ive", "youre", "youve", "youll", "theyre", "thats", "whats",
    "hes", "shes", "theres", "wheres",
})
CHAT_SPELLINGS = frozenset({
    "ur", "ya", "thx", "pls", "plz", "cuz", "coz", "tho", "thru", "gonna", "wanna", "gotta", "dunno", "idk",
})
# Single letters standing for a word; counted only as typed in lower case ("U.S." is not "u").
LETTER_WORDS = frozenset({"u", "r"})
LETTER_CAPS = tuple(w.upper() for w in LETTER_WORDS)
MISSPELLINGS = frozenset({
    "teh", "recieve", "definately", "seperate", "occured", "wierd", "untill", "thier", "alot", "becuase",
    "beacuse", "becasue", "freind", "goverment", "tommorow", "tomorow", "realy", "probaly", "knwo", "waht",
    "jsut", "taht", "whcih", "wat", "wut",
})
NON_STANDARD_SPELLINGS = APOSTROPHELESS | CHAT_SPELLINGS | MISSPELLINGS
ELONGATED_RE = re.compile(r"([^\W\d_])\1\1")  # a letter typed three times in a row
# Three of a word character in a row in any case: every text with a word that ELONGATED_RE finds
# (lower-cased) holds them; in ASCII text, three of a letter in the lower-cased text.
_TRIPLE_RE = re.compile(r"(\w)\1\1", re.IGNORECASE)
_ASCII_TRIPLE_RE = re.compile(r"([a-z])\1\1")
NOT_ELONGATED = frozenset({"www"})
_TYPOS_LOWERED = NON_STANDARD_SPELLINGS | LETTER_WORDS
_ASCII_UPPER, _ASCII_LOWER = string.ascii_uppercase.encode(), string.ascii_lowercase.encode()


class TurnStyle(NamedTuple):
    """The style counts of one turn."""

    words: int
    punctuation: int
    emoji: int
    typos: int
    letters: int  # cased letters
    capitals: int
    casing: str  # lower / upper / proper / mixed


def words(text: str) -> list[str]:
    return (_ASCII_WORD_RE if text.isascii() else WORD_RE).findall(text)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENTENCE_SPLIT_RE.split(text) if s and s.strip()]


def emoji_count(text: str) -> int:
    """``len(EMOJI_RE.findall(text))``, faster. Matches never overlap: a pictograph is one non-ASCII
    character, an emoticon is ASCII, and no character after an emoticon's first can start one. So the
    two kinds can be counted apart, each skipped when the text cannot hold it."""
    n = 0
    if ":" in text or ";" in text or "=" in text or "8-" in text or "<3" in text:
        n = len(_EMOTICON_RE.findall(text))
    if not text.isascii():
        n += len(_PICTOGRAPH_RE.findall(text))
    return n


def is_typo(word: str) -> bool:
    """Whether one word (as :func:`words` returns it) counts for the typo proxy."""
    if len(word) == 1:
        return word in LETTER_WORDS
    lw = word.lower()
    return lw in NON_STANDARD_SPELLINGS or (lw not in NOT_ELONGATED and ELONGATED_RE.search(lw) is not None)


def _typo_count(text: str, text_words: list[str]) -> int:
    """How many of ``text_words`` (the words of ``text``) count for the typo proxy: :func:`is_typo`, faster.

    The lexicon decides every word but elongated ones: a one-letter word is a typo when it is "u" or "r"
    (its lower case is in the lexicon and it is not "U" or "R"); a longer word when its lower case is in
    the lexicon. Elongated words outside the lexicon are then added, each distinct word checked once."""
    n = sum(map(_TYPOS_LOWERED.__contains__, map(str.lower, text_words)))
    n -= sum(map(text_words.count, LETTER_CAPS))  # "U" and "R" are not typos
    if (_ASCII_TRIPLE_RE.search(text.lower()) if text.isascii() else _TRIPLE_RE.search(text)):
        for word in set(text_words):
            lw = word.lower()
            if (len(word) > 1 and lw not in NON_STANDARD_SPELLINGS and lw not in NOT_ELONGATED
                    and ELONGATED_RE.search(lw)):
                n += text_words.count(word)
    return n


def _casing(text: str, letters: int, capitals: int) -> str:
    th = STYLE_THRESHOLDS["casing"]
    if capitals == 0:
        return "lower"
    if letters >= th["upper_min_letters"] and capitals / letters >= th["upper_letter_share"]:
        return "upper"
    # proper: every sentence that starts with a letter (at least one) starts with a capital
    lettered = False
    for start in _SENTENCE_FIRST_RE.finditer(text):
        first = start.group(1)
        if first.isalpha():
            if not first.isupper():
                return "mixed"
            lettered = True
    return "proper" if lettered else "mixed"


def _capitals_and_letters(text: str) -> tuple[int, int]:
    """(upper-case letters, cased letters) of ``text``."""
    if text.isascii():  # bytes.translate deletes in C: much faster than a Python loop
        raw = text.encode("ascii")
        capitals = len(raw) - len(raw.translate(None, _ASCII_UPPER))
        return capitals, capitals + len(raw) - len(raw.translate(None, _ASCII_LOWER))
    capitals = sum(map(str.isupper, text))
    return capitals, capitals + sum(map(str.islower, text))


def turn_style(text: str) -> TurnStyle:
    ws = words(text)
    capitals, letters = _capitals_and_letters(text)
    return TurnStyle(
        words=len(ws),
        punctuation=len(PUNCTUATION_RE.findall(text)),
        emoji=emoji_count(text),
        typos=_typo_count(text, ws),
        letters=letters,
        capitals=capitals,
        casing=_casing(text, letters, capitals),
    )


def length_bucket(styles: Sequence[TurnStyle]) -> str:
    th = STYLE_THRESHOLDS["length"]
    mean = sum(s.words for s in styles) / max(1, len(styles))
    return "short" if mean < th["short_below"] else "medium" if mean < th["long_from"] else "long"


def casing_bucket(styles: Sequence[TurnStyle]) -> str:
    lettered = [s.casing for s in styles if s.letters]
    if not lettered:
        return "lower"
    for bucket in ("lower", "upper", "proper"):
        if lettered.count(bucket) / len(lettered) >= STYLE_THRESHOLDS["casing"]["turn_share"]:
            return bucket
    return "mixed"


def _per_word_bucket(count: int, styles: Sequence[TurnStyle], high_from: float, names: tuple[str, str, str]) -> str:
    """``names[0]`` when ``count`` is 0, ``names[2]`` when it is >= ``high_from`` per word, else ``names[1]``."""
    if count == 0:
        return names[0]
    return names[2] if count / max(1, sum(s.words for s in styles)) >= high_from else names[1]


def punctuation_bucket(styles: Sequence[TurnStyle]) -> str:
    return _per_word_bucket(sum(s.punctuation for s in styles), styles,
                            STYLE_THRESHOLDS["punctuation"]["heavy_from"], ("none", "light", "heavy"))


def emoji_bucket(styles: Sequence[TurnStyle]) -> str:
    return "some" if any(s.emoji for s in styles) else "none"


def typo_bucket(styles: Sequence[TurnStyle]) -> str:
    return _per_word_bucket(sum(s.typos for s in styles), styles, STYLE_THRESHOLDS["typos"]["many_from"],
                            ("none", "some", "many"))


def style_buckets(user_turns: Sequence[str]) -> dict[str, str]:
    """The bucket of every style key (usersim.data_prep.prompt_format.STYLE_KEYS) over ``user_turns``."""
    if isinstance(user_turns, str):  # a str is a sequence of one-character "turns"
        raise TypeError("style_buckets takes a list of turns, got one string; use style_buckets([text])")
    return buckets_of([turn_style(t) for t in user_turns])


def buckets_of(styles: Sequence[TurnStyle]) -> dict[str, str]:
    """:func:`style_buckets` from the turns' :func:`turn_style` counts (reuse them across subsets of turns)."""
    return {
        "length": length_bucket(styles),
        "casing": casing_bucket(styles),
        "punctuation": punctuation_bucket(styles),
        "emoji": emoji_bucket(styles),
        "typos": typo_bucket(styles),
    }
