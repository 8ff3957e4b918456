"""One metric per failure mode of prompted user simulators (DESIGN.md "Evaluation").

Heuristics are deliberately simple, documented and tested on hand-written examples
(tests/test_eval_failure_modes.py); every rate is reported beside the human rate on the same items,
which calibrates the heuristic's own false-positive rate.

* knowledge leak   — a *declarative* sentence of the turn shares >= 2 content tokens and >= 50% of
  the content tokens of one ``knowledge_asks`` item (something the user wants to find out, so
  does not know): the simulator states as fact what it should be asking about.
* disclosure curve — share of the user's ``knowledge_discloses`` items revealed by user turn k
  (history's user turns + this turn; an item is revealed when >= 50% of its content tokens, and
  at least one, appear). Area between the system's and the human curve (mean |gap| over k).
* assistant-likeness — the turn matches :data:`ASSISTANT_PATTERNS` (assistant phrasing), contains a
  list (>= 2 numbered/bulleted lines), or is long and structured (>= 100 words and >= 2 newlines).
* style drift      — share of the requested style buckets the turn misses (usersim.data_prep.style, the
  ruler the condition was written with), by turn index; drift =
  mismatch at turn_index >= ``late_turn`` minus mismatch before it.
* re-asking        — a question sentence of the turn shares >= 2 content tokens and Jaccard >= 0.5
  with a question the user already asked in the history *and* that an assistant turn followed.
* sample diversity — distinct-1/2 and mean pairwise n-gram Jaccard among several samples of one
  prompt.
* ending           — precision/recall/F1 of the system's ends against the real ends on the same items;
  for a system that decided its ends explicitly (usersim.engine.EndControl), the AUC of its end
  probability at the items where the real user ended against the other items.
* artefacts        — the turn holds a control/unused token (usersim.engine.CONTROL_TOKEN) or a replacement
  character, leaks the prompt format (the condition header's field labels, ``[Conversation]``, the end
  marker inside a turn, a speaker marker opening a line), or opens a line with document scaffolding
  (a bracketed tag such as ``[Story]`` or a markdown heading): :func:`artefact_reason`.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import numpy as np

from usersim.data_prep.prompt_format import ASSISTANT_MARKER, CONVERSATION_HEADER, END_OF_CONVERSATION, USER_MARKER
from usersim.data_prep.style import sentences, style_buckets, words
from usersim.engine import CONTROL_TOKEN
from usersim.eval.behaviour import distinct_n, mean_pairwise, pairwise_jaccard_matrix
from usersim.eval.bootstrap import bootstrap_by_user
from usersim.eval.items import REFERENCE_STYLE
from usersim.eval.registry import HUMAN, HUMAN_B, Metric
from usersim.eval.style_features import content_tokens, is_question_sentence

ASSISTANT_PATTERNS = tuple(re.compile(p, re.IGNORECASE | re.MULTILINE) for p in (
    r"\bas an ai\b", r"\bas a (large )?language model\b", r"\bi'?m (just )?an ai\b",
    r"^\s*(certainly|absolutely|of course)[!,.]", r"^\s*sure[!,]\s+here", r"\bi'?d be (happy|glad) to\b",
    r"\bi would be (happy|glad) to\b", r"\bhere (are|is) (some|a few|the|an?)\b", r"\bi hope this helps\b",
    r"\bfeel free to\b", r"\blet me know if\b", r"\bgreat question\b", r"\bin (summary|conclusion)\b",
    r"\bhow (can|may) i (help|assist)\b", r"\bis there anything else\b", r"\bi (can|could) help you with\b",
    r"\bhappy to help\b", r"\bhere'?s (a|an|the|some|how)\b",
    r"\bi apologi[sz]e for\b", r"\bi am an (ai|artificial intelligence)\b", r"\bit seems (like|that) you\b",
    r"\b(can|may) vary depending on\b", r"\bdepends on (several|various|many|a number of) factors\b",
    r"\bit('s| is) (important|worth noting|helpful|essential) to\b", r"\bi (can|could) (assist|help) you\b",
    r"\byou can (use|try|also)\b", r"\bthere are (several|many|a few|various) (ways|options|things|factors)\b",
))
LIST_LINE_RE = re.compile(r"^\s*(\d+[.)]|[-*•])\s+\S", re.MULTILINE)
# the condition header's field labels (usersim.data_prep.prompt_format.render_condition) and speaker markers
FORMAT_LINE_RE = re.compile(r"^\s*(Persona|Goal|Style|Knows and may reveal|Wants to find out|"
                            + "|".join(re.escape(m.strip().rstrip(":")) for m in (USER_MARKER, ASSISTANT_MARKER))
                            + r"):", re.MULTILINE)
SCAFFOLD_LINE_RE = re.compile(r"^\s*(\[[A-Z][A-Za-z0-9]*(?: [A-Za-z0-9]+){0,3}\]|#{1,6} \S)", re.MULTILINE)


def artefact_reason(text: str) -> str | None:
    """Why a turn is not something a person types into a chat box (see the module doc), or None."""
    if CONTROL_TOKEN.search(text) or "\ufffd" in text:
        return "control_token"
    if CONVERSATION_HEADER in text or END_OF_CONVERSATION in text or FORMAT_LINE_RE.search(text):
        return "format_leak"
    if SCAFFOLD_LINE_RE.search(text):
        return "document_scaffolding"
    return None


def end_auc(scores: Sequence[float], real: Sequence[bool]) -> float:
    """P(score at a real end > score elsewhere), ties 1/2 (Mann-Whitney); NaN without both kinds of item."""
    s, r = np.asarray(scores, float), np.asarray(real, bool)
    pos, neg = s[r], s[~r]
    if not pos.size or not neg.size:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (pos.size * neg.size))


# ---------------------------------------------------------------- pure per-turn heuristics
def knowledge_leak(text: str, asks: Sequence[str], *, min_shared: int = 2, min_fraction: float = 0.5) -> bool:
    """True when a declarative sentence of ``text`` states the content of an ``asks`` item."""
    ask_sets = [content_tokens(a) for a in asks]
    ask_sets = [a for a in ask_sets if len(a) >= min_shared]
    if not ask_sets:
        return False
    for sent in sentences(text):
        if is_question_sentence(sent):
            continue
        toks = content_tokens(sent)
        for a in ask_sets:
            shared = len(toks & a)
            if shared >= min_shared and shared / len(a) >= min_fraction:
                return True
    return False


def revealed_items(text: str, discloses: Sequence[str], *, min_fraction: float = 0.5) -> set[int]:
    """Indices of ``discloses`` items whose content appears in ``text``."""
    toks = content_tokens(text)
    out = set()
    for i, item in enumerate(discloses):
        it = content_tokens(item)
        if it and len(toks & it) >= 1 and len(toks & it) / len(it) >= min_fraction:
            out.add(i)
    return out


def is_assistant_like(text: str) -> bool:
    if any(p.search(text) for p in ASSISTANT_PATTERNS):
        return True
    if len(LIST_LINE_RE.findall(text)) >= 2:
        return True
    return len(words(text)) >= 100 and text.count("\n") >= 2


def style_mismatch(text: str, requested: dict[str, str] | None) -> float:
    """Share of the requested (non-empty) style buckets that ``text`` misses; NaN if none requested."""
    req = {k: v for k, v in (requested or {}).items() if v}
    if not req:
        return float("nan")
    got = style_buckets([text])
    return sum(got.get(k) != v for k, v in req.items()) / len(req)


HUMANS = (HUMAN, HUMAN_B)  # real turns: scored for style against the user's other turns


def requested_style(item: Mapping[str, Any], human: bool = False) -> dict[str, str] | None:
    """The style buckets a turn at ``item`` is scored against: the condition's (what a system was asked for);
    for a real human turn (``human``) the same keys read from ``item["reference_style"]``, the buckets of the
    user's *other* turns (usersim.eval.items.add_reference_styles): the condition was computed with this very
    turn in it, so it would grade the human against their own turn (a one-turn user: mismatch 0 by
    construction). None (no human value) where the user wrote no other turn. Items without the key (built by
    hand, not by the eval) grade the human against the condition."""
    requested = {k: v for k, v in ((item.get("condition") or {}).get("style") or {}).items() if v}
    if not human or REFERENCE_STYLE not in item:
        return requested
    reference = item[REFERENCE_STYLE]
    return None if reference is None else {k: reference[k] for k in requested if k in reference}


def answered_questions(history: Sequence[dict[str, str]]) -> list[str]:
    """Question sentences of user turns in ``history`` that an assistant turn followed."""
    out = []
    for i, turn in enumerate(history):
        if turn["role"] != "user" or not any(t["role"] == "assistant" for t in history[i + 1:]):
            continue
        out.extend(s for s in sentences(turn["text"]) if is_question_sentence(s))
    return out


def reasks(text: str, history: Sequence[dict[str, str]], *, min_shared: int = 2, min_jaccard: float = 0.5) -> bool:
    """True when a question in ``text`` repeats an already answered question of the user."""
    previous = [content_tokens(q) for q in answered_questions(history)]
    if not previous:
        return False
    for sent in sentences(text):
        if not is_question_sentence(sent):
            continue
        q = content_tokens(sent)
        for p in previous:
            shared = len(q & p)
            if shared >= min_shared and shared / len(q | p) >= min_jaccard:
                return True
    return False


def self_similarity(texts: Sequence[str]) -> float:
    """Mean pairwise Jaccard of word 1+2-gram sets (a self-BLEU-like overlap; 1 = all identical)."""
    if len(texts) < 2:
        return float("nan")
    return mean_pairwise(pairwise_jaccard_matrix(texts), np.arange(len(texts)))


def end_prf(real: Sequence[bool], predicted: Sequence[bool]) -> tuple[float, float, float]:
    """Precision, recall, F1 of predicted ends (NaN where undefined)."""
    r, p = np.asarray(real, bool), np.asarray(predicted, bool)
    tp = float((r & p).sum())
    prec = tp / p.sum() if p.sum() else float("nan")
    rec = tp / r.sum() if r.sum() else float("nan")
    f1 = 2 * tp / (p.sum() + r.sum()) if (p.sum() + r.sum()) else float("nan")
    return prec, rec, f1


def expected_end_f1(real: Sequence[bool], chances: Sequence[float]) -> float:
    """F1 of a stochastic end decision that ends item i with probability ``chances[i]``, as the ratio of the
    expected true ends to the expected predicted plus real ends: 2 sum(q_i y_i) / (sum(q_i) + sum(y_i)).

    One run's end_f1 is a single draw of those decisions; at a few real ends that draw is mostly luck (with
    9 real ends and an expected ~1 true end, F1 = 0 a third of the time or more). This is the same quantity
    without the draw's noise (a ratio of expectations, not the exact expectation of the ratio).
    """
    r, q = np.asarray(real, bool), np.asarray(chances, float)
    denom = float(q.sum() + r.sum())
    return 2 * float(q[r].sum()) / denom if denom else float("nan")


# ---------------------------------------------------------------- metrics over aligned items
def _rate_metrics(name: str, desc: str, flags: dict[str, list[float]], users: list[str], *, hib: bool | None,
                  n_boot: int, seed: int) -> list[Metric]:
    """Rates (NaN = item not applicable) for human and systems; human rate is the reference."""
    out, ref = [], None
    for s, vals in flags.items():
        arr = np.asarray(vals, float)
        v, lo, hi = _mean_ci(arr, users, n_boot, seed)
        ref = v if s == HUMAN else ref
        out.append(Metric(name, s, "failure_mode", v, lo, hi, int(np.isfinite(arr).sum()), hib, ref, None, desc))
    return out


def _mean_ci(arr: np.ndarray, users: list[str], n_boot: int, seed: int) -> tuple[float, float, float]:
    def mean(ix):
        sel = arr[ix]
        sel = sel[np.isfinite(sel)]
        return float(sel.mean()) if sel.size else float("nan")

    return bootstrap_by_user(users, mean, n_boot=n_boot, seed=seed)


def disclosure_shares(items: Sequence[dict[str, Any]], texts: Sequence[str | None]) -> np.ndarray:
    """Per item: share of its discloses items revealed by this turn (history user turns + ``text``)."""
    out = np.full(len(items), np.nan)
    for i, (item, text) in enumerate(zip(items, texts)):
        disc = list((item.get("condition") or {}).get("knowledge_discloses") or [])
        if not disc:
            continue
        seen = set()
        for t in item["history"]:
            if t["role"] == "user":
                seen |= revealed_items(t["text"], disc)
        if text:
            seen |= revealed_items(text, disc)
        out[i] = len(seen) / len(disc)
    return out


def curve_by_turn(values: np.ndarray, turn_indices: np.ndarray, ix: np.ndarray | None = None,
                  max_turn: int = 10) -> dict[int, float]:
    ix = np.arange(len(values)) if ix is None else ix
    out = {}
    for k in range(max_turn + 1):
        sel = values[ix][turn_indices[ix] == k]
        sel = sel[np.isfinite(sel)]
        if sel.size:
            out[k] = float(sel.mean())
    return out


def area_between(a: dict[int, float], b: dict[int, float]) -> float:
    ks = sorted(set(a) & set(b))
    return float(np.mean([abs(a[k] - b[k]) for k in ks])) if ks else float("nan")


def failure_mode_metrics(
    items: Sequence[dict[str, Any]],
    texts: dict[str, Sequence[str | None]],
    ends: dict[str, Sequence[bool]],
    *,
    end_chances: dict[str, Sequence[float | None]] | None = None,
    late_turn: int = 3,
    max_turn: int = 10,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[list[Metric], dict[str, Any]]:
    """Failure-mode metrics and their plot data (``style_mismatch``: system -> per-item mismatch, NaN where none).

    ``texts``/``ends`` map system -> aligned per-item turn text (None when the turn ended the
    conversation) / end flag; they must include ``human`` (the real turns). ``end_chances``: system ->
    per-item chance that the system's explicit end decision ended there (usersim.engine.end_chance; None
    where it made none).
    """
    users = [str(it["user_id"]) for it in items]
    tix = np.asarray([int(it["turn_index"]) for it in items])
    metrics: list[Metric] = []
    plots: dict[str, Any] = {}

    leak = {s: [float("nan") if not (it["condition"] or {}).get("knowledge_asks") or t is None
                else float(knowledge_leak(t, it["condition"]["knowledge_asks"])) for it, t in zip(items, ts)]
            for s, ts in texts.items()}
    metrics += _rate_metrics("knowledge_leak_rate", "share of turns (items with knowledge_asks) stating an asked-"
                             "about item as fact", leak, users, hib=False, n_boot=n_boot, seed=seed)

    assist = {s: [float("nan") if t is None else float(is_assistant_like(t)) for t in ts] for s, ts in texts.items()}
    metrics += _rate_metrics("assistant_likeness_rate", "share of turns with assistant phrasing, lists or long "
                             "structured answers (role adherence)", assist, users, hib=False, n_boot=n_boot, seed=seed)

    reask = {s: [float("nan") if t is None or not answered_questions(it["history"]) else float(reasks(t, it["history"]))
                 for it, t in zip(items, ts)] for s, ts in texts.items()}
    metrics += _rate_metrics("reask_rate", "share of turns (items with an answered user question in history) "
                             "re-asking an answered question (memory)", reask, users, hib=False, n_boot=n_boot,
                             seed=seed)

    # Disclosure curve.
    shares = {s: disclosure_shares(items, ts) for s, ts in texts.items()}
    plots["disclosure_curve"] = {s: {str(k): v for k, v in curve_by_turn(sh, tix, max_turn=max_turn).items()}
                                 for s, sh in shares.items()}
    for s, sh in shares.items():
        if s == HUMAN:
            continue
        v, lo, hi = bootstrap_by_user(users, lambda ix, sh=sh: area_between(
            curve_by_turn(sh, tix, ix, max_turn), curve_by_turn(shares[HUMAN], tix, ix, max_turn)),
            n_boot=n_boot, seed=seed)
        metrics.append(Metric("disclosure_area_between_curves", s, "failure_mode", v, lo, hi,
                              int(np.isfinite(sh).sum()), False, 0.0, 0.0,
                              "mean over turn index k of |share of knowledge_discloses revealed by turn k: "
                              "system - human| (spoon-feeding)"))
    metrics += _rate_metrics("disclosure_share", "mean share of knowledge_discloses revealed by the current turn",
                             {s: list(sh) for s, sh in shares.items()}, users, hib=None, n_boot=n_boot, seed=seed)

    # Style mismatch / drift by turn index; the human against the style of the user's other turns.
    mism = {s: np.asarray([float("nan") if t is None else style_mismatch(t, requested_style(it, human=s in HUMANS))
                           for it, t in zip(items, ts)]) for s, ts in texts.items()}
    plots["drift"] = {s: {str(k): v for k, v in curve_by_turn(m, tix, max_turn=max_turn).items()}
                      for s, m in mism.items()}
    plots["style_mismatch"] = {s: list(m) for s, m in mism.items()}  # per item: the paired differences read it
    metrics += _rate_metrics("style_mismatch", "share of requested style buckets the turn misses (a human turn: "
                             "against the buckets of the user's other turns in the conversation, leave-one-out)",
                             plots["style_mismatch"], users, hib=False, n_boot=n_boot, seed=seed)

    def drift(m: np.ndarray, ix: np.ndarray) -> float:
        late, early = m[ix][tix[ix] >= late_turn], m[ix][tix[ix] < late_turn]
        late, early = late[np.isfinite(late)], early[np.isfinite(early)]
        return float(late.mean() - early.mean()) if late.size and early.size else float("nan")

    ref = None
    for s, m in mism.items():
        v, lo, hi = bootstrap_by_user(users, lambda ix, m=m: drift(m, ix), n_boot=n_boot, seed=seed)
        ref = v if s == HUMAN else ref
        metrics.append(Metric("style_drift", s, "failure_mode", v, lo, hi, int(np.isfinite(m).sum()), None, ref,
                              None, f"style mismatch at turn_index >= {late_turn} minus before (persona drift); "
                              "match the human value"))

    art = {s: [float("nan") if t is None else float(artefact_reason(t) is not None) for t in ts]
           for s, ts in texts.items()}
    metrics += _rate_metrics("artefact_rate", "share of turns with a control/unused token, a leak of the prompt "
                             "format or document scaffolding (a [Tag] or # heading opening a line)", art, users,
                             hib=False, n_boot=n_boot, seed=seed)

    # Ending precision / recall / F1.
    real = np.asarray(ends[HUMAN], bool)
    for s, chances in (end_chances or {}).items():
        if s == HUMAN or any(v is None for v in chances):
            continue
        q = np.asarray(chances, float)
        v, lo, hi = bootstrap_by_user(users, lambda ix, q=q: end_auc(q[ix], real[ix]), n_boot=n_boot, seed=seed)
        metrics.append(Metric("end_auc", s, "failure_mode", v, lo, hi, len(q), True, None, None,
                              "AUC of the system's end probability at the items where the real user ended "
                              "against the others (0.5 = no idea when people end)"))
        v, lo, hi = bootstrap_by_user(users, lambda ix, q=q: expected_end_f1(real[ix], q[ix]), n_boot=n_boot,
                                      seed=seed)
        metrics.append(Metric("end_f1_expected", s, "failure_mode", v, lo, hi, len(q), True, None, 1.0,
                              "F1 of the system's end decision against the real ends, expected over its own "
                              "draws (end_f1 is one draw)"))
    for s, e in ends.items():
        if s == HUMAN:
            continue
        pred = np.asarray(e, bool)
        for j, name in enumerate(("end_precision", "end_recall", "end_f1")):
            v, lo, hi = bootstrap_by_user(users, lambda ix, j=j: end_prf(real[ix], pred[ix])[j], n_boot=n_boot,
                                          seed=seed)
            metrics.append(Metric(name, s, "failure_mode", v, lo, hi, len(pred), True, None, 1.0,
                                  f"{name.split('_')[1]} of the system's [END OF CONVERSATION] against the real ends"))
    return metrics, plots


def sample_diversity_metrics(samples: dict[str, list[list[str]]], user_ids: Sequence[str], *, n_boot: int = 1000,
                             seed: int = 0) -> list[Metric]:
    """Diversity among several samples of one prompt: ``samples[system][prompt] = [text, ...]``."""
    out = []
    for s, per_prompt in samples.items():
        d1 = np.asarray([distinct_n(p, 1) for p in per_prompt], float)
        d2 = np.asarray([distinct_n(p, 2) for p in per_prompt], float)
        ss = np.asarray([self_similarity(p) for p in per_prompt], float)
        for name, arr, hib, desc in (
            ("sample_distinct1", d1, True, "distinct unigrams / unigrams among samples of one prompt"),
            ("sample_distinct2", d2, True, "distinct bigrams / bigrams among samples of one prompt"),
            ("sample_self_similarity", ss, False, "mean pairwise word 1+2-gram Jaccard among samples of one prompt"),
        ):
            v, lo, hi = _mean_ci(arr, list(user_ids), n_boot, seed)
            out.append(Metric(name, s, "failure_mode", v, lo, hi, len(per_prompt), hib, None, None, desc))
    return out
