"""The data stage's fast paths give exactly what the plain definitions give.

Each sped-up function is checked against a reference written the slow, obvious way (the code it
replaced), on many random inputs built to hit its edge cases: PII prefilters, incremental leak
scrubbing, persona histories computed once per user, the style counts (emoji, words, casing, typos),
whitespace normalisation, n-grams, rows built without ``dataclasses.asdict``. Real chitchat and
ShareGPT turns are checked too, where the prefilters and fast paths do their work.
tests/test_data_golden.py pins the whole stage's output.
"""

from __future__ import annotations

import marshal
import random
import re
import sys
from collections import Counter
from dataclasses import replace

import pytest

from real_turns import chitchat_user_turns, sharegpt_exchanges
from usersim.data_prep import pii, style
from usersim.data_prep.conditioning import (ENGLISH_STOP_WORDS, abstract_goal, join_persona, persona_from_head,
                                            persona_from_history, persona_head, scrub_condition, split_persona)
from usersim.data_prep.dedupe import normalise_text
from usersim.data_prep.leakage import condition_text, ngram_set, shares_span, word_ngrams, word_ngrams_of
from usersim.data_prep.condition_pass import condition_row_to_dict
from usersim.data_prep.staging import frame_row, iter_frame_ids, iter_frames, stage_frame
from usersim.data_prep.prompt_format import Condition
from usersim.data_prep.schema import Conversation, Turn


def test_stop_words_are_scikit_learns():
    text = pytest.importorskip("sklearn.feature_extraction.text")
    assert ENGLISH_STOP_WORDS == text.ENGLISH_STOP_WORDS


# ---- PII -----------------------------------------------------------------------------------

def reference_scrub_text(text: str, counts: Counter) -> str:
    """Every pattern on every text (the scrub before its prefilters)."""
    def url(m):
        u = m.group(0)
        if pii._URL_USERINFO.match(u) or pii._SECRET_PARAM.search(u):
            counts["credential_url"] += 1
            return pii.PLACEHOLDERS["credential_url"]
        return u

    def email(m):
        counts["email"] += 1
        return pii.PLACEHOLDERS["email"]

    def ipv4(m):
        if not pii.identifies_a_host(m.group(0)):
            return m.group(0)
        counts["ip"] += 1
        return pii.PLACEHOLDERS["ip"]

    def ipv6(m):
        if not (pii._is_ipv6(m.group(0)) and pii.identifies_a_host(m.group(0))):
            return m.group(0)
        counts["ip"] += 1
        return pii.PLACEHOLDERS["ip"]

    def phone(m):
        s = m.group(0)
        n = pii._digits(s)
        if (s.startswith("+") and not 8 <= n <= 15) or (s.startswith("0") and not 10 <= n <= 11):
            return s
        counts["phone"] += 1
        return pii.PLACEHOLDERS["phone"]

    text = pii._URL.sub(url, text)
    text = pii._EMAIL.sub(email, text)
    text = pii._IPV4.sub(ipv4, text)
    text = pii._IPV6.sub(ipv6, text)
    return pii._PHONE.sub(phone, text)


PII_PIECES = ["a@b.co", "x.y+z@mail.example.org", "https://u:p@h.com/x", "http://a.b/c?token=1", "ftp://x.org/",
              "8.8.8.8", "10.0.0.1", "81.2.69.160", "2001:4860:4860::8888", "fe80::1", "dead:beef::cafe", "::",
              "+44 20 7946 0958", "(555) 123-4567", "555.123.4567", "020 7946 0958", "01 23 45 67 89", "12:30",
              "v1.2.3", "1,000", "٣٤٥.٦٧٨.٩٠١.٢٣٤", "+1", "@", "://", ".", ":", "5", " ", "\n", "word", "é", "x@y",
              "2024-01-15", "404 100", "1-800-555-0199", "07700 900123", "+1 (555) 123-4567", "(555)", "555", "0",
              "1:2:3:4:5:6:7:8", "2607:f8b0:4005:80a::200e", "12", "+", "-", "(", ")", "١٢٣ ٤٥٦ ٧٨٩٠",
              "(555)1234567", "0201 2345678", "+442079460958", "2a00:1450:4001:828:0:0:0:200e"]


