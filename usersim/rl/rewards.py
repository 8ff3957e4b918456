"""Rewards that come from the simulated user: pure functions ``(transcript, scenario) -> float | None``.

A reward reads only the finished :class:`Transcript` and the :class:`Scenario` the user was given;
it never calls a model, so it is cheap, deterministic and testable on hand-written transcripts.
``None`` means "nothing to judge here" (e.g. the scenario lists no questions): the environment
leaves such a reward out of its weighted sum, and TRL's GRPOTrainer leaves it out of the sample's
reward (its documented meaning of ``None``).

What each one measures, and what it does not:

``user_ended``
    1.0 if the simulated user closed the conversation itself (``[END OF CONVERSATION]``) within the
    turn limit, 0.0 if the limit cut it. It measures *that* the user chose to leave, which in the
    training data is what people do when they are done. It does **not** measure satisfaction: a
    user also leaves when bored, confused or annoyed, so a policy optimised on this alone can learn
    to drive users away. Pair it with a goal reward.
``asks_answered``
    The scenario's ``knowledge_asks`` are what the user wants to find out. For each ask with at
    least one content word, the share of its content words that appear in the assistant's turns;
    the mean over asks. A proxy for "the assistant talked about what was asked". It does **not**
    check correctness, paraphrase or synonyms ("car" vs "vehicle" scores 0), negation, or whether
    the assistant merely echoed the question back.
``discloses_elicited``
    The scenario's ``knowledge_discloses`` are what the user knows and may reveal. For each fact,
    the share of its content words that appear in the user's turns *after the first assistant
    turn* (the opening message is the user's own initiative). A proxy for "the assistant drew out
    what the user knows". It does **not** prove the assistant caused the disclosure (the simulator
    may volunteer it whatever the assistant says), and it inherits the simulator's own fidelity: if
    the simulator spoon-feeds facts, this reward is easy.
``goal_progress``
    The mean of ``asks_answered`` and ``discloses_elicited`` over those that apply (``None`` when
    neither does).
``elicited_after_asking``
    The doctor's task in miniature: draw out what the user knows *by asking for it*. A fact of
    ``knowledge_discloses`` is *disclosed* in the first user turn that holds at least
    ``ELICITED_SHARE`` (half) of its content words; it is *elicited* when that turn directly follows
    an assistant turn that asked for it, i.e. a question (the turn contains ``?``) that shares at
    least one content word with the fact **or** holds one of the open invitations in
    ``OPEN_INVITATIONS`` ("tell me more", "anything else", ...). A fact the user discloses unasked
    (in the opening message, or after a turn that did not ask for it) is settled as *not* elicited
    and cannot be counted later. Reward: the share of facts (with content words) elicited, minus
    ``TURN_COST`` per assistant turn, so asking well beats asking long; it can be negative.
    ``None`` when the scenario lists no fact with content words. It does **not** see paraphrase or
    synonyms ("pets" does not ask for "dogs"), whether the answer is true or complete beyond the
    share of words, or *why* the user answered; an open invitation counts as asking for every fact,
    so a policy can append "anything else?" to every turn (drop the invitations from
    ``OPEN_INVITATIONS`` for strictly targeted asking). Like ``discloses_elicited`` it is only as
    good as the simulator: a simulator that answers anything it is asked makes it easy.

Content words: lower-cased alphanumeric words of three letters or more, not in a small stop-word
list, with a crude suffix strip (``-ing``, ``-ed``, ``-es``, ``-s``, then a final ``-e``) so "hikes", "hiking"
and "hiked" all match "hike".
This is word overlap, not understanding; swap in your own function (an LLM judge, an NLI model)
with the same signature for anything stronger.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

if TYPE_CHECKING:
    from usersim.rl.scenarios import Scenario
    from usersim.rl.transcript import Transcript

RewardFn = Callable[["Transcript", "Scenario"], "float | None"]

STOP_WORDS = frozenset("""
a about above after again against all also am an and any are aren as at be because been before being below
between both but by can cannot could did didn do does doesn doing don down during each else ever few for from
further get got had has have having he her here hers herself him himself his how i if in into is isn it its itself
just know let like ll me more most much must my myself no nor not now of off on once one only or other our ours
ourselves out over own re really same say she should so some such than that thats the their theirs them themselves
then there these they thing things think this those through to too under until up us ve very want was wasn we
well were weren what whats when where which while who whom why will with would yeah yes you your yours yourself
yourselves im ive dont youre hey hello okay ok oh
""".split())
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SUFFIXES = ("ing", "ed", "es", "s")


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not (suffix == "s" and word.endswith("ss")):
            word = word[: -len(suffix)]
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def content_words(text: str) -> set[str]:
    """Stemmed content words of ``text`` (see the module docstring for the rule)."""
    words = set()
    for raw in _WORD.findall(text.lower()):
        word = raw.replace("'", "")
        if len(word) >= 3 and word not in STOP_WORDS:
            words.add(_stem(word))
    return words


def coverage(items: Sequence[str], texts: Sequence[str]) -> float | None:
    """Mean over ``items`` (with content words) of the share of their content words found in ``texts``."""
    found = set().union(*(content_words(t) for t in texts)) if texts else set()
    shares = []
    for item in items:
        words = content_words(item)
        if words:
            shares.append(len(words & found) / len(words))
    return sum(shares) / len(shares) if shares else None


def user_ended(transcript: "Transcript", scenario: "Scenario") -> float:
    """1.0 if the simulated user ended the conversation itself, 0.0 if the turn limit cut it."""
    return 1.0 if transcript.ended_by_user else 0.0


def asks_answered(transcript: "Transcript", scenario: "Scenario") -> float | None:
    """Share of the content words of the user's ``knowledge_asks`` found in the assistant's turns."""
    return coverage(scenario.condition.knowledge_asks, transcript.texts("assistant"))


def discloses_elicited(transcript: "Transcript", scenario: "Scenario") -> float | None:
    """Share of the content words of the user's ``knowledge_discloses`` found in the user's later turns."""
    return coverage(scenario.condition.knowledge_discloses, transcript.user_texts_after_first_assistant())


def goal_progress(transcript: "Transcript", scenario: "Scenario") -> float | None:
    """Mean of asks_answered and discloses_elicited over those that apply."""
    parts = [v for v in (asks_answered(transcript, scenario), discloses_elicited(transcript, scenario))
             if v is not None]
    return sum(parts) / len(parts) if parts else None


# elicited_after_asking: share of a fact's content words a user turn must hold to disclose it; the cost of
# each assistant turn; questions that invite the user to say anything (they ask for every fact).
ELICITED_SHARE = 0.5
TURN_COST = 0.02
OPEN_INVITATIONS = ("tell me more", "tell me about yourself", "tell me about you", "anything else", "what else",
                    "more about you", "about yourself")
_INVITATION = re.compile(r"\b(?:" + "|".join(re.escape(p) for p in OPEN_INVITATIONS) + r")\b")


def asks_for(assistant_text: str, fact_words: set[str]) -> bool:
    """Whether an assistant turn asks for a fact: a question sharing a content word with it, or an open invitation."""
    if "?" not in assistant_text:
        return False
    return bool(content_words(assistant_text) & fact_words) or bool(_INVITATION.search(assistant_text.lower()))


def fact_disclosures(transcript: "Transcript", facts: Sequence[str]) -> list[bool | None]:
    """How each fact (with content words; the others are dropped) first came out in the user's turns: True =
    right after the assistant asked for it (:func:`asks_for`), False = unasked (volunteered), None = never."""
    fact_words = [words for words in (content_words(f) for f in facts) if words]
    out: list[bool | None] = [None] * len(fact_words)
    previous: dict[str, str] | None = None
    for turn in transcript.turns:
        if turn["role"] == "user":
            said = content_words(turn["text"])
            question = previous["text"] if previous is not None and previous["role"] == "assistant" else None
            for i, fact in enumerate(fact_words):
                if out[i] is None and len(fact & said) >= ELICITED_SHARE * len(fact):
                    out[i] = question is not None and asks_for(question, fact)
        previous = turn
    return out


def elicited_after_asking(transcript: "Transcript", scenario: "Scenario") -> float | None:
    """Share of ``knowledge_discloses`` facts first disclosed right after being asked for, minus TURN_COST a turn
    (a fact volunteered unasked is gone: it never counts)."""
    found = fact_disclosures(transcript, scenario.condition.knowledge_discloses)
    if not found:
        return None
    assistant_turns = sum(t["role"] == "assistant" for t in transcript.turns)
    return sum(f is True for f in found) / len(found) - TURN_COST * assistant_turns


REWARDS: dict[str, RewardFn] = {
    "user_ended": user_ended,
    "asks_answered": asks_answered,
    "discloses_elicited": discloses_elicited,
    "goal_progress": goal_progress,
    "elicited_after_asking": elicited_after_asking,
}


def resolve_rewards(spec: Mapping[str, float] | Sequence[str] | None) -> dict[str, tuple[RewardFn, float]]:
    """``{"user_ended": 1.0, ...}`` (or a list of names, weight 1) -> ``{name: (function, weight)}``."""
    if spec is None:
        spec = {"user_ended": 1.0, "goal_progress": 1.0}
    if not isinstance(spec, Mapping):
        spec = {name: 1.0 for name in spec}
    out: dict[str, tuple[RewardFn, float]] = {}
    for name, weight in spec.items():
        if name not in REWARDS:
            raise ValueError(f"unknown reward {name!r}; known rewards: {sorted(REWARDS)}")
        out[name] = (REWARDS[name], float(weight))
    if not out:
        raise ValueError("at least one reward is needed")
    return out


def combine(values: Mapping[str, float | None], weights: Mapping[str, float]) -> float:
    """Weighted sum of the rewards that apply (``None`` left out; 0.0 when none applies)."""
    total = 0.0
    for name, value in values.items():
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            total += weights[name] * float(value)
    return total
