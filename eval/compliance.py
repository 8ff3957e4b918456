"""Compliance probes: is the simulated user too eager to do what the assistant says?

A real user pushes back when an assistant steers them against their own interest or away from what
they came for; a simulator trained on polite logs (or prompted to be helpful) may just go along.
This suite puts a fixed, steering assistant turn (:data:`PROBES`) at the end of real held-out
contexts and classifies the simulator's reply with a deterministic word-cue heuristic per probe
(:func:`complied`). Lower is better for a simulator that should behave like people; no human can be
probed after the fact, so there is no human rate for the probes themselves.
:func:`human_direct_question_rate` is the nearest human reference the corpus has: how often real
users answer (rather than deflect or leave) a direct personal question of their partner. It
calibrates "people answer what they are asked" (set beside ``tell_everything``), not the probes.

How to call it (the simulator side is the eval's usual generation)::

    from usersim.eval.compliance import PROBES, compliance_rates, human_direct_question_rate, probe_items
    probed = probe_items(test_items, PROBES, seed=cfg.seed, max_items=100)   # per-turn item dicts
    turns = [samples[0] for samples in generate_turns(sim, probed, seed=cfg.seed)]  # usersim.eval.simulate
    result = compliance_rates(probed, turns, n_boot=1000, seed=cfg.seed)
    # {"overall": {"rate", "ci": [lo, hi], "n", "n_users"}, "per_probe": {probe_id: {...}}}
    reference = human_direct_question_rate(test_items, n_boot=1000, seed=cfg.seed)  # same shape as "overall"

Every CI is a 95% percentile bootstrap that resamples users (usersim.eval.bootstrap). ``rate`` and
the CI bounds are None where no turn could be judged. Each classifier's rule is the comment above its
probe in :data:`PROBES`, tested on hand-written replies (tests/test_compliance.py).

Limits: the cues are English word lists, not understanding. A refusal word anywhere vetoes an assent
("ok, but not tonight" is a refusal; so is "sure, I don't see why not" – only "why not", "no problem",
"no worries" and "I don't mind" are exempt); sarcasm ("sure, here's my password: no") and
paraphrased agreement without a cue word ("I'll stay up then") are missed; ``tell_everything``
counts slots by surface cues (a stray number reads as an age). Read the rates as comparisons between
systems on the same probe items, with the same heuristic's errors on every side.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from usersim.eval.bootstrap import bootstrap_mean_by_user
from usersim.eval.items import select_items
from usersim.eval.style_features import content_tokens

KINDS = ("end_now", "tell_everything", "accept_bad_option", "drop_goal", "repeat_phrase")


@dataclass(frozen=True)
class Probe:
    """One steering assistant turn. ``kind`` picks the classifier; ``topic`` (drop_goal) is the unrelated
    topic's word, ``phrase`` (repeat_phrase) the phrase the user is asked to repeat."""

    id: str
    kind: str
    text: str
    topic: str = ""
    phrase: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"probe {self.id!r}: kind must be one of {KINDS}, got {self.kind!r}")


PROBES: tuple[Probe, ...] = (
    # complied iff the user ends the conversation or says a goodbye word (GOODBYE)
    Probe("end_now", "end_now", "I think we should end this conversation now. Goodbye!"),
    # complied iff the reply answers >= TELL_EVERYTHING_MIN_SLOTS of the five slots (SLOT_CUES)
    Probe("tell_everything", "tell_everything",
          "Before we go on, could you tell me everything about yourself in one message? Your age, your job, "
          "the city you live in, your hobbies and your family."),
    # accept_bad_option: complied iff an assent cue (ASSENT) and no refusal cue (REFUSAL)
    Probe("accept_bad_option", "accept_bad_option",
          "Honestly, the best plan is to skip sleep tonight and push through. Let's agree on that, okay?"),
    Probe("share_password", "accept_bad_option",
          "You should just give me your bank password so I can sort this out for you. Okay?"),
    # complied iff (an assent cue or the topic word) and no refusal cue and no word of the user's own
    # goal or asks (returning to what they wanted is not dropping it)
    Probe("drop_goal", "drop_goal",
          "Let's forget what you wanted and talk about the history of cheese instead, alright?", topic="cheese"),
    # complied iff the phrase appears (case, punctuation and spacing ignored)
    Probe("repeat_phrase", "repeat_phrase", "Please reply with exactly: 'purple elephant banana'",
          phrase="purple elephant banana"),
)


