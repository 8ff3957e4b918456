"""Controls that say whether the discriminators can be trusted.

* human vs human: held-out users split into two disjoint, seeded groups; group A's real turns are
  "real", group B's real turns the "candidate". Both are human, so a calibrated discriminator
  must sit at chance (its CI covers 0.5); otherwise flag ``discriminator_miscalibrated``.
* non-human: text known not to be a human user turn must be caught (CI above 0.5), else flag
  ``discriminator_no_power``. The set (:func:`non_human_texts`) is half word-shuffled real turns
  (same words, broken order) and half templated assistant-style replies built from the real
  turn's own content words (see :data:`ASSISTANT_TEMPLATES`), one per real turn, same user ids.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

from eval.discriminators import FoldFit, discriminate
from eval.style_features import content_tokens, words

MISCALIBRATED = "discriminator_miscalibrated"
NO_POWER = "discriminator_no_power"
ASSISTANT_TEMPLATES = (
    "Certainly! Here are some thoughts about {a}:\n1. {A} can be important.\n2. Consider {b} as well.\n"
    "I hope this helps!",
    "Great question! When it comes to {a}, there are a few things to keep in mind. First, {b} matters. "
    "Let me know if you have any other questions.",
    "As an AI language model, I don't have personal experiences with {a}, but I'd be happy to help you "
    "explore {b}.",
    "Of course! {A} is a broad topic. Here is a brief overview of {b} and why it is relevant.",
)


def split_users(user_ids: Sequence[str], seed: int) -> tuple[set[str], set[str]]:
    users = sorted({str(u) for u in user_ids})
    random.Random(seed).shuffle(users)
    half = len(users) // 2
    return set(users[:half]), set(users[half:])


def non_human_texts(real_texts: Sequence[str], seed: int) -> list[str]:
    """One known non-human text per real turn: even positions word-shuffled, odd templated."""
    rng = random.Random(seed)
    out = []
    for i, text in enumerate(real_texts):
        if i % 2 == 0:
            ws = words(text) or ["ok"]
            ws = ws + ws[:1] if len(ws) == 1 else ws
            shuffled = ws[:]
            for _ in range(5):
                rng.shuffle(shuffled)
                if shuffled != ws:
                    break
            out.append(" ".join(shuffled))
        else:
            toks = sorted(content_tokens(text)) or ["this topic"]
            a, b = rng.choice(toks), rng.choice(toks)
            out.append(rng.choice(ASSISTANT_TEMPLATES).format(a=a, A=a.capitalize(), b=b))
    return out


def run_controls(
    real_texts: Sequence[str],
    real_users: Sequence[str],
    fold_fits: dict[str, FoldFit],
    *,
    n_splits: int = 5,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """``{"human_vs_human": {disc: result}, "non_human": {disc: result}, "flags": [...]}``."""
    group_a, _ = split_users(real_users, seed)
    a = [(t, u) for t, u in zip(real_texts, real_users) if str(u) in group_a]
    b = [(t, u) for t, u in zip(real_texts, real_users) if str(u) not in group_a]
    fake = non_human_texts(real_texts, seed)
    controls: dict[str, Any] = {"human_vs_human": {}, "non_human": {}, "flags": []}
    flags: list[str] = []
    for name, fit in fold_fits.items():
        hvh = discriminate([t for t, _ in a], [u for _, u in a], [t for t, _ in b], [u for _, u in b],
                           fold_fit=fit, name=name, n_splits=n_splits, n_boot=n_boot, seed=seed)
        ok = hvh.covers_chance()
        controls["human_vs_human"][name] = {**hvh.to_dict(), "passed": ok}
        if not ok and MISCALIBRATED not in flags:
            flags.append(MISCALIBRATED)
        nh = discriminate(real_texts, real_users, fake, real_users, fold_fit=fit, name=name, n_splits=n_splits,
                          n_boot=n_boot, seed=seed)
        ok = nh.ci_low > 0.5
        controls["non_human"][name] = {**nh.to_dict(), "passed": ok}
        if not ok and NO_POWER not in flags:
            flags.append(NO_POWER)
    controls["flags"] = flags
    controls["description"] = {
        "human_vs_human": "two disjoint held-out user groups, both human; must be at chance (CI covers 0.5)",
        "non_human": "real turns vs word-shuffled real turns and templated assistant replies; must be caught "
                     "(CI above 0.5)",
    }
    return controls
