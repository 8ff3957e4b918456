"""End to end through ``usersim.data_prep.main.main`` on a tiny fake corpus with malformed items."""

import json

import pytest
from datasets import load_from_disk

import usersim.data_prep.adapters as adapters
from usersim.data_prep.config import DataPrepConfig, SourceConfig, SplitConfig
from usersim.data_prep.clean_pass import SourceCounts
from usersim.data_prep.main import main
from usersim.data_prep.schema import Conversation, Quarantined, Reason, Turn
from usersim.data_prep.show import cli as show_cli

N_CHATS = 30
N_USERS = 12


def _chat(chat: int):
    a, b = f"u{chat % N_USERS}", f"u{(chat * 5 + 1) % N_USERS}"
    if a == b:
        b = "u-extra"
    lines = [(a, f"hi im {a} <{a}|{chat}|0>"), (b, f"hello, mail me at {b}@example.com <{b}|{chat}|1>"),
             (a, f"do you like dogs? <{a}|{chat}|2>"), (a, f"I have two dogs. <{a}|{chat}|3>"),
             (b, f"ok bye <{b}|{chat}|4>")]
    for me, other in ((a, b), (b, a)):
        turns = [Turn("user" if who == me else "assistant", t) for who, t in lines]
        yield Conversation(id=f"c{chat}:{me}", source="fake", user_id=me, turns=turns,
                           metadata={"prompt": "talk about pets", "country": "US"}, location=f"fake.json:{chat}",
                           group_id=f"c{chat}", other_user_ids=[other])


def read_fake(source):
    for chat in range(N_CHATS):
        yield from _chat(chat)
    yield Quarantined("fake", Reason.BAD_JSON, "fake.json:999", "unterminated string", '{"x": "')
    yield Quarantined("fake", Reason.TRUNCATED_FILE, "fake.json@12345", "file ends mid-record")
    solo = [Turn("user", "same words"), Turn("assistant", "reply")]
    yield Conversation(id="d1", source="fake", user_id="solo1", turns=solo, location="fake.json:1001")
    yield Conversation(id="d2", source="fake", user_id="solo2", turns=[Turn("user", "Same  words"), Turn("assistant", "REPLY")])
    yield Conversation(id="r", source="fake", user_id="solo3", turns=[Turn("system", "x"), Turn("user", "y")])
    yield Conversation(id="n", source="fake", user_id="solo3", turns=[Turn("assistant", "only the bot")])
    yield Conversation(id="l", source="fake", user_id="solo3", turns=[Turn("user", "x" * 9000)])
    yield Conversation(id="e", source="fake", user_id="solo3",
                       turns=[Turn("user", "a"), Turn("assistant", " "), Turn("user", "b")])
    yield Conversation(id="burst", source="fake", user_id="solo4",
                       turns=[Turn("user", "hey"), Turn("user", "call 555-123-4567"), Turn("assistant", "ok")])


@pytest.fixture
def fake_adapter(monkeypatch):
    monkeypatch.setitem(adapters.ADAPTERS, "fake", f"{__name__}:read_fake")


def run(tmp_path, name="out", **kw):
    cfg = DataPrepConfig(sources=[SourceConfig(adapter="fake", name="fake")], output_dir=str(tmp_path / name),
                         show_progress=False, split=SplitConfig(validation_fraction=0.2, test_fraction=0.2), **kw)
    return main(cfg)


@pytest.fixture
def out(tmp_path, fake_adapter):
    return run(tmp_path)


def test_counts_add_up_and_reasons_are_recorded(out):
    summary = json.loads((out / "summary.json").read_text())
    src = summary["sources"]["fake"]
    assert src["read"] == 2 * N_CHATS + 9
    assert src["read"] == src["kept"] + sum(src["quarantined"].values())
    q = src["quarantined"]
    for reason in (Reason.BAD_JSON, Reason.TRUNCATED_FILE, Reason.DUPLICATE, Reason.UNKNOWN_ROLE,
                   Reason.NO_USER_TURN, Reason.TOO_LONG, Reason.EMPTY_TURN):
        assert q[reason] == 1, reason
    assert q.get(Reason.HELD_OUT_LEAK, 0) > 0
    lines = [json.loads(x) for x in (out / "quarantine.jsonl").read_text().splitlines()]
    assert len(lines) == sum(q.values())
    assert all(x["location"] and x["reason"] in Reason.all() for x in lines)
    assert sum(s["conversations"] for s in summary["splits"].values()) == src["kept"]
    assert summary["merged_turns"] >= 1 + 2 * N_CHATS  # the fake's bursts
    assert summary["pii"]["email"] >= 1 and summary["pii"]["phone"] == 1
    assert summary["peak_rss_mb"] > 0 and summary["time_s"] >= 0