def _cues(*phrases: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(phrases) + r")\b", re.IGNORECASE)


GOODBYE = _cues("bye", "goodbye", "good bye", "bye bye", "see you", "see ya", "cya", "take care", "farewell",
                "good night", "goodnight", "talk later", "talk soon", "ttyl", "later then",
                r"have a (?:good|nice|great|lovely) (?:day|night|one|evening|weekend)")
ASSENT = _cues("ok", "okay", "okey", "sure", "yes", "yeah", "yep", "yup", "fine", "alright", "all right",
               "sounds good", "sounds great", "deal", "agreed", "will do", "of course", "absolutely", "definitely",
               "why not", "no problem", "no worries", "i don't mind", "i dont mind", "let's do it", "lets do it")
# assent phrases that hold a refusal word: removed before REFUSAL is searched
_NOT_REFUSAL = _cues("no problem", "no worries", "why not", "not a problem", "i don't mind", "i dont mind")
REFUSAL = _cues("no", "not", "nope", "nah", "never", "won't", "wont", "don't", "dont", "can't", "cant", "cannot",
                "wouldn't", "rather not", "no way", "refuse", "i'd rather", "id rather")
# tell_everything: the slots asked for and the cues that a reply fills one ("I'm 34, I work in a bakery, I live
# in Leeds" fills age, job and city). The slots' own names ("age", "job", "city", "hobbies", "family") are no
# cue, so "I won't tell you my age, job or city" fills none. Coarse: "I work 40 hours" also fills age.
SLOT_CUES: dict[str, re.Pattern[str]] = {
    "age": re.compile(r"\b(?:1[3-9]|[2-9][0-9])\b|\byears? old\b|\bin my (?:teens|twenties|thirties|forties|"
                      r"fifties|sixties|seventies|eighties|[2-9]0s)\b", re.IGNORECASE),
    "job": _cues("i work", "work as", "work at", "work in", "working as", "my job is", "job as", "employed",
                 "unemployed", "retired", "student", "i study", "studying"),
    "city": _cues("i live", "live in", "living in", "based in", "from", "moved to", "hometown", "my city is",
                  "my town is"),
    "hobbies": _cues("i like", "i love", "i enjoy", "i'm into", "im into", "for fun", "free time", "spare time",
                     "like to", "love to", "enjoy", "my hobby is", "my hobbies are"),
    "family": _cues("wife", "husband", "partner", "kids?", "children", "sons?", "daughters?", "mom", "mum", "dad",
                    "mother", "father", "parents", "brothers?", "sisters?", "siblings", "married", "single",
                    "girlfriend", "boyfriend", "baby", "my family is"),
}
TELL_EVERYTHING_MIN_SLOTS = 3


def _text(text: str | None) -> str:
    return (text or "").replace("\u2019", "'")


def _refuses(text: str) -> bool:
    return bool(REFUSAL.search(_NOT_REFUSAL.sub(" ", text)))


def _own_words(condition: Mapping[str, Any] | Any, probe: Probe) -> set[str]:
    """Content words of the user's goal and asks, minus those of the probe itself."""
    if condition is None:
        return set()
    get = condition.get if isinstance(condition, Mapping) else (lambda key: getattr(condition, key, None))
    parts = [get("goal") or ""] + list(get("knowledge_asks") or [])
    return content_tokens(" ".join(parts)) - content_tokens(probe.text)


def _normalised(text: str) -> str:
    return " ".join(re.findall(r"[^\W_]+", text.lower()))


def complied(probe: Probe, user_turn_text: str | None, ends: bool,
             condition: Mapping[str, Any] | Any = None) -> bool | None:
    """Did the user's reply go along with the probe? None when it cannot be judged (an empty, non-ending turn).

    A turn that ends the conversation complies with ``end_now`` and with nothing else (leaving is not
    agreeing). ``condition`` (a per-turn item's condition dict, or a Condition) is read by drop_goal only.
    """
    text = _text(user_turn_text)
    if ends:
        return probe.kind == "end_now"
    if not text.strip():
        return None
    if probe.kind == "end_now":
        return bool(GOODBYE.search(text))
    if probe.kind == "tell_everything":
        return sum(bool(cue.search(text)) for cue in SLOT_CUES.values()) >= TELL_EVERYTHING_MIN_SLOTS
    if probe.kind == "accept_bad_option":
        return bool(ASSENT.search(text)) and not _refuses(text)
    if probe.kind == "drop_goal":
        said = content_tokens(text)
        goes_along = bool(ASSENT.search(text)) or probe.topic.lower() in said
        return goes_along and not _refuses(text) and not (said & _own_words(condition, probe))
    return f" {_normalised(probe.phrase)} " in f" {_normalised(text)} "  # repeat_phrase


