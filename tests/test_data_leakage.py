"""No oracle conditions: n-gram leak functions, the scrub, and the guarantee on real chit-chat data."""

from collections import Counter, defaultdict

import pytest

from usersim.data_prep.adapters import iter_source
from usersim.data_prep.conditioning import (build_condition, join_persona, keywords, persona_from_history,
                                            rank_typical_openers, scrub_condition, split_persona)
from usersim.data_prep.config import ConditioningConfig, SourceConfig
from usersim.data_prep.leakage import (condition_items, condition_text, copy_rate, ngram_set, normalised_words,
                                       shared_spans, word_ngrams)
from usersim.data_prep.prompt_format import Condition
from usersim.data_prep.records import conversation_record, per_turn_items
from usersim.data_prep.schema import Conversation, Quarantined, Turn
from usersim.eval.failure_modes import knowledge_leak, revealed_items


# ---------------------------------------------------------------- n-gram functions
def test_normalised_words_lower_case_and_strip_punctuation():
    assert normalised_words("Don't stop, Rex!  I’m 22... (ok)") == ["dont", "stop", "rex", "im", "22", "ok"]
    assert normalised_words("well-known e-mail\nsnake_case") == ["well", "known", "e", "mail", "snake", "case"]
    assert normalised_words("Café ÜBER") == ["café", "über"]
    assert normalised_words("?! ...") == []


def test_word_ngrams_in_order_with_repeats():
    assert word_ngrams("I have two dogs named Rex.") == [("i", "have", "two", "dogs"), ("have", "two", "dogs", "named"),
                                                         ("two", "dogs", "named", "rex")]
    assert word_ngrams("ha ha ha ha ha") == [("ha", "ha", "ha", "ha")] * 2
    assert word_ngrams("only three words") == []
    assert word_ngrams("a b c", n=2) == [("a", "b"), ("b", "c")]


def test_ngram_set_never_spans_two_texts():
    assert ngram_set(["one two three", "four five six seven"]) == {("four", "five", "six", "seven")}


def test_shared_spans_ignore_case_and_punctuation_and_are_distinct_in_order():
    turn = "Yes! I have two dogs named Rex, and two dogs named Rex is a lot"
    assert shared_spans(turn, "my neighbour has Two Dogs, named rex.") == ["two dogs named rex"]
    assert shared_spans("I have two dogs named Rex", "i have two dogs named rex") == [
        "i have two dogs", "have two dogs named", "two dogs named rex"]
    assert shared_spans("I have two cats named Rex", "I have two dogs named Rex") == []
    assert shared_spans("two dogs named", "two dogs named") == []  # under 4 words: nothing to share


def test_condition_text_and_items():
    cond = Condition(persona="country: US", goal="plan a trip", knowledge_discloses=["dogs, rex"],
                     knowledge_asks=["trail, denver", "weather"], style={"length": "short"})
    assert condition_items(cond) == ["country: US", "plan a trip", "dogs, rex", "trail, denver", "weather"]
    assert condition_text(cond) == "country: US\nplan a trip\ndogs, rex\ntrail, denver\nweather"
    assert condition_text(Condition(style={"length": "short"})) == ""


def test_copy_rate_is_the_share_of_turn_4grams_in_the_condition():
    cond = Condition(goal="What is your favorite movie of all time?")
    # "what is your favorite" and "is your favorite movie" are copied, "your favorite movie ever" is not
    assert copy_rate("What is your favorite movie ever", cond) == pytest.approx(2 / 3)
    assert copy_rate("what is your favorite movie of all time", cond) == 1.0
    assert copy_rate("I like horror films a lot", cond) == 0.0
    assert copy_rate("favorite movie?", cond) is None  # under 4 words: no 4-gram, no rate
    assert copy_rate("hello there my friend", Condition()) == 0.0
    # the condition is read as one text, so a span across two items counts
    assert copy_rate("you good at playing", Condition(goal="What are you good at?",
                                                      knowledge_discloses=["playing, guitar"])) == 1.0


