from usersim.data_prep.conditioning import (build_condition, clip, goal_from_conversation, knowledge_asks, knowledge_discloses,
                                            persona_from_history, persona_from_metadata, rank_typical_openers)
from usersim.data_prep.config import ConditioningConfig
from usersim.data_prep.schema import Conversation, Turn


def conv(*turns, metadata=None):
    return Conversation(id="c", source="s", user_id="u", turns=[Turn(r, t) for r, t in turns], metadata=metadata or {})


def test_clip():
    assert clip("a  b\nc", 10) == "a b c"
    assert clip("abcdefghij", 5) == "abcd…" and len(clip("x" * 50, 8)) == 8


def test_goal_prefers_corpus_prompt_then_keywords_of_first_user_turn():
    c = conv(("assistant", "hi"), ("user", "I need help with my taxes please"), ("user", "later"))
    assert goal_from_conversation(c, 100) == "need, help, taxes"  # never the turn itself
    assert goal_from_conversation(c, 10) == "need, hel…"
    assert goal_from_conversation(conv(("user", "hi how are you?")), 100) == ""  # no content word, no goal
    c.metadata = {"prompt": " talk about  pets "}
    assert goal_from_conversation(c, 100) == "talk about pets"


def test_knowledge_discloses_and_asks_are_keywords_of_the_sentences():
    users = ["hey. I have two dogs and a cat! what do you have?", "my sister lives in Ohio. Im a nurse",
             "why?", "Do you like hiking in the Rocky Mountains? I live near the Alps."]
    assert knowledge_discloses(users, 10, 100) == ["dogs, cat", "sister, ohio", "nurse", "alps"]
    # "what do you have?" has no content word: no item
    assert knowledge_asks(users, 10, 100) == ["hiking, rocky, mountains"]
    assert knowledge_discloses(users, 2, 100) == ["dogs, cat", "sister, ohio"]
    assert knowledge_discloses(["do I have to?", "The weather is nice"], 5, 100) == []
    assert knowledge_discloses(["I work at the New York Stock Exchange downtown"], 5, 100) == ["work, new, york"]


def test_persona_metadata_and_history_excludes_current_conversation():
    assert persona_from_metadata({"country": "US", "language": "en", "ratings": [1], "x": "y"}) == \
        "country: US; language: en"
    ranked = rank_typical_openers([("c1", "hey how are you"), ("c2", "hey how are you doing"), ("c3", "sup")])
    assert ranked[-1][0] == "c3"
    p = persona_from_history(ranked, "c1", 2)
    assert "hey how are you doing" in p and '"hey how are you"' not in p and p.startswith("typical openers:")
    assert persona_from_history([("c1", "only me")], "c1", 3) == ""


def test_build_condition_respects_switches():
    c = conv(("user", "hi! I have a dog named Rex. do you have any pets?"), ("assistant", "yes"),
             metadata={"country": "UK"})
    full = build_condition(c, ConditioningConfig(), persona_history='typical openers: "yo"')
    assert full.persona == 'country: UK; typical openers: "yo"'
    assert full.goal == "dog, rex, pets"
    assert full.knowledge_discloses == ["dog, rex"] and full.knowledge_asks == ["pets"]
    assert set(full.style) == {"length", "casing", "punctuation", "emoji", "typos"}
    off = build_condition(c, ConditioningConfig(persona=False, goal=False, knowledge=False, style=False))
    assert (off.persona, off.goal, off.knowledge_discloses, off.knowledge_asks, off.style) == ("", "", [], [], {})


def test_persona_history_skips_openers_differing_only_in_case_or_punctuation():
    ranked = [("a", "Hello"), ("b", "hello?"), ("c", "Hey there"), ("d", "yo")]
    assert persona_from_history(ranked, "x", 2) == 'typical openers: "Hello" | "Hey there"'