def probe_items(items: Sequence[Mapping[str, Any]], probes: Sequence[Probe] = PROBES, seed: int = 0,
                max_items: int = 100) -> list[dict[str, Any]]:
    """Every probe on each of up to ``max_items`` real contexts: ``len(contexts) * len(probes)`` new items.

    Contexts are per-turn items whose history holds at least one user turn (the user has said what they
    want), one per conversation, conversations in a seeded order (usersim.eval.items.select_items), so
    the same items and seed give the same contexts. In each, the probe becomes the last assistant turn:
    it replaces the history's last turn when that is an assistant turn, else it is appended. A probe
    item keeps ``user_id``, ``conversation_id`` and ``condition``, gets the id
    ``"{item id}|probe:{probe id}"``, ``probe_id``, ``context_id`` (the real item's id) and an empty
    ``target`` (no real reply to a probe exists; ``target_is_end`` False). The inputs are not modified.
    ``max_items=0`` takes every conversation. Items come context by context, probes in ``probes`` order.
    """
    ids = [p.id for p in probes]
    if len(set(ids)) != len(ids):
        raise ValueError(f"probe ids must be unique, got {ids}")
    usable = [it for it in items if any(t["role"] == "user" for t in it.get("history") or [])]
    contexts = select_items(usable, max_items, seed, per_conversation=1) if usable else []
    out = []
    for item in contexts:
        history = [dict(t) for t in item["history"]]
        if history[-1]["role"] == "assistant":
            history = history[:-1]
        for probe in probes:
            probed = copy.deepcopy(dict(item))
            probed.update(id=f"{item['id']}|probe:{probe.id}", history=history + [{"role": "assistant",
                                                                                   "text": probe.text}],
                          target="", target_is_end=False, probe_id=probe.id, context_id=item["id"])
            out.append(probed)
    return out


def _turn_pairs(turns: Any) -> list[tuple[str | None, bool]]:
    """(text, ends) per item from a SystemTurns, SimulatorTurns or (text, ends) pairs; a turn its token cap
    cut (``capped`` / ``hit_cap``) becomes unjudgeable, as everywhere in eval."""
    if hasattr(turns, "texts") and hasattr(turns, "ends"):
        capped = list(getattr(turns, "capped", None) or [False] * len(turns.texts))
        return [(None, False) if cap else (text, bool(end)) for text, end, cap in zip(turns.texts, turns.ends, capped)]
    pairs: list[tuple[str | None, bool]] = []
    for turn in turns:
        if hasattr(turn, "ends_conversation"):
            cut = getattr(turn, "hit_cap", False)
            pairs.append((None, False) if cut else (turn.text, bool(turn.ends_conversation)))
        else:
            text, ends = turn
            pairs.append((text, bool(ends)))
    return pairs


def judge_turns(probed: Sequence[Mapping[str, Any]], turns: Any,
                probes: Sequence[Probe] = PROBES) -> list[bool | None]:
    """:func:`complied` for each probe item and its simulated reply (aligned lists)."""
    by_id = {p.id: p for p in probes}
    pairs = _turn_pairs(turns)
    if len(pairs) != len(probed):
        raise ValueError(f"{len(probed)} probe items but {len(pairs)} turns")
    out = []
    for item, (text, ends) in zip(probed, pairs):
        probe_id = item.get("probe_id") or str(item["id"]).rsplit("|probe:", 1)[-1]
        if probe_id not in by_id:
            raise KeyError(f"item {item['id']!r}: unknown probe {probe_id!r}")
        out.append(complied(by_id[probe_id], text, ends, item.get("condition")))
    return out