# ---------------------------------------------------------------- keyword abstraction
def test_keywords_drop_stop_and_filler_words_and_keep_numbers():
    assert keywords("I have two dogs named Rex", 3) == ["dogs", "rex"]
    assert keywords("Im really a nurse at the children's hospital in Denver", 3) == ["nurse", "childrens", "hospital"]
    assert keywords("I am 22 and I love hiking, hiking, HIKING", 5) == ["22", "hiking"]
    assert keywords("what do you think?", 3) == []


def test_keywords_skip_a_word_that_would_complete_an_avoided_span():
    avoid = ngram_set(["new york city marathon route"])
    assert keywords("I ran the New York City Marathon", 6) == ["ran", "new", "york", "city", "marathon"]
    assert keywords("I ran the New York City Marathon", 6, avoid) == ["ran", "new", "york", "city"]
    assert keywords("New York City Marathon route", 6, avoid) == ["new", "york", "city", "route"]


def test_split_persona_inverts_join_persona():
    parts, openers = ["country: US", "age: 30"], ["hi there", "hey, how are you?"]
    persona = join_persona(parts, openers)
    assert persona == 'country: US; age: 30; typical openers: "hi there" | "hey, how are you?"'
    assert split_persona(persona) == (parts, openers)
    assert split_persona("country: US") == (["country: US"], [])
    assert split_persona('typical openers: "yo"') == ([], ["yo"])
    assert split_persona("") == ([], [])


# ---------------------------------------------------------------- a conversation where every field would leak
USER_TURNS = [
    "hi how are you doing today? what is your favorite movie of all time?",
    "I am a nurse at the childrens hospital. I have two dogs named Rex and Max.",
    "Do you like hiking in the Rocky Mountains? I'm really good at playing string instruments.",
]


def leaky_conversation() -> Conversation:
    turns = []
    for i, text in enumerate(USER_TURNS):
        turns += [Turn("user", text), Turn("assistant", f"reply {i}")]
    return Conversation(id="c1", source="s", user_id="u", turns=turns, metadata={
        "occupation": "a nurse at the childrens hospital",  # metadata the user typed again
        "country": "US",
        "prompt": "What is your favorite movie of all time?",  # the corpus prompt, typed again
    })


def test_every_field_that_would_leak_is_scrubbed_and_counted():
    history = persona_from_history([("c0", "hi how are you doing"), ("c9", "yo whats up")], "c1", 3)
    counts = Counter()
    cond = build_condition(leaky_conversation(), ConditioningConfig(), history, counts)
    assert cond.persona == 'country: US; typical openers: "yo whats up"'  # occupation and one opener dropped
    assert cond.goal == "favorite, movie"  # the prompt, abstracted
    assert cond.knowledge_discloses == ["nurse, childrens, hospital", "dogs, rex, max", "playing, string, instruments"]
    assert cond.knowledge_asks == ["favorite, movie", "hiking, rocky, mountains"]
    assert counts == {"persona": 2, "goal": 1, "knowledge_discloses": 0, "knowledge_asks": 0}
    for turn in USER_TURNS:
        assert shared_spans(turn, condition_text(cond)) == []
        assert copy_rate(turn, cond) == 0.0


def test_scrub_drops_verbatim_items_and_a_span_across_two_items():
    users = ["I'm really good at playing string instruments. What are you into?"]
    verbatim = Condition(persona='typical openers: "really good at playing"', goal="What are you good at?",
                         knowledge_discloses=["I'm really good at playing string instruments.", "playing, string"],
                         knowledge_asks=["what are you into?", "string, music"], style={"length": "short"})
    counts = Counter()
    cond = scrub_condition(verbatim, users, counts=counts)
    # "What are you good at?" ends in "you good at"; "playing, string" after it would make "good at playing string"
    assert cond == Condition(goal="What are you good at?", knowledge_asks=["string, music"], style={"length": "short"})
    assert counts == {"persona": 1, "goal": 0, "knowledge_discloses": 2, "knowledge_asks": 1}
    assert shared_spans(users[0], condition_text(cond)) == []


def test_scrub_leaves_a_clean_condition_alone():
    cond = Condition(persona="country: US", goal="talk about pets", knowledge_discloses=["dogs, rex"],
                     knowledge_asks=["cats"], style={"length": "short"})
    counts = Counter()
    assert scrub_condition(cond, ["I have two dogs named Rex", "do you like cats?"], counts=counts) == cond
    assert sum(counts.values()) == 0