def test_dataset_contract_and_no_held_out_words_in_train(out):
    ds = load_from_disk(str(out / "dataset"))
    assert set(ds) == {"train", "validation", "test", "validation_turns", "test_turns"}
    for split in ("train", "validation", "test", "validation_turns", "test_turns"):
        assert "user_id" in ds[split].column_names
    held_out = set(ds["validation"]["user_id"]) | set(ds["test"]["user_id"])
    assert held_out and not held_out & set(ds["train"]["user_id"])
    train_text = json.dumps(list(ds["train"]["turns"]))
    for user in held_out:
        assert f"<{user}|" not in train_text
    row = ds["train"][0]
    assert row["condition"]["goal"] == "talk about pets" and "country: US" in row["condition"]["persona"]
    assert "@example.com" not in json.dumps(list(ds["train"]["turns"])) and "<EMAIL>" in train_text
    assert len(ds["validation_turns"]) == sum(
        sum(t["role"] == "user" for t in r["turns"]) + r["end_of_conversation"] for r in ds["validation"])
    card = (out / "README.md").read_text()
    assert "held_out_leak" in card and "responsibility" in card
    assert (out / "config.yaml").is_file() and json.loads((out / "run_info.json").read_text())["seed"] == 0


def test_persona_history_never_uses_the_conversation_itself(out):
    ds = load_from_disk(str(out / "dataset"))
    for row in ds["train"]:
        own_first = next(t["text"] for t in row["turns"] if t["role"] == "user")
        assert own_first not in row["condition"]["persona"]


def test_rerun_is_identical(tmp_path, fake_adapter):
    a, b = run(tmp_path, "a"), run(tmp_path, "b")
    da, db = load_from_disk(str(a / "dataset")), load_from_disk(str(b / "dataset"))
    for split in da:
        assert da[split].to_list() == db[split].to_list()


def test_show_prints_supervised_spans(out, capsys):
    assert show_cli([str(out), "--record", "0", "--no-color"]) == 0
    text = capsys.readouterr().out
    ds = load_from_disk(str(out / "dataset"))
    first_user = next(t["text"] for t in ds["train"][0]["turns"] if t["role"] == "user")
    assert f"⟦{first_user}<eos>⟧" in text and "⟦[END OF CONVERSATION]<eos>⟧" in text
    assert show_cli([str(out), "--record", "0", "--split", "validation"]) == 0
    assert "\x1b[42;30m" in capsys.readouterr().out
    assert show_cli([str(out), "--record", "100000"]) == 2


def test_count_check_raises_when_an_item_is_lost():
    c = SourceCounts()
    c.read, c.kept = 3, 1
    c.quarantined["bad_json"] = 1
    with pytest.raises(RuntimeError, match="read=3"):
        c.check("x")


def test_quarantine_raw_is_pii_scrubbed(out):
    text = (out / "quarantine.jsonl").read_text()
    assert "@example.com" not in text and "<EMAIL>" in text
    assert all(json.loads(line) for line in text.splitlines())


def test_annotator_writes_goals_through_main(tmp_path, fake_adapter):
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from usersim.data_prep.config import AnnotatorConfig, ConditioningConfig

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"choices": [{"message": {"content": '{"goal": "annotated goal"}'}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        ann = AnnotatorConfig(kind="openai", base_url=f"http://127.0.0.1:{httpd.server_address[1]}/v1",
                              fields=["goal"], max_conversations=5)
        out = run(tmp_path, conditioning=ConditioningConfig(annotator=ann))
    finally:
        httpd.shutdown()
        httpd.server_close()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["annotator"] == {"kind": "openai", "attempted": 5, "annotated_goal": 5}
    goals = [c["goal"] for c in load_from_disk(str(out / "dataset"))["train"]["condition"]]
    assert goals[:5] == ["annotated goal"] * 5 and goals[5] == "talk about pets"


def test_cli_with_overrides(tmp_path, fake_adapter, capsys):
    from usersim.data_prep.main import cli

    assert cli(["--output_dir", str(tmp_path / "cli"), "sources=[{adapter: fake, name: fake, max_items: 20}]",
                "show_progress=false", "seed=5"]) == 0
    printed = capsys.readouterr().out
    assert "fake" in printed and "wrote" in printed
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert summary["sources"]["fake"]["read"] == 20
    empty = [name for name, s in summary["splits"].items() if s["conversations"] == 0]
    assert empty, "this slice is meant to leave a split empty"
    ds = load_from_disk(str(tmp_path / "cli" / "dataset"))
    assert len(ds[empty[0]]) == 0 and "condition" in ds[empty[0]].column_names
    with pytest.raises(SystemExit):
        cli(["--output_dir", str(tmp_path / "x"), "sed=5"])
    assert "did you mean 'seed'" in capsys.readouterr().err


def test_num_proc_zero_means_one_process_per_usable_core(monkeypatch):
    import os

    from usersim.data_prep.config import DataPrepConfig
    from usersim.data_prep.workers import resolve_num_proc

    assert DataPrepConfig().num_proc == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 5}, raising=False)
    assert resolve_num_proc(0) == 3 and resolve_num_proc(1) == 1 and resolve_num_proc(4) == 4
    with pytest.raises(ValueError, match="num_proc must be >= 0"):
        resolve_num_proc(-1)
