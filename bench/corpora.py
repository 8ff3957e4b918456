"""Conversation records the benchmarks train and generate on: real slices and synthetic k-turn sets.

Real conversations come through the data stage's own code (adapter -> validate_conversation ->
build_condition -> conversation_record), so the benchmarks measure the records training sees.
Synthetic sets fix the number of user turns per conversation (k = 2, 4, 8, 16) and the turn
lengths, for the speed-up-versus-turns curve.
"""

from __future__ import annotations

import random
from typing import Any, Iterator

from usersim.data_prep.conditioning import build_condition
from usersim.data_prep.config import ConditioningConfig, FilterConfig, SourceConfig
from usersim.data_prep.records import conversation_record
from usersim.data_prep.schema import ASSISTANT, USER, Conversation, Turn
from usersim.data_prep.validate import validate_conversation

_WORDS = ("i you the a is to and of it that what do like my so have was in for not but just "
          "how about can think know really yes no ok well good great thanks why when where "
          "python code file error please help write explain example more time day work").split()


def _kept(adapter: str, max_items: int, filters: FilterConfig) -> Iterator[Conversation]:
    from usersim.data_prep.adapters import iter_source

    for item in iter_source(SourceConfig(adapter=adapter, max_items=max_items)):
        if isinstance(item, Conversation):
            out, _ = validate_conversation(item, filters)
            if isinstance(out, Conversation):
                yield out


def real_records(adapter: str, n: int, min_user_turns: int = 1, max_chars: int = 0,
                 read_limit: int = 0) -> list[dict[str, Any]]:
    """The first ``n`` valid conversation records of a packaged corpus (``chitchat`` or ``sharegpt``).

    ``max_chars`` (if set) skips conversations longer than that many characters, to keep CPU runs
    short; ``read_limit`` caps how many adapter items are read.
    """
    filters = FilterConfig(min_user_turns=min_user_turns)
    cond_cfg = ConditioningConfig()
    out = []
    for conv in _kept(adapter, read_limit, filters):
        if max_chars and sum(len(t.text) for t in conv.turns) > max_chars:
            continue
        out.append(conversation_record(conv, build_condition(conv, cond_cfg)))
        if len(out) >= n:
            break
    if not out:
        raise RuntimeError(f"no usable conversations from the {adapter!r} adapter; is its package installed?")
    return out


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(_WORDS, k=max(1, n)))


def synthetic_records(n: int, user_turns: int, user_words: int = 12, assistant_words: int = 60,
                      seed: int = 0) -> list[dict[str, Any]]:
    """``n`` records with exactly ``user_turns`` user turns each (assistant last: end target added).

    Turn lengths are drawn around the given word counts (±50%), ShareGPT-like by default (long
    assistant turns, short user turns).
    """
    rng = random.Random(seed)
    cond_cfg = ConditioningConfig()
    out = []
    for i in range(n):
        turns = []
        for _ in range(user_turns):
            turns.append(Turn(USER, _words(rng, int(user_words * rng.uniform(0.5, 1.5)))))
            turns.append(Turn(ASSISTANT, _words(rng, int(assistant_words * rng.uniform(0.5, 1.5)))))
        conv = Conversation(id=f"synthetic-k{user_turns}-{i}", source="synthetic", user_id=f"u{i}", turns=turns,
                            group_id=f"synthetic-k{user_turns}-{i}")
        out.append(conversation_record(conv, build_condition(conv, cond_cfg)))
    return out


def all_texts(records: list[dict[str, Any]]) -> list[str]:
    """Every turn text (what the tiny tokenizer is trained on)."""
    return [t["text"] for r in records for t in r["turns"]]
