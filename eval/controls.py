"""Controls that say whether the headline can be trusted, built with the headline's own paired structure.

Each control is a paired comparison run through the same judges, folds and permutation null as the
headline (usersim.eval.paired), so a failure of the protocol shows up here first:

* ``simulator_vs_itself`` (null): two samples of the simulator for the same context. They are
  exchangeable by construction, so a calibrated protocol sits at chance; a rejection is the flag
  ``null_control_rejected``.
* graded positives, each of which a judge with power must catch (else ``no_power:<name>``):
  ``same_user_other_context`` (the same user's real turn taken from another of their held-out
  contexts: right person, wrong moment; the smallest effect), ``simulator_hot`` (the simulator at
  a high temperature) and ``base`` (the untuned base model; the largest effect).

Beside them, ``human_vs_human`` is the unpaired control of ``usersim discriminate``: two disjoint
groups of held-out humans must not be told apart (else ``human_vs_human_rejected``).

With several judges a control is tested at alpha / (number of judges) (Bonferroni), so that the
report turns red for a real failure, not for one of two coin flips.
"""

from __future__ import annotations

import random
from typing import Any, Mapping, Sequence

from usersim.eval.permutation import ALPHA

NULL, POSITIVE = "null", "positive"
NULL_REJECTED = "null_control_rejected"
HUMAN_VS_HUMAN_REJECTED = "human_vs_human_rejected"
HEADLINE_BELOW_CHANCE = "headline_below_chance"
TOO_SMALL_TO_TELL = "too_small_to_tell"

DESCRIPTIONS = {
    "simulator_vs_itself": "two samples of the simulator for the same context; must sit at chance",
    "same_user_other_context": "the same user's real turn from another of their contexts; must be caught",
    "simulator_hot": "the simulator at a high temperature; must be caught",
    "base": "the untuned base model; must be caught",
    "human_vs_human": "two disjoint groups of held-out humans (unpaired); must not be told apart",
}
ROLES = {"simulator_vs_itself": NULL, "same_user_other_context": POSITIVE, "simulator_hot": POSITIVE,
         "base": POSITIVE}


def split_users(user_ids: Sequence[str], seed: int) -> tuple[set[str], set[str]]:
    """Two disjoint, seeded halves of the distinct users."""
    users = sorted({str(u) for u in user_ids})
    random.Random(seed).shuffle(users)
    half = len(users) // 2
    return set(users[:half]), set(users[half:])


def same_user_other_turns(items: Sequence[Mapping[str, Any]], pool: Sequence[Mapping[str, Any]],
                          seed: int) -> list[str | None]:
    """Per item, a real turn of the same user from another of their held-out items (None if they have none).

    ``pool`` is every held-out per-turn item; turns from the same conversation are preferred out
    (another conversation is another context), falling back to another turn of the same conversation.
    """
    by_user: dict[str, list[Mapping[str, Any]]] = {}
    for it in pool:
        if not it["target_is_end"] and str(it["target"]).strip():
            by_user.setdefault(str(it["user_id"]), []).append(it)
    rng = random.Random(seed)
    out: list[str | None] = []
    for it in items:
        others = [o for o in by_user.get(str(it["user_id"]), []) if o["id"] != it["id"]]
        elsewhere = [o for o in others if o["conversation_id"] != it["conversation_id"]]
        choice = elsewhere or others
        out.append(str(rng.choice(choice)["target"]) if choice else None)
    return out


def judge_alpha(n_judges: int) -> float:
    return ALPHA / max(1, n_judges)


def control_verdict(name: str, by_judge: Mapping[str, Mapping[str, Any]], headline_judge: str) -> tuple[bool, str | None]:
    """(passed, flag) of one paired control from its per-judge results (``accuracy``, ``p_value``)."""
    alpha = judge_alpha(len(by_judge))
    if ROLES[name] == NULL:
        rejected = any(r["p_value"] < alpha for r in by_judge.values())
        return not rejected, (NULL_REJECTED if rejected else None)
    r = by_judge.get(headline_judge) or next(iter(by_judge.values()))
    caught = r["p_value"] < ALPHA and r["accuracy"] > 0.5
    return caught, (None if caught else f"no_power:{name}")
