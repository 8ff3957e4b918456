"""Behavioural statistics of user turns, and their distance to the held-out humans.

Every statistic is computed for the humans and for each system on the *same* held-out items, with
a 95% CI from resampling users (usersim.eval.bootstrap). Distances: Wasserstein-1 for continuous per-turn
features, Jensen-Shannon divergence (base 2, in [0, 1]) for categorical ones, the two-sample KS
statistic for turn length, absolute difference for corpus-level statistics (MATTR, distinct-2).
A system's turn is ``None`` where it has no text (it ended the conversation, or the human did).
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Sequence

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp, wasserstein_distance

from usersim.data_prep.style import turn_style, words
from usersim.eval.bootstrap import abs_difference_by_user, bootstrap_by_user
from usersim.eval.registry import HUMAN, Metric
from usersim.eval.style_features import text_features

MATTR_WINDOW = 25


# ---------------------------------------------------------------- distances (pure)
def wasserstein(a: Sequence[float], b: Sequence[float]) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size == 0 or b.size == 0:
        return float("nan")
    return float(wasserstein_distance(a, b))


def ks_statistic(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return float(ks_2samp(a, b).statistic)


def jsd(a: Sequence[str], b: Sequence[str]) -> float:
    """Jensen-Shannon divergence (base 2) between the category frequencies of ``a`` and ``b``."""
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    cats = sorted(set(a) | set(b))
    ca, cb = Counter(a), Counter(b)
    p = np.array([ca[c] for c in cats], float)
    q = np.array([cb[c] for c in cats], float)
    return float(jensenshannon(p / p.sum(), q / q.sum(), base=2) ** 2)


def mattr(tokens: Sequence[str], window: int = MATTR_WINDOW) -> float:
    """Moving-average type-token ratio (Covington & McFall 2010); plain TTR below one window."""
    toks = [t.lower() for t in tokens]
    if not toks:
        return float("nan")
    if len(toks) <= window:
        return len(set(toks)) / len(toks)
    counts = Counter(toks[:window])
    total = len(counts)
    for i in range(window, len(toks)):
        out, inn = toks[i - window], toks[i]
        counts[out] -= 1
        if counts[out] == 0:
            del counts[out]
        counts[inn] += 1
        total += len(counts)
    return total / (len(toks) - window + 1) / window


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct n-grams / all n-grams over ``texts`` (Li et al. 2016)."""
    grams = [g for t in texts for g in ngrams([w.lower() for w in words(t)], n)]
    return len(set(grams)) / len(grams) if grams else float("nan")


# ---------------------------------------------------------------- statistics table
class _Stat:
    def __init__(self, name: str, kind: str, extract: Callable[[str], object], distance: str, desc: str):
        self.name, self.kind, self.extract, self.distance, self.desc = name, kind, extract, distance, desc


STATS = (
    _Stat("turn_length", "continuous", lambda t: text_features(t)["n_words"], "wasserstein",
          "words per user turn"),
    _Stat("question_rate", "binary", lambda t: text_features(t)["question"], "jsd",
          "share of turns containing a question"),
    _Stat("casing_lower_rate", "categorical", lambda t: turn_style(t).casing, "jsd",
          "share of turns written without capitals; distance over casing buckets lower/proper/upper/mixed"),
    _Stat("punctuation_per_word", "continuous", lambda t: text_features(t)["punct_per_word"], "wasserstein",
          "punctuation marks per word"),
    _Stat("emoji_rate", "binary", lambda t: text_features(t)["emoji"], "jsd",
          "share of turns with an emoji or ASCII emoticon"),
    _Stat("typo_rate", "continuous", lambda t: text_features(t)["typo_rate"], "wasserstein",
          "typo proxy per word (usersim.data_prep.style: apostrophe-less contractions, chat spellings, letter x3, "
          "common misspellings)"),
    _Stat("politeness_rate", "binary", lambda t: text_features(t)["politeness"], "jsd",
          "share of turns with a politeness marker (please, thanks, sorry, could you, ...)"),
)


def _summary(kind: str, vals: list) -> float:
    if not vals:
        return float("nan")
    if kind == "categorical":
        return sum(v == "lower" for v in vals) / len(vals)
    return float(np.mean(np.asarray(vals, float)))


def _distance(kind: str, a: list, b: list) -> float:
    if kind == "continuous":
        return wasserstein(a, b)
    return jsd([str(v) for v in a], [str(v) for v in b])