def test_pii_prefilters_change_nothing():
    rng = random.Random(0)
    total = Counter()
    for _ in range(20000):
        text = "".join(rng.choice(PII_PIECES) + rng.choice(["", " ", ".", ":", "@", "/", "-", "", ""])
                       for _ in range(rng.randint(0, 8)))
        fast, slow = Counter(), Counter()
        assert pii.scrub_text(text, fast) == reference_scrub_text(text, slow), text
        assert fast == slow, text
        total += slow
    assert min(total[k] for k in pii.PLACEHOLDERS) > 200, total


def _real_texts() -> list[str]:
    texts = [t for pairs in chitchat_user_turns(300).values() for t, _ in pairs][:3000]
    return texts + [t for _, user, reply in sharegpt_exchanges(400) for t in (user, reply)]


def test_pii_prefilters_change_nothing_on_real_text():
    """Real user turns and ChatGPT replies (code, logs, tables, numbers), where the prefilters do their work."""
    for text in _real_texts():
        fast, slow = Counter(), Counter()
        assert pii.scrub_text(text, fast) == reference_scrub_text(text, slow), text
        assert fast == slow, text


# ---- style ---------------------------------------------------------------------------------

def _fuzz(alphabet: str, n: int, seed: int, max_len: int = 14) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, max_len))) for _ in range(n)]


def test_emoji_count_is_the_emoji_pattern():
    texts = _fuzz(":;=8-'<3)(][DPpOo/\\|a_ 1é😀☀\n", 50000, 2) + _real_texts()
    counts = [style.emoji_count(t) for t in texts]
    assert counts == [len(style.EMOJI_RE.findall(t)) for t in texts]
    assert sum(c > 0 for c in counts) > 1000


def test_words_are_the_word_pattern():
    texts = _fuzz("aZ9_'’ -.é\n", 20000, 3) + _real_texts()
    assert [style.words(t) for t in texts] == [style.WORD_RE.findall(t) for t in texts]


def _reference_casing(text: str) -> str:
    """Casing by its plain definition: the first letter of every sentence :func:`style.sentences` gives."""
    capitals, letters = style._capitals_and_letters(text)
    if capitals == 0:
        return "lower"
    th = style.STYLE_THRESHOLDS["casing"]
    if letters >= th["upper_min_letters"] and capitals / letters >= th["upper_letter_share"]:
        return "upper"
    firsts = [c for c in (s.lstrip("\"'“‘([")[:1] for s in style.sentences(text)) if c.isalpha()]
    return "proper" if firsts and all(c.isupper() for c in firsts) else "mixed"


def test_casing_and_typos_are_their_definitions():
    texts = _fuzz("aAbB .!?…\n\"(“ ", 30000, 4) + _fuzz("sSoOuUrRiI ''w9_", 30000, 5) + _real_texts()
    # every letter elongated, in both cases and mixed (the triple-letter gate must let each through)
    texts += [f"so {c * 3} {c.upper() * 3}x {c}{c.upper()}{c}y" for c in "abcdefghijklmnopqrstuvwxyzéß"]
    styles = [style.turn_style(t) for t in texts]
    assert [s.casing for s in styles] == [_reference_casing(t) for t in texts]
    assert [s.typos for s in styles] == [sum(map(style.is_typo, style.WORD_RE.findall(t))) for t in texts]
    assert {s.casing for s in styles} == {"lower", "upper", "proper", "mixed"}
    assert sum(s.typos > 0 for s in styles) > 1000


# ---- whitespace, n-grams, rows -------------------------------------------------------------

def test_normalise_text_matches_the_regex_definition():
    ws = re.compile(r"\s+")
    spaces = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    rng = random.Random(1)
    for _ in range(20000):
        t = "".join(rng.choices(spaces + list("aZ.\u200b\ufeffΣ"), k=rng.randint(0, 10)))
        assert normalise_text(t) == ws.sub(" ", t).strip().lower(), repr(t)


