"""Generate a WildChat-shaped JSONL corpus of N conversations (synthetic text, real field layout).

The layout follows the public WildChat-1M rows (allenai/WildChat-1M dataset card): one JSON
object per line with ``conversation_hash``, ``model``, ``timestamp``, ``conversation`` (a list of
turns, each with ``role``, ``content``, ``language``, ``country``, ``state``, ``hashed_ip``,
``header``, ``toxic``, ``redacted``, ``turn_identifier``, ``timestamp``), ``turn``, ``language``,
``openai_moderation``, ``detoxify_moderation``, ``toxic``, ``redacted``, ``state``, ``country``,
``hashed_ip`` and ``header``. Text is random words; the point is the shape and the size, so the
data stage's speed and memory can be measured at 10k..1M conversations without the real corpus.

A small, fixed fraction of lines is deliberately bad (truncated JSON, an empty turn, an unknown
role, a non-string content) so the quarantine path runs too.

    .venv/bin/python bench/make_wildchat_corpus.py --n 10000 --out bench/data/wildchat_10k.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

WORDS = (
    "the a to and of I you it is in that for on with can how what my this be do not have are "
    "please write code python error function list file help me explain why when story essay "
    "translate english chinese data model table number time make need want know think like "
    "good thanks ok yes no more example again summary short long answer question problem fix "
    "email letter game character world city company plan project report test result value"
).split()
LANGUAGES = (("English", 0.55), ("Chinese", 0.15), ("Russian", 0.1), ("French", 0.05),
             ("Spanish", 0.05), ("German", 0.05), ("Japanese", 0.05))
COUNTRIES = ("United States", "China", "Russia", "France", "Spain", "Germany", "Japan", "India", "Brazil")
MODELS = ("gpt-3.5-turbo-0301", "gpt-3.5-turbo-0613", "gpt-4-0314", "gpt-4-1106-preview")
MODERATION_CATEGORIES = ("harassment", "hate", "self-harm", "sexual", "violence")
BAD_EVERY = 200  # one line in BAD_EVERY is malformed (0.5%)


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(lo, hi)))


def _moderation(rng: random.Random) -> dict:
    scores = {c: round(rng.random() * 1e-3, 8) for c in MODERATION_CATEGORIES}
    return {"categories": {c: False for c in MODERATION_CATEGORIES}, "category_scores": scores, "flagged": False}


def wildchat_row(i: int, rng: random.Random, n_users: int) -> dict:
    """One WildChat-shaped conversation (1..8 user turns, assistant replies longer than user turns)."""
    n_user = min(8, 1 + int(rng.expovariate(0.6)))
    user_ip = f"{rng.randrange(n_users):064x}"[-64:]
    language = rng.choices([l for l, _ in LANGUAGES], weights=[w for _, w in LANGUAGES])[0]
    country = rng.choice(COUNTRIES)
    header = {"accept-language": "en-US,en;q=0.9", "user-agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"}
    ts = f"2023-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}+00:00"
    turns = []
    for k in range(n_user):
        for role, lo, hi in (("user", 3, 40), ("assistant", 20, 160)):
            turns.append({
                "content": _text(rng, lo, hi), "country": country if role == "user" else None,
                "hashed_ip": user_ip if role == "user" else None, "header": header if role == "user" else None,
                "language": language, "redacted": False, "role": role, "state": None, "timestamp": ts,
                "toxic": False, "turn_identifier": i * 16 + k,
            })
    row = {
        "conversation_hash": f"{(i * 2654435761) & (2**128 - 1):032x}", "model": rng.choice(MODELS),
        "timestamp": ts, "conversation": turns, "turn": n_user, "language": language,
        "openai_moderation": [_moderation(rng) for _ in turns],
        "detoxify_moderation": [{"identity_attack": 1e-4, "insult": 1e-4, "obscene": 1e-4, "severe_toxicity": 1e-5,
                                 "sexual_explicit": 1e-5, "threat": 1e-5, "toxicity": 1e-3} for _ in turns],
        "toxic": False, "redacted": False, "state": None, "country": country, "hashed_ip": user_ip, "header": header,
    }
    return row


def _corrupt(line: str, row: dict, i: int) -> str:
    """A malformed variant of the line (cycled through four kinds of damage)."""
    kind = (i // BAD_EVERY) % 4
    if kind == 0:
        return line[: len(line) // 2]  # truncated JSON
    if kind == 1:
        row["conversation"][0]["content"] = ""  # empty user turn
    elif kind == 2:
        row["conversation"][0]["role"] = "moderator"  # unknown role
    else:
        row["conversation"][0]["content"] = {"parts": ["not a string"]}  # non-string content
    return json.dumps(row, ensure_ascii=False)


def write_corpus(path: str | Path, n: int, seed: int = 0, n_users: int | None = None) -> Path:
    """Write ``n`` WildChat-shaped lines to ``path`` (streamed; memory does not grow with ``n``)."""
    rng = random.Random(seed)
    n_users = n_users or max(1, n // 3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", buffering=1 << 20) as f:
        for i in range(n):
            row = wildchat_row(i, rng, n_users)
            line = json.dumps(row, ensure_ascii=False)
            if i % BAD_EVERY == BAD_EVERY - 1:
                line = _corrupt(line, row, i)
            f.write(line + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000, help="number of conversations (lines)")
    p.add_argument("--out", required=True, help="output .jsonl path")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = write_corpus(args.out, args.n, args.seed)
    print(f"wrote {args.n} conversations to {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