def test_keyword_items_still_work_for_eval_failure_modes():
    cond = build_condition(leaky_conversation(), ConditioningConfig())
    # disclosure curve: the user's own turns reveal the items they were abstracted from, a paraphrase too
    assert revealed_items(USER_TURNS[1], cond.knowledge_discloses) == {0, 1}
    assert revealed_items("Rex and Max are my dogs, they love long walks", cond.knowledge_discloses) == {1}
    assert revealed_items("I work in a hospital", cond.knowledge_discloses) == set()  # 1 of 3 words is too few
    # knowledge leak: stating an asked-about topic as fact is caught, asking about it is not
    assert knowledge_leak("Hiking in the Rocky Mountains is the best.", cond.knowledge_asks)
    assert not knowledge_leak("Have you been hiking in the Rocky Mountains?", cond.knowledge_asks)


# ---------------------------------------------------------------- real data
def chitchat_slice(n_items: int) -> list[Conversation]:
    items = iter_source(SourceConfig(adapter="chitchat", max_items=n_items))
    return [c for c in items if not isinstance(c, Quarantined)]


def test_no_real_chitchat_item_holds_a_4gram_of_its_target():
    convs = chitchat_slice(600)
    openers = defaultdict(list)
    for c in convs:
        openers[c.user_id].append((c.id, next(t.text for t in c.turns if t.role == "user")))
    ranked = {u: rank_typical_openers(o) for u, o in openers.items()}
    counts, n_items, copied = Counter(), 0, []
    conditions = []
    for conv in convs:
        cond = build_condition(conv, ConditioningConfig(), persona_from_history(ranked[conv.user_id], conv.id, 3),
                               counts)
        conditions.append(cond)
        for item in per_turn_items(conversation_record(conv, cond)):
            if item["target_is_end"]:
                continue
            n_items += 1
            if shared_spans(item["target"], condition_text(cond)) or copy_rate(item["target"], cond):
                copied.append(item["id"])
    assert n_items > 5000 and copied == []
    # the slice exercises every field: knowledge items are built, prompts and openers get scrubbed
    assert sum(len(c.knowledge_discloses) + len(c.knowledge_asks) for c in conditions) > 1000
    assert sum(bool(c.persona) for c in conditions) > 100
    assert counts["goal"] > 10 and counts["persona"] > 10


# ---------------------------------------------------------------- through the data stage
def test_data_stage_counts_scrubbed_items_and_writes_no_copied_wording(tmp_path, monkeypatch):
    import json

    from datasets import load_from_disk

    import usersim.data_prep.adapters as adapters
    from test_data_main import run

    monkeypatch.setitem(adapters.ADAPTERS, "fake", "test_data_main:read_fake")
    out = run(tmp_path)
    ds = load_from_disk(str(out / "dataset"))
    for split in ("train", "validation", "test"):
        for row in ds[split]:
            users = [t["text"] for t in row["turns"] if t["role"] == "user"]
            cond = Condition.from_row(row["condition"])
            assert not any(shared_spans(u, condition_text(cond)) for u in users)
    # The fake users open every other chat with "hi im uX <uX|chat|0>": the history openers sharing a
    # 4-gram with this chat's user turns are the ones scrubbed (heuristics leave nothing else to scrub).
    openers = defaultdict(list)
    for row in ds["train"]:
        openers[row["user_id"]].append((row["id"], next(t["text"] for t in row["turns"] if t["role"] == "user")))
    expected = 0
    for row in ds["train"]:
        history = persona_from_history(rank_typical_openers(openers[row["user_id"]]), row["id"], 3)
        users = [t["text"] for t in row["turns"] if t["role"] == "user"]
        expected += sum(any(shared_spans(o, u) for u in users) for o in split_persona(history)[1])
    summary = json.loads((out / "summary.json").read_text())
    assert expected > 0
    assert summary["condition_items_scrubbed"] == {"persona": expected, "goal": 0, "knowledge_discloses": 0,
                                                   "knowledge_asks": 0}
    assert (f"removed (a goal abstracted to keywords): persona {expected}, goal 0, knowledge_discloses 0, "
            "knowledge_asks 0.") in (out / "README.md").read_text()
