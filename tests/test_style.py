"""usersim.data_prep.style, the one style ruler: hand-written turns with known answers, and the condition that
data_prep writes agreeing with what eval measures on the same text."""

import pytest

from usersim.data_prep.conditioning import build_condition
from usersim.data_prep.config import ConditioningConfig
from usersim.data_prep.schema import Conversation, Turn
from usersim.data_prep.style import emoji_count, is_typo, sentences, style_buckets, turn_style, words
from usersim.eval.behaviour import STATS
from usersim.eval.controllability import style_match
from usersim.eval.failure_modes import style_mismatch
from usersim.eval.style_features import text_features
from real_turns import chitchat_user_turns


def test_words_keep_inner_apostrophes_letters_and_digits():
    assert words("don’t stop — it's 3.5 km, café!! 😀") == ["don’t", "stop", "it's", "3", "5", "km", "café"]
    assert words("'quoted' - ... :)") == ["quoted"]


def test_sentences_end_at_marks_followed_by_space_or_a_line_break():
    assert sentences("I paid 3.5 dollars at a.com. Then i left!\nok… bye") == [
        "I paid 3.5 dollars at a.com.", "Then i left!", "ok…", "bye"]
    assert sentences("  \n ") == []


@pytest.mark.parametrize("text,n", [
    ("nice 😀 :) <3", 3), (":D ;-) =P", 3), ("☀ and ❤️", 2),
    ("at 10:30 (approx), see: http://x.org or C:\\dir, item 8) and x<3", 0), ("no emoji here", 0),
])
def test_emoji_and_emoticons_but_not_times_urls_or_numbered_items(text, n):
    assert emoji_count(text) == n


def test_typo_proxy():
    assert [w for w in words("u dont know, im sooo tired i think r u ok") if is_typo(w)] == [
        "u", "dont", "im", "sooo", "r", "u"]
    # standard spellings, a lone "i" (casing, not spelling), capital single letters, www, "ok"
    assert not any(is_typo(w) for w in words("I don't know. Visit www.x.com in the U.S. or R, ok? i will"))
    assert [w for w in words("teh thier alot becuase gonna idk pls") if is_typo(w)] == [
        "teh", "thier", "alot", "becuase", "gonna", "idk", "pls"]


def test_the_typo_count_is_is_typo_over_the_words():
    texts = ["u dont know, im sooo tired", "I'm fine, U.S. r us", "teh  'im' im's rock'n'roll gonna_x", "yesss www"]
    texts += [t for pairs in chitchat_user_turns(300).values() for t, _ in pairs][:1000]
    for text in texts:
        assert turn_style(text).typos == sum(map(is_typo, words(text))), text


@pytest.mark.parametrize("text,casing", [
    ("all lower here", "lower"), ("😀 123 !", "lower"), ("WHY IS THIS SHOUTING", "upper"),
    ("This is fine. It works.", "proper"), ("OK", "proper"), ('"Hi," she said. (Really.)', "proper"),
    ("This is fine. it works.", "mixed"), ("hello There", "mixed"),
])
def test_turn_casing(text, casing):
    assert turn_style(text).casing == casing


def test_turn_counts():
    s = turn_style("What?! costs $5 at 10% #deal, ok... 😀")
    assert (s.words, s.punctuation, s.emoji, s.typos) == (7, 6, 1, 0)  # $ % # are not punctuation
    assert (s.letters, s.capitals) == (17, 1)
    assert (turn_style("ÉTÉ à Paris").capitals, turn_style("ÉTÉ à Paris").letters) == (4, 9)  # not only ASCII


def _bucket(key, turns):
    return style_buckets(turns)[key]


def test_one_string_is_not_a_list_of_turns():
    with pytest.raises(TypeError, match=r"style_buckets\(\[text\]\)"):
        style_buckets("ok sure")


def test_length_bucket():
    assert _bucket("length", ["hi", "ok cool"]) == "short"
    assert _bucket("length", ["w " * 7, "w " * 9]) == "medium"  # mean 8: no longer short
    assert _bucket("length", [" ".join(["w"] * 15)]) == "medium"
    assert _bucket("length", [" ".join(["w"] * 40), "w " * 10]) == "long"
    assert _bucket("length", ["😀 😀 😀 - - - ... ! ?"]) == "short"  # no words in it