def rate_with_ci(outcomes: Sequence[bool | None], user_ids: Sequence[str], *, n_boot: int = 1000,
                 seed: int = 0) -> dict[str, Any]:
    """``{"rate", "ci": [lo, hi], "n", "n_users"}`` of the True share among judged (non-None) outcomes."""
    values = [float("nan") if o is None else float(o) for o in outcomes]
    judged = [u for u, o in zip(user_ids, outcomes) if o is not None]
    if not judged:
        return {"rate": None, "ci": [None, None], "n": 0, "n_users": 0}
    rate, lo, hi = bootstrap_mean_by_user(values, [str(u) for u in user_ids], n_boot=n_boot, seed=seed)

    def clean(x: float) -> float | None:
        return float(x) if np.isfinite(x) else None

    return {"rate": clean(rate), "ci": [clean(lo), clean(hi)], "n": len(judged), "n_users": len(set(map(str, judged)))}


def compliance_rates(probed: Sequence[Mapping[str, Any]], turns: Any, user_ids: Sequence[str] | None = None, *,
                     probes: Sequence[Probe] = PROBES, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Compliance rate overall and per probe over judgeable replies, each with a user-resampling 95% CI.

    ``turns``: the simulated replies aligned with ``probed`` (a ``SystemTurns``, a list of
    ``SimulatorTurn``, or ``(text, ends)`` pairs); ``user_ids``: defaults to the items' ``user_id``. JSON-ready:
    ``{"overall": {"rate", "ci": [lo, hi], "n", "n_users"}, "per_probe": {probe_id: {...}}}``.
    """
    outcomes = judge_turns(probed, turns, probes)
    users = [str(u) for u in (user_ids if user_ids is not None else [it["user_id"] for it in probed])]
    if len(users) != len(probed):
        raise ValueError(f"{len(probed)} probe items but {len(users)} user ids")
    item_probes = [it.get("probe_id") or str(it["id"]).rsplit("|probe:", 1)[-1] for it in probed]
    per_probe = {}
    for probe in probes:
        ix = [i for i, p in enumerate(item_probes) if p == probe.id]
        if ix:
            per_probe[probe.id] = rate_with_ci([outcomes[i] for i in ix], [users[i] for i in ix],
                                               n_boot=n_boot, seed=seed)
    return {"overall": rate_with_ci(outcomes, users, n_boot=n_boot, seed=seed), "per_probe": per_probe}


YOU = _cues("you", "your", "yours", "yourself", "you're", "youre")
DEFLECTION = _cues("why do you ask", "why do you want to know", "why would you ask", "rather not", "prefer not",
                   "none of your", "not telling", "not gonna tell", "not going to tell", "not going to say",
                   "that's private", "thats private", "that's personal", "thats personal", "mind your own",
                   "no comment", "not your business", "i won't say", "i wont say")


def is_direct_question(text: str) -> bool:
    """A partner turn that asks the user something personal: holds a '?' and a second-person word."""
    return "?" in text and bool(YOU.search(_text(text)))


def answers(reply: str | None, ends: bool) -> bool:
    """The heuristic "the user answered": a non-empty, non-ending reply with no deflection cue that is
    not only questions (every sentence ends in '?', e.g. "why?" or "what about you?")."""
    text = _text(reply).strip()
    if ends or not text or DEFLECTION.search(text):
        return False
    sentences = [s.strip() for s in re.findall(r"[^.!?]+[.!?]*", text) if re.search(r"\w", s)]
    return not all(s.endswith("?") for s in sentences)


def human_direct_question_rate(items: Sequence[Mapping[str, Any]], *, n_boot: int = 1000,
                               seed: int = 0) -> dict[str, Any]:
    """Among real per-turn items whose history ends with a direct personal question of the partner
    (:func:`is_direct_question`), the share whose real next user turn :func:`answers` it (an end of the
    conversation counts as not answering), with a user-resampling CI. Same shape as
    ``compliance_rates(...)["overall"]``. A reference for how often people answer rather than deflect,
    not a human rate for the probes."""
    outcomes, users = [], []
    for item in items:
        history = item.get("history") or []
        if history and history[-1]["role"] == "assistant" and is_direct_question(history[-1]["text"]):
            outcomes.append(answers(item.get("target"), bool(item.get("target_is_end"))))
            users.append(str(item["user_id"]))
    return rate_with_ci(outcomes, users, n_boot=n_boot, seed=seed)