def behaviour_metrics(
    human: Sequence[str | None],
    systems: dict[str, Sequence[str | None]],
    user_ids: Sequence[str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[Metric]:
    """Per-turn statistics for humans and each system, plus each system's distance to humans.

    All sequences are aligned item by item (same held-out items); ``None`` = no text for that item.
    """
    metrics: list[Metric] = []
    all_sys = {HUMAN: human, **systems}
    users = list(user_ids)
    for k, stat in enumerate(STATS):
        vals = {s: [None if t is None else stat.extract(t) for t in texts] for s, texts in all_sys.items()}

        def pick(system: str, ix: np.ndarray) -> list:
            v = vals[system]
            return [v[i] for i in ix if v[i] is not None]

        ref = None
        for s in all_sys:
            n = sum(v is not None for v in vals[s])
            value, lo, hi = bootstrap_by_user(users, lambda ix, s=s: _summary(stat.kind, pick(s, ix)),
                                              n_boot=n_boot, seed=seed + k)
            if s == HUMAN:
                ref = value
            metrics.append(Metric(stat.name, s, "behaviour", value, lo, hi, n, None, ref, None, stat.desc))
        for s in systems:
            n = sum(v is not None for v in vals[s])
            value, lo, hi = bootstrap_by_user(
                users, lambda ix, s=s: _distance(stat.kind, pick(s, ix), pick(HUMAN, ix)), n_boot=n_boot,
                seed=seed + k)
            metrics.append(Metric(f"{stat.name}_{stat.distance}", s, "behaviour", value, lo, hi, n, False, 0.0,
                                  0.0, f"{stat.distance} distance to the human turns: {stat.desc}"))
        if stat.name == "turn_length":
            for s in systems:
                value, lo, hi = bootstrap_by_user(
                    users, lambda ix, s=s: ks_statistic(pick(s, ix), pick(HUMAN, ix)), n_boot=n_boot, seed=seed)
                metrics.append(Metric("turn_length_ks", s, "behaviour", value, lo, hi,
                                      sum(v is not None for v in vals[s]), False, 0.0, 0.0,
                                      "two-sample Kolmogorov-Smirnov statistic of words per turn vs humans"))
    metrics.extend(_mattr_metrics(human, systems, users, n_boot=n_boot, seed=seed))
    return metrics


def _mattr_metrics(human, systems, users, *, n_boot, seed) -> list[Metric]:
    all_sys = {HUMAN: human, **systems}
    toks = {s: [None if t is None else words(t) for t in texts] for s, texts in all_sys.items()}

    def value_of(s: str, ix: np.ndarray) -> float:
        return mattr([w for i in ix if toks[s][i] is not None for w in toks[s][i]])

    out = []
    ref = None
    desc = f"moving-average type-token ratio (window {MATTR_WINDOW}) over all turns, concatenated in item order"
    for s in all_sys:
        v, lo, hi = bootstrap_by_user(users, lambda ix, s=s: value_of(s, ix), n_boot=n_boot, seed=seed)
        ref = v if s == HUMAN else ref
        out.append(Metric("lexical_diversity_mattr", s, "behaviour", v, lo, hi,
                          sum(t is not None for t in toks[s]), None, ref, None, desc))
    for s in systems:
        v, lo, hi = abs_difference_by_user(users, lambda ix, s=s: value_of(s, ix) - value_of(HUMAN, ix),
                                           n_boot=n_boot, seed=seed)
        out.append(Metric("lexical_diversity_mattr_abs_diff", s, "behaviour", v, lo, hi,
                          sum(t is not None for t in toks[s]), False, 0.0, 0.0, "|MATTR(system) - MATTR(human)|"))
    return out


def _gram_set(text: str) -> set[tuple[str, ...]]:
    toks = [w.lower() for w in words(text)]
    return set(ngrams(toks, 1)) | set(ngrams(toks, 2))


def pairwise_jaccard_matrix(texts: Sequence[str]) -> np.ndarray:
    """Jaccard similarity of word 1+2-gram sets between every pair of texts."""
    grams = [_gram_set(t) for t in texts]
    n = len(grams)
    sim = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            union = grams[i] | grams[j]
            sim[i, j] = sim[j, i] = len(grams[i] & grams[j]) / len(union) if union else 1.0
    return sim


def mean_pairwise(sim: np.ndarray, ix: np.ndarray) -> float:
    """Mean similarity over pairs of *different* items among positions ``ix`` (bootstrap-safe)."""
    if len(ix) < 2:
        return float("nan")
    block = sim[np.ix_(ix, ix)]
    mask = ix[:, None] != ix[None, :]
    return float(block[mask].mean()) if mask.any() else float("nan")


def first_turn_diversity_metrics(
    human: Sequence[str | None], systems: dict[str, Sequence[str | None]], user_ids: Sequence[str],
    turn_indices: Sequence[int], *, n_boot: int = 1000, seed: int = 0,
) -> list[Metric]:
    """Diversity of opening turns (turn_index 0): distinct-2 and mean pairwise self-similarity.

    Resampling users repeats their turns, which would fake repetition: distinct-2 is computed on the
    *distinct* items of each resample, and self-similarity only over pairs of different items.
    """
    all_sys = {HUMAN: human, **systems}
    first = [i for i, k in enumerate(turn_indices) if k == 0]
    users = [user_ids[i] for i in first]
    out = []
    for stat in ("distinct2", "self_similarity"):
        values = {}
        for s in all_sys:
            texts = [all_sys[s][i] for i in first]
            ok = np.array([t is not None for t in texts])
            if stat == "distinct2":
                def fn(ix, texts=texts):
                    return distinct_n([texts[i] for i in np.unique(ix) if texts[i] is not None], 2)
            else:
                sim = pairwise_jaccard_matrix([t or "" for t in texts])

                def fn(ix, sim=sim, ok=ok):
                    return mean_pairwise(sim, ix[ok[ix]])
            values[s] = fn
        ref = None
        hib = None
        desc = ("distinct bigrams / bigrams among first user turns" if stat == "distinct2" else
                "mean pairwise word 1+2-gram Jaccard among first user turns of different items")
        for s in all_sys:
            v, lo, hi = bootstrap_by_user(users, values[s], n_boot=n_boot, seed=seed)
            ref = v if s == HUMAN else ref
            out.append(Metric(f"first_turn_{stat}", s, "behaviour", v, lo, hi, len(first), hib, ref, None, desc))
        for s in systems:
            v, lo, hi = abs_difference_by_user(users, lambda ix, s=s: values[s](ix) - values[HUMAN](ix),
                                               n_boot=n_boot, seed=seed)
            out.append(Metric(f"first_turn_{stat}_abs_diff", s, "behaviour", v, lo, hi, len(first), False, 0.0,
                              0.0, f"|first_turn_{stat}(system) - first_turn_{stat}(human)|"))
    return out


def ending_metrics(
    real_ends: Sequence[bool], systems: dict[str, Sequence[bool]], user_ids: Sequence[str],
    turn_indices: Sequence[int], *, n_boot: int = 1000, seed: int = 0,
) -> list[Metric]:
    """Where conversations end: end rate per item, and the turn index at which the end comes."""
    all_sys = {HUMAN: list(real_ends), **{s: list(v) for s, v in systems.items()}}
    tix = np.asarray(turn_indices, float)
    users = list(user_ids)
    out: list[Metric] = []
    ref_rate = ref_turn = None
    for s, ends in all_sys.items():
        e = np.asarray(ends, bool)
        v, lo, hi = bootstrap_by_user(users, lambda ix, e=e: float(e[ix].mean()), n_boot=n_boot, seed=seed)
        ref_rate = v if s == HUMAN else ref_rate
        out.append(Metric("end_rate", s, "behaviour", v, lo, hi, len(e), None, ref_rate, None,
                          "share of held-out items where the turn is [END OF CONVERSATION]"))
        v, lo, hi = bootstrap_by_user(
            users, lambda ix, e=e: float(tix[ix][e[ix]].mean()) if e[ix].any() else float("nan"),
            n_boot=n_boot, seed=seed)
        ref_turn = v if s == HUMAN else ref_turn
        out.append(Metric("end_turn_index", s, "behaviour", v, lo, hi, int(e.sum()), None, ref_turn, None,
                          "mean user-turn index at which the conversation is ended"))
    h = np.asarray(real_ends, bool)
    for s in systems:
        e = np.asarray(systems[s], bool)
        v, lo, hi = bootstrap_by_user(users, lambda ix, e=e: wasserstein(tix[ix][e[ix]], tix[ix][h[ix]]),
                                      n_boot=n_boot, seed=seed)
        out.append(Metric("end_turn_index_wasserstein", s, "behaviour", v, lo, hi, int(e.sum()), False, 0.0,
                          0.0, "Wasserstein distance between the turn indices where system and humans end"))
    return out
