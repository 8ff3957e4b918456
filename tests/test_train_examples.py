"""Records -> token ids/labels: the loss mask is exactly the user turns (+EOS) and the end marker."""

import pytest

from usersim.data_prep.prompt_format import END_OF_CONVERSATION, HEADER, Condition, render_condition
from usersim.data_prep.records import conversation_record
from usersim.data_prep.schema import ASSISTANT, USER, Conversation, Turn
from usersim.train.examples import NoSupervisedTokensError, record_condition, record_to_example, records_to_examples
from usersim.train.tiny_model import train_tiny_tokenizer
from toy_data import toy_records


@pytest.fixture(scope="module")
def records():
    return toy_records(12, seed=5)


@pytest.fixture(scope="module")
def tokenizer(records):
    return train_tiny_tokenizer([t["text"] for r in records for t in r["turns"]], vocab_size=400)


def supervised_spans(ids, labels):
    """Contiguous runs of supervised tokens (label == id), each as a list of ids."""
    spans, cur = [], []
    for i, lab in zip(ids, labels):
        if lab != -100:
            assert lab == i
            cur.append(i)
        elif cur:
            spans.append(cur)
            cur = []
    if cur:
        spans.append(cur)
    return spans


def test_supervised_tokens_decode_to_exactly_the_user_turns(records, tokenizer):
    for record in records:
        ex = record_to_example(record, tokenizer, max_seq_len=4096)
        spans = supervised_spans(ex["input_ids"], ex["labels"])
        expected = [t["text"] for t in record["turns"] if t["role"] == USER]
        if record["end_of_conversation"]:
            expected.append(END_OF_CONVERSATION)
        assert all(span[-1] == tokenizer.eos_token_id for span in spans)  # each target ends with EOS
        assert [tokenizer.decode(span[:-1]) for span in spans] == expected
        assert ex["n_supervised"] == sum(len(s) for s in spans)


def test_assistant_turns_and_header_are_never_supervised(records, tokenizer):
    record = next(r for r in records if any(t["role"] == ASSISTANT for t in r["turns"]))
    ex = record_to_example(record, tokenizer, max_seq_len=4096)
    context = [i for i, lab in zip(ex["input_ids"], ex["labels"]) if lab == -100]
    text = tokenizer.decode(context)
    assert HEADER.strip() in text
    for t in record["turns"]:
        if t["role"] == ASSISTANT:
            assert t["text"] in text


def test_record_without_supervised_token_is_an_error_naming_it(tokenizer):
    conv = Conversation(id="conv-empty", source="t", user_id="u", turns=[])
    record = conversation_record(conv, Condition())
    with pytest.raises(NoSupervisedTokensError, match="conv-empty"):
        record_to_example(record, tokenizer, max_seq_len=512)


def test_header_longer_than_max_seq_len_is_an_error_not_silence(tokenizer):
    conv = Conversation(id="long-header", source="t", user_id="u", turns=[Turn(USER, "hi")])
    record = conversation_record(conv, Condition(goal="word " * 200))
    with pytest.raises(NoSupervisedTokensError, match="long-header"):
        record_to_example(record, tokenizer, max_seq_len=64)


def test_long_record_is_cut_from_the_left_at_turn_boundaries_keeping_header(tokenizer):
    turns = []
    for k in range(30):
        turns += [Turn(USER, f"user turn number {k} hello"), Turn(ASSISTANT, f"assistant reply {k} ok")]
    record = conversation_record(Conversation(id="long", source="t", user_id="u", turns=turns),
                                 Condition(goal="talk"))
    full = record_to_example(record, tokenizer, max_seq_len=100_000)
    cut = record_to_example(record, tokenizer, max_seq_len=len(full["input_ids"]) // 3)
    assert len(cut["input_ids"]) <= len(full["input_ids"]) // 3
    assert cut["input_ids"][:5] == full["input_ids"][:5]  # BOS + header kept
    text = tokenizer.decode(cut["input_ids"])
    assert "Goal: talk" in text and "user turn number 29 hello" in text and "user turn number 0 " not in text
    spans = [tokenizer.decode(s[:-1]) for s in supervised_spans(cut["input_ids"], cut["labels"])]
    assert spans[-1] == END_OF_CONVERSATION
    assert all(s.startswith("user turn number") for s in spans[:-1])  # whole turns only


def test_a_cut_record_is_the_newest_whole_turns_after_the_header(tokenizer):
    """Exactly: BOS + header, then the full record's tokens from a turn boundary on (nothing in between)."""
    turns = []
    for k in range(6):
        turns += [Turn(USER, f"user turn number {k} hello"), Turn(ASSISTANT, f"assistant reply {k} ok")]
    record = conversation_record(Conversation(id="six", source="t", user_id="u", turns=turns), Condition(goal="talk"))
    full = record_to_example(record, tokenizer, max_seq_len=100_000)
    header = len(tokenizer(render_condition(Condition(goal="talk")), add_special_tokens=False)["input_ids"]) + 1
    marker = tokenizer("\nUser: ", add_special_tokens=False)["input_ids"]
    cut = record_to_example(record, tokenizer, max_seq_len=len(full["input_ids"]) - 1)
    # the first user turn (marker + text + EOS) is gone, the rest is the full record's tail verbatim
    first_turn = len(marker) + len(tokenizer("user turn number 0 hello", add_special_tokens=False)["input_ids"]) + 1
    assert cut["input_ids"] == full["input_ids"][:header] + full["input_ids"][header + first_turn:]
    assert cut["labels"] == full["labels"][:header] + full["labels"][header + first_turn:]


def test_condition_dropout_is_a_pure_function_of_seed_record_and_epoch(records):
    record = records[0]
    a = [render_condition(record_condition(record, 0.5, seed=1, epoch=e)) for e in range(8)]
    b = [render_condition(record_condition(record, 0.5, seed=1, epoch=e)) for e in range(8)]
    assert a == b
    assert len(set(a)) > 1  # different epochs drop different fields
    assert render_condition(record_condition(record, 0.0, seed=1, epoch=0)).count("\n") == 6  # nothing dropped
    assert records_to_examples(records[:3], train_tiny_tokenizer(["a b"], 300), max_seq_len=4096,
                               condition_dropout=1.0)[0]["n_supervised"] > 0
