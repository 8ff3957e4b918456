"""Generate a WildChat-shaped JSONL corpus of N conversations (synthetic text, real field layout).

The layout follows the public WildChat-1M rows (allenai/WildChat-1M dataset card): one JSON
object per line with ``conversation_hash``, ``model``, ``timestamp``, ``conversation`` (a list of
turns, each with ``role``, ``content``, ``language``, ``country``, ``state``, ``hashed_ip``,
``header``, ``toxic``, ``redacted``, ``turn_identifier``, ``timestamp``), ``turn``, ``language``,
``openai_moderation``, ``detoxify_moderation``, ``toxic``, ``redacted``, ``state``, ``country``,
``hashed_ip`` and ``header``. Text is random words, numbers and now and then an email, URL,
phone number or IP address (so the PII scrub has digits and addresses to look at, as in real
chats); the point is the shape and the size, so the data stage's speed and memory can be
measured at 10k..1M conversations without the real corpus.

A small, fixed fraction of lines is deliberately bad (truncated JSON, an empty turn, an unknown
role, a non-string content) so the quarantine path runs too.

Speed: every random choice comes from ``random.Random.randbytes`` (a byte picks a word from a
256-entry table), and each line is assembled from pre-serialised JSON pieces with only the
varying strings encoded, so 1M conversations (about 5 GB) take a couple of minutes on one core.

    .venv/bin/python bench/make_wildchat_corpus.py --n 10000 --out bench/data/wildchat_10k.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

VERSION = 2  # bumped when the generated text changes (cached corpora are named with it)
WORDS = (
    "the a to and of I you it is in that for on with can how what my this be do not have are "
    "please write code python error function list file help me explain why when story essay "
    "translate english chinese data model table number time make need want know think like "
    "good thanks ok yes no more example again summary short long answer question problem fix "
    "email letter game character world city company plan project report test result value "
    "2023 10 3.5 404 100 v1.2.3 12:30 1,000 2024-01-15 42"
).split()
# Rare tokens the PII scrub acts on (about one turn in 20 holds one).
PII_TOKENS = ("alice@example.com", "+44 20 7946 0958", "(555) 123-4567", "81.2.69.160",
              "https://bob:hunter2@git.example.com/repo.git", "https://api.example.com/v1?api_key=abc123",
              "2001:4860:4860::8888", "192.168.1.1", "https://example.com/page")
_WORD_OF_BYTE = [WORDS[b % len(WORDS)] for b in range(256)]  # a random byte -> a word
LANGUAGES = (("English", 0.55), ("Chinese", 0.15), ("Russian", 0.1), ("French", 0.05),
             ("Spanish", 0.05), ("German", 0.05), ("Japanese", 0.05))
COUNTRIES = ("United States", "China", "Russia", "France", "Spain", "Germany", "Japan", "India", "Brazil")
MODELS = ("gpt-3.5-turbo-0301", "gpt-3.5-turbo-0613", "gpt-4-0314", "gpt-4-1106-preview")
MODERATION_CATEGORIES = ("harassment", "hate", "self-harm", "sexual", "violence")
BAD_EVERY = 200  # one line in BAD_EVERY is malformed (0.5%)

_HEADER = json.dumps({"accept-language": "en-US,en;q=0.9", "user-agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"})
_DETOXIFY = json.dumps({"identity_attack": 1e-4, "insult": 1e-4, "obscene": 1e-4, "severe_toxicity": 1e-5,
                        "sexual_explicit": 1e-5, "threat": 1e-5, "toxicity": 1e-3})
_LANGUAGE_CUTS = [round(sum(w for _, w in LANGUAGES[: i + 1]) * 256) for i in range(len(LANGUAGES))]
_encode_str = json.encoder.encode_basestring  # a JSON string literal, non-ASCII kept (ensure_ascii=False)


def _moderation_entry(rng: random.Random) -> str:
    scores = {c: round(rng.random() * 1e-3, 8) for c in MODERATION_CATEGORIES}
    return json.dumps({"categories": {c: False for c in MODERATION_CATEGORIES}, "category_scores": scores,
                       "flagged": False})


# ``openai_moderation`` entries are drawn from a fixed pool of 4096 (the scores only need to look real).
_MODERATION = [_moderation_entry(random.Random(k)) for k in range(4096)]


def _language(byte: int) -> str:
    return next((name for (name, _), cut in zip(LANGUAGES, _LANGUAGE_CUTS) if byte < cut), LANGUAGES[-1][0])


def _text(rng: random.Random, lo: int, hi: int) -> str:
    words = list(map(_WORD_OF_BYTE.__getitem__, rng.randbytes(rng.randint(lo, hi))))
    if rng.random() < 0.05:
        words.insert(len(words) // 2, rng.choice(PII_TOKENS))
    return " ".join(words)


def wildchat_turns(i: int, rng: random.Random, n_users: int) -> dict:
    """The varying parts of one WildChat-shaped conversation (1..8 user turns, assistant replies
    longer than user turns)."""
    n_user = min(8, 1 + int(rng.expovariate(0.6)))
    pick = rng.randbytes(4)
    turns = []
    for _ in range(n_user):
        turns.append({"role": "user", "content": _text(rng, 3, 40)})
        turns.append({"role": "assistant", "content": _text(rng, 20, 160)})
    return {
        "i": i, "turns": turns, "n_user": n_user, "user_ip": f"{rng.randrange(n_users):064x}"[-64:],
        "language": _language(pick[0]), "country": COUNTRIES[pick[1] % len(COUNTRIES)],
        "model": MODELS[pick[2] % len(MODELS)], "moderation": rng.randbytes(2 * len(turns)),
    }


def row_line(d: dict) -> str:
    """The JSON line of one conversation (the layout of a WildChat-1M row), assembled from pieces."""
    i, country, ip, language = d["i"], _encode_str(d["country"]), _encode_str(d["user_ip"]), _encode_str(d["language"])
    ts = f'"2023-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}+00:00"'
    after = {role: (f', "country": {country if role == "user" else "null"}, '
                    f'"hashed_ip": {ip if role == "user" else "null"}, "header": {_HEADER if role == "user" else "null"}, '
                    f'"language": {language}, "redacted": false, "role": {_encode_str(role)}, "state": null, '
                    f'"timestamp": {ts}, "toxic": false, "turn_identifier": ')
             for role in {t["role"] for t in d["turns"]}}
    turns = ", ".join(
        '{"content": ' + (_encode_str(t["content"]) if isinstance(t["content"], str) else json.dumps(t["content"]))
        + after[t["role"]] + str(i * 16 + k // 2) + "}"
        for k, t in enumerate(d["turns"]))
    mod = d["moderation"]
    moderation = ", ".join(_MODERATION[int.from_bytes(mod[2 * k:2 * k + 2], "little") & 4095]
                           for k in range(len(d["turns"])))
    detoxify = ", ".join([_DETOXIFY] * len(d["turns"]))
    return (f'{{"conversation_hash": "{(i * 2654435761) & (2**128 - 1):032x}", "model": {_encode_str(d["model"])}, '
            f'"timestamp": {ts}, "conversation": [{turns}], "turn": {d["n_user"]}, '
            f'"language": {language}, "openai_moderation": [{moderation}], "detoxify_moderation": [{detoxify}], '
            f'"toxic": false, "redacted": false, "state": null, "country": {country}, "hashed_ip": {ip}, '
            f'"header": {_HEADER}}}')


def _corrupt(line: str, d: dict, i: int) -> str:
    """A malformed variant of the line (cycled through four kinds of damage)."""
    kind = (i // BAD_EVERY) % 4
    if kind == 0:
        return line[: len(line) // 2]  # truncated JSON
    first = dict(d["turns"][0])
    if kind == 1:
        first["content"] = ""  # empty user turn
    elif kind == 2:
        first["role"] = "moderator"  # unknown role
    else:
        first["content"] = {"parts": ["not a string"]}  # non-string content
    return row_line({**d, "turns": [first] + d["turns"][1:]})


def write_corpus(path: str | Path, n: int, seed: int = 0, n_users: int | None = None) -> Path:
    """Write ``n`` WildChat-shaped lines to ``path`` (streamed; memory does not grow with ``n``)."""
    rng = random.Random(seed)
    n_users = n_users or max(1, n // 3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", buffering=1 << 20) as f:
        for i in range(n):
            d = wildchat_turns(i, rng, n_users)
            line = row_line(d)
            if i % BAD_EVERY == BAD_EVERY - 1:
                line = _corrupt(line, d, i)
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
