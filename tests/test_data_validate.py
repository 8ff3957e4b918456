from usersim.data_prep.config import FilterConfig
from usersim.data_prep.dedupe import DuplicateFilter, conversation_key
from usersim.data_prep.schema import Conversation, Quarantined, Reason, Turn
from usersim.data_prep.validate import drop_empty_turns, merge_consecutive_turns, validate_conversation


def conv(*turns, **kw):
    return Conversation(id=kw.pop("id", "c"), source="s", user_id=kw.pop("user_id", "u"),
                        turns=[Turn(r, t) for r, t in turns], **kw)


def reason(result):
    assert isinstance(result, Quarantined)
    return result.reason


def test_merges_bursts_and_counts_them():
    turns, absorbed = merge_consecutive_turns([Turn("user", "hey"), Turn("user", "u there?"),
                                               Turn("assistant", "yes"), Turn("user", "ok"),
                                               Turn("user", "so"), Turn("user", "anyway")])
    assert [(t.role, t.text) for t in turns] == [("user", "hey\nu there?"), ("assistant", "yes"),
                                                  ("user", "ok\nso\nanyway")]
    assert absorbed == 3


def test_validate_merges_and_keeps_leading_assistant_turn():
    out, stats = validate_conversation(conv(("assistant", "hi"), ("user", "a"), ("user", "b"), ("assistant", "c")),
                                       FilterConfig())
    assert isinstance(out, Conversation)
    assert [(t.role, t.text) for t in out.turns] == [("assistant", "hi"), ("user", "a\nb"), ("assistant", "c")]
    assert stats.merged_turns == 1


def test_empty_turn_dropped_when_absorbed_quarantined_when_it_would_fabricate_a_burst():
    kept, n = drop_empty_turns([Turn("user", "a"), Turn("user", "  "), Turn("assistant", "b"), Turn("user", "")])
    assert [t.text for t in kept] == ["a", "b"] and n == 2
    assert drop_empty_turns([Turn("user", "a"), Turn("assistant", ""), Turn("user", "b")]) == (None, 0)
    out, _ = validate_conversation(conv(("user", "a"), ("assistant", "\n"), ("user", "b")), FilterConfig())
    assert reason(out) == Reason.EMPTY_TURN
    out, stats = validate_conversation(conv(("assistant", ""), ("user", "a"), ("assistant", "b")), FilterConfig())
    assert isinstance(out, Conversation) and stats.empty_turns_dropped == 1
    assert reason(validate_conversation(conv(("user", " "), ("assistant", "")), FilterConfig())[0]) == Reason.EMPTY_TURN


def test_reason_codes():
    f = FilterConfig(min_user_turns=2, max_turn_chars=10, max_conversation_chars=25)
    assert reason(validate_conversation(conv(), f)[0]) == Reason.NO_TURNS
    assert reason(validate_conversation(conv(("bot", "x"), ("user", "y")), f)[0]) == Reason.UNKNOWN_ROLE
    assert reason(validate_conversation(conv(("user", 3)), f)[0]) == Reason.NON_STRING_CONTENT
    assert reason(validate_conversation(conv(("assistant", "x")), f)[0]) == Reason.NO_USER_TURN
    assert reason(validate_conversation(conv(("user", "x"), ("assistant", "y")), f)[0]) == Reason.TOO_FEW_USER_TURNS
    assert reason(validate_conversation(conv(("user", "x" * 11), ("assistant", "y"), ("user", "z")), f)[0]) \
        == Reason.TOO_LONG
    long_conv = conv(*[(r, "x" * 9) for r in ("user", "assistant", "user")])
    assert reason(validate_conversation(long_conv, f)[0]) == Reason.TOO_LONG
    ok = conv(("user", "x"), ("assistant", "y"), ("user", "z"))
    assert isinstance(validate_conversation(ok, f)[0], Conversation)


def test_language_and_toxic_filters():
    c = conv(("user", "hola"), metadata={"language": "Spanish", "toxic": True})
    assert isinstance(validate_conversation(c, FilterConfig())[0], Conversation)
    assert reason(validate_conversation(c, FilterConfig(languages=["English"]))[0]) == Reason.LANGUAGE
    assert isinstance(validate_conversation(c, FilterConfig(languages=["spanish"]))[0], Conversation)
    assert reason(validate_conversation(conv(("user", "x")), FilterConfig(languages=["en"]))[0]) == Reason.LANGUAGE
    assert reason(validate_conversation(c, FilterConfig(drop_toxic=True))[0]) == Reason.TOXIC


def test_quarantine_keeps_location_and_raw():
    q, _ = validate_conversation(conv(("assistant", "x"), location="file.json:7"), FilterConfig())
    assert q.location == "file.json:7" and q.raw["turns"] == [{"role": "assistant", "text": "x"}]


def test_dedupe_ignores_user_id_case_and_whitespace_but_not_roles():
    a = conv(("user", "Hello  there"), ("assistant", "hi"), user_id="u1", id="1")
    b = conv(("user", "hello there "), ("assistant", "HI"), user_id="u2", id="2")
    swapped = conv(("assistant", "Hello there"), ("user", "hi"), user_id="u3", id="3")
    assert conversation_key(a) == conversation_key(b) != conversation_key(swapped)
    f = DuplicateFilter()
    assert [f.seen(a), f.seen(b), f.seen(swapped), f.seen(a)] == [False, True, False, True]