@pytest.mark.parametrize("n", range(0, 6))
def test_word_ngrams_of_matches_slices(n):
    for length in range(0, 8):
        words = [f"w{i}" for i in range(length)]
        assert word_ngrams_of(words, n) == [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def test_staged_rows_match_to_row():
    conv = Conversation(id="c", source="s", user_id="u", turns=[Turn("user", "hi"), Turn("assistant", "yo")],
                        metadata={"b": [1, {"x": None}], "a": "é"}, location="f:1", group_id="g",
                        other_user_ids=["v"])
    frames = list(iter_frames(stage_frame(conv) + stage_frame(replace(conv, id="c2", turns=[]))))
    assert [frame_row(f) for f in frames] == [conv.to_row(), replace(conv, id="c2", turns=[]).to_row()]
    assert list(frame_row(frames[0])) == list(conv.to_row())  # same key order (quarantine lines)
    assert list(iter_frame_ids(stage_frame(conv) + stage_frame(conv))) == [("c", "u"), ("c", "u")]
    cond = Condition(persona="p", goal="g", knowledge_discloses=["a"], knowledge_asks=["b", "c"],
                     style={"length": "short", "emoji": "none"})
    assert condition_row_to_dict(cond) == cond.to_row()


# ---- scrub_condition -----------------------------------------------------------------------

def reference_scrub_condition(condition: Condition, user_turns, n: int, counts: Counter) -> Condition:
    """The scrub before it became incremental: rebuild and check the whole text for every item."""
    avoid = ngram_set(user_turns, n)

    def clean(candidate: Condition) -> bool:
        return not shares_span(condition_text(candidate), avoid, n)

    parts, openers = split_persona(condition.persona)
    kept_parts, kept_openers = [], []
    for part in parts:
        if clean(Condition(persona=join_persona(kept_parts + [part], []))):
            kept_parts.append(part)
    for opener in openers:
        if clean(Condition(persona=join_persona(kept_parts, kept_openers + [opener]))):
            kept_openers.append(opener)
    out = Condition(persona=join_persona(kept_parts, kept_openers), style=dict(condition.style))
    for goal in (condition.goal, abstract_goal(condition.goal, avoid, n)):
        if goal and clean(replace(out, goal=goal)):
            out.goal = goal
            break
    for item in condition.knowledge_discloses:
        if clean(replace(out, knowledge_discloses=out.knowledge_discloses + [item])):
            out.knowledge_discloses.append(item)
    for item in condition.knowledge_asks:
        if clean(replace(out, knowledge_asks=out.knowledge_asks + [item])):
            out.knowledge_asks.append(item)
    counts["persona"] += len(parts) + len(openers) - len(kept_parts) - len(kept_openers)
    counts["goal"] += out.goal != condition.goal
    counts["knowledge_discloses"] += len(condition.knowledge_discloses) - len(out.knowledge_discloses)
    counts["knowledge_asks"] += len(condition.knowledge_asks) - len(out.knowledge_asks)
    return out


VOCAB = ["i", "have", "two", "dogs", "Rex", "typical", "openers", "country", "US", "ΑΣ", "ς", "don't", "dont",
         "the", "cat", "hello", "42", "lyon", "İs", "cooking"]
SEPARATORS = [" ", " ", " ", ", ", "; ", ": ", "\n", " | ", '"', "'", "’", "-", "."]


def _text(rng: random.Random, lo: int, hi: int) -> str:
    out = []
    for _ in range(rng.randint(lo, hi)):
        out += [rng.choice(VOCAB), rng.choice(SEPARATORS)]
    return "".join(out).strip()


def _random_condition(rng: random.Random, user_turns: list[str]) -> Condition:
    def piece(lo: int, hi: int) -> str:
        if rng.random() < 0.4:  # a copy of some of the user's words, with other separators
            words = rng.choice(user_turns).split()
            i = rng.randrange(len(words))
            return rng.choice(SEPARATORS).join(words[i:i + rng.randint(lo, hi)]).strip()
        return _text(rng, lo, hi)

    parts = [f"{k}: {piece(1, 4)}" for k in rng.sample(["country", "language", "age"], rng.randint(0, 3))]
    openers = [piece(1, 6) for _ in range(rng.randint(0, 3))]
    openers = [o for o in openers if o and '"' not in o and "; " not in o]
    return Condition(persona=join_persona([p for p in parts if "; " not in p], openers),
                     goal=rng.choice(["", piece(1, 8)]),
                     knowledge_discloses=[piece(0, 4) for _ in range(rng.randint(0, 4))],
                     knowledge_asks=[piece(0, 4) for _ in range(rng.randint(0, 4))],
                     style={"length": "short"})


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_incremental_scrub_matches_the_whole_text_check(n):
    rng = random.Random(n)
    scrubbed = Counter()
    for _ in range(1500):
        user_turns = [_text(rng, 1, 10) for _ in range(rng.randint(1, 3))]
        condition = _random_condition(rng, user_turns)
        fast, slow = Counter(), Counter()
        got = scrub_condition(condition, user_turns, n=n, counts=fast)
        assert got == reference_scrub_condition(condition, user_turns, n, slow), (condition, user_turns)
        assert fast == slow
        scrubbed += slow
    assert min(scrubbed.values()) > 50 and len(scrubbed) == 4  # every field gets scrubbed sometimes


# ---- persona histories ---------------------------------------------------------------------

@pytest.mark.parametrize("n_turns", [0, 1, 2, 3, 4])
def test_persona_histories_match_persona_from_history(n_turns):
    rng = random.Random(n_turns)
    openers = ["hi", "Hello!", "hello?", "write code", "Write code.", "help me " * 20, "a", "b c", "ΑΣ"]
    for _ in range(600):
        k = rng.randint(0, 9)
        ids = [f"c{rng.randint(0, 12 if rng.random() < 0.2 else 10**6)}" for _ in range(k)]
        ranked = [(cid, rng.choice(openers)) for cid in ids]
        head = persona_head(ranked, n_turns)
        assert len({cls for _, cls, _ in head}) <= max(1, n_turns) + 1 or len(set(ids)) < len(ids)
        packed = marshal.loads(marshal.dumps(tuple(head)))  # as the stage keeps it
        for cid in set(ids) | {"not-there"}:
            assert persona_from_head(head, cid, n_turns) == persona_from_history(ranked, cid, n_turns), (ranked, cid)
            assert persona_from_head(packed, cid, n_turns) == persona_from_history(ranked, cid, n_turns)


def test_word_ngrams_still_normalise():
    assert word_ngrams("Don't stop, Rex! Go", 2) == [("dont", "stop"), ("stop", "rex"), ("rex", "go")]


def reference_rank_typical_openers(openers):
    from usersim.data_prep.conditioning import _words

    bags = [_words(t) for _, t in openers]

    def score(i):
        others = [j for j in range(len(bags)) if j != i]
        if not others:
            return 0.0
        sims = [len(bags[i] & bags[j]) / len(bags[i] | bags[j]) if bags[i] | bags[j] else 0.0 for j in others]
        return sum(sims) / len(sims)

    order = sorted(range(len(openers)), key=lambda i: (-score(i), openers[i][1], openers[i][0]))
    return [openers[i] for i in order]


def test_rank_typical_openers_matches_pairwise_definition():
    from usersim.data_prep.conditioning import rank_typical_openers

    rng = random.Random(0)
    words = "a b c d e f g h Hi HI ! ?".split()
    for _ in range(3000):
        openers = [(f"c{rng.randint(0, 5)}", " ".join(rng.choices(words, k=rng.randint(0, 5))))
                   for _ in range(rng.randint(0, 8))]
        assert rank_typical_openers(openers) == reference_rank_typical_openers(openers), openers


def test_conversations_travel_to_workers_unchanged():
    from usersim.data_prep.staging import conversation_tuple, tuple_conversation

    conv = Conversation(id="c", source="s", user_id="u", turns=[Turn("user", "hi"), Turn("assistant", "é")],
                        metadata={"a": [1]}, location="f:1", group_id="g", other_user_ids=["v"])
    assert tuple_conversation(conversation_tuple(conv)) == conv


def test_wildchat_fast_path_maps_as_the_full_checks():
    from usersim.data_prep.adapters.wildchat import wildchat_conversation

    rng = random.Random(0)
    roles = ["user", "assistant", "User ", "human", "gpt", "chatbot", "system", "moderator", None, 3]
    contents = ["hi", "", [{"type": "text", "text": "part"}], None, 5, {"parts": ["x"]}]
    for _ in range(3000):
        msgs = []
        for _ in range(rng.randint(0, 4)):
            msg = {"role": rng.choice(roles), "content": rng.choice(contents)}
            if rng.random() < 0.1:
                msg.pop(rng.choice(["role", "content"]))
            msgs.append(msg if rng.random() < 0.95 else "not an object")
        row = {"conversation": msgs, "conversation_hash": "h", "hashed_ip": "ip"}
        try:
            got = wildchat_conversation(row, "wildchat", "f:1")
        except Exception as e:  # noqa: BLE001 - compared below
            got = (type(e).__name__, str(e))
        try:
            ref = reference_wildchat(row)
        except Exception as e:  # noqa: BLE001
            ref = (type(e).__name__, str(e))
        assert got == ref, msgs


def reference_wildchat(row):
    """The row mapping with every turn through the full checks (no fast path)."""
    from usersim.data_prep.adapters import wildchat as w
    from usersim.data_prep.adapters.record_checks import (content_text, map_role, require_encodable, require_field,
                                                          require_list, require_object)

    turns, system = [], []
    for i, msg in enumerate(require_list(row, "conversation", "row")):
        where = f"conversation[{i}]"
        msg = require_object(msg, where)
        role = require_field(msg, "role", where)
        text = content_text(require_field(msg, "content", where), where)
        map_role(role, text, where, user_roles=w.USER_ROLES, assistant_roles=w.ASSISTANT_ROLES,
                 system_roles=w.SYSTEM_ROLES, turns=turns, system=system)
    metadata = {"system": "\n\n".join(system)} if system else {}
    return require_encodable(Conversation(id="wildchat:h", source="wildchat", user_id="ip", turns=turns,
                                          metadata=metadata, location="f:1"))


def test_raw_lines_resolve_to_the_adapters_items(tmp_path):
    """Reading a local WildChat JSONL as raw lines (parsed later, in workers) yields exactly the
    adapter's items: BOM, blank lines, bad JSON, invalid UTF-8, unknown roles, a cut last line,
    max_items, several files."""
    import codecs
    import json as _json

    from usersim.data_prep.adapters import RawLine, iter_source, iter_source_lines, resolve_line
    from usersim.data_prep.config import SourceConfig

    def row(i, **kw):
        turns = [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "yo"}]
        return _json.dumps({"conversation_hash": f"h{i}", "hashed_ip": f"ip{i % 3}", "conversation": turns,
                            "language": "English", **kw}).encode()

    first = [codecs.BOM_UTF8 + row(0), b"", b"   ", row(1), b"{nope", b'{"x": "\xe9"}', row(2, model=None),
             b'{"conversation": [{"role": "moderator", "content": "x"}]}', b"[1, 2]", b'"text"']
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.jsonl").write_bytes(b"\n".join(first) + b"\n")
    (tmp_path / "d" / "b.jsonl").write_bytes(b"\n\n" + row(3) + b"\n" + row(4)[:-5])  # cut last line
    for max_items in (0, 3, 9):
        source = SourceConfig(adapter="wildchat", path=str(tmp_path / "d"), name="wc", max_items=max_items)
        lines = iter_source_lines(source)
        assert lines is not None
        got = [resolve_line(it, "wildchat", "wc") if isinstance(it, RawLine) else it for it in lines]
        assert got == list(iter_source(source)), max_items
        assert len(got) == (max_items or 10)
    assert iter_source_lines(SourceConfig(adapter="sharegpt")) is None  # not a line-mapped adapter
    (tmp_path / "c.json").write_bytes(b"[" + row(5) + b"]")
    assert iter_source_lines(SourceConfig(adapter="wildchat", path=str(tmp_path / "c.json"))) is None