def test_casing_bucket():
    assert _bucket("casing", ["hey there", "ok", "sure thing"]) == "lower"
    assert _bucket("casing", ["Hello there.", "Yes, I do.", "Great"]) == "proper"
    assert _bucket("casing", ["hello", "Yes", "what", "Fine"]) == "mixed"
    assert _bucket("casing", ["WHAT IS THIS", "NO WAY", "STOP IT"]) == "upper"
    assert _bucket("casing", ["😀", "123", "hey", "ok"]) == "lower"  # turns without letters do not count
    assert _bucket("casing", ["😀"]) == "lower"


def test_punctuation_bucket():
    assert _bucket("punctuation", ["hi there", "ok"]) == "none"
    assert _bucket("punctuation", ["i don't know"]) == "none"  # apostrophes are spelling
    assert _bucket("punctuation", ["it costs $5 at 10% #deal"]) == "none"  # symbols are not punctuation
    assert _bucket("punctuation", ["well I think that this is a good idea overall."]) == "light"
    assert _bucket("punctuation", ["what?!", "no way!!!"]) == "heavy"


def test_emoji_bucket():
    assert _bucket("emoji", ["great 😀"]) == _bucket("emoji", ["hi", "nice :)"]) == "some"
    assert _bucket("emoji", ["at 10:30 (approx)", "see: this"]) == "none"


def test_typo_bucket():
    assert _bucket("typos", ["I do not know what you mean by that at all really"]) == "none"
    assert _bucket("typos", ["ok k i think so"]) == "none"  # ok, k and a lone i are not typos
    assert _bucket("typos", ["im not sure what you mean by that question but I will try to answer it well today "
                             "and also tomorrow if there is time left"]) == "some"  # 1 in 25 words
    assert _bucket("typos", ["u dont know", "im ok"]) == "many"


# Texts on which the two rulers used to disagree: "ok" (a typo for conditioning only), a URL (an emoticon
# for eval only), "$" (punctuation for conditioning only), a lower-case second sentence (proper for
# conditioning, mixed for eval), a lone "i" (a typo for eval only), "sooo" (a typo for eval only).
AGREEMENT_TEXTS = [
    "ok sure", "see http://example.org", "it costs $5", "Hello there. i am fine", "i think so", "sooo tired",
    "WHY IS THIS SHOUTING", "Great, thanks! 😀", "u dont know what ur talking about lol",
    "I have two dogs and a cat. What about you?", "hmm... maybe; maybe not (who knows)",
]


def _condition_style(text):
    conv = Conversation(id="c", source="s", user_id="u", turns=[Turn("user", text), Turn("assistant", "ok")])
    return build_condition(conv, ConditioningConfig()).style


def _casing_stat(text):
    (stat,) = [s for s in STATS if s.name == "casing_lower_rate"]
    return stat.extract(text)


def _check_agreement(text):
    style = _condition_style(text)
    features = text_features(text)
    assert style_mismatch(text, style) == 0.0 and style_match(text, {"style": style}) == 1.0, (text, style)
    assert (features["emoji"] > 0) == (style["emoji"] == "some"), (text, style)
    assert (features["typo_rate"] > 0) == (style["typos"] != "none"), (text, style)
    assert (features["punct_per_word"] > 0) == (style["punctuation"] != "none"), (text, style)
    assert (features["n_words"] < 8) == (style["length"] == "short"), (text, style)
    assert _casing_stat(text) == style["casing"], (text, style)


@pytest.mark.parametrize("text", AGREEMENT_TEXTS)
def test_the_condition_data_prep_writes_is_the_style_eval_measures(text):
    _check_agreement(text)


def test_condition_and_measurement_agree_on_real_user_turns():
    turns = [t for pairs in chitchat_user_turns(300).values() for t, _ in pairs][:2000]
    assert len(turns) >= 500
    for text in turns:
        _check_agreement(text)
