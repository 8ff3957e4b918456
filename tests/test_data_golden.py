"""Pins the data stage's outputs on a small fixed corpus: every record, per-turn item, quarantine
line and summary count, as hashes.

The corpus mixes real human text (the packaged chitchat and ShareGPT slices: goals, partners and
held_out_leak, code and numbers) with a WildChat-shaped JSONL written here (not by the bench
generator, so the bench may change its text): users with several conversations and repeated
openers (persona history and its scrub), first-person disclosures and questions (knowledge),
emails, phones, IPs and credential URLs (PII), duplicates, bursts, empty/unknown-role/non-string
turns, truncated JSON, toxic flags and a system turn.

A speed change to the stage must leave these hashes as they are. A deliberate change of what the
stage produces updates EXPECTED (run this file with ``-s`` to print the new digests), and says
why in its commit.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import site
from pathlib import Path

import pytest
from datasets import load_from_disk

from usersim.data_prep.config import DataPrepConfig, FilterConfig, SourceConfig
from usersim.data_prep.main import main
from usersim.data_prep.records_io import RECORD_FEATURES, TURN_ITEM_FEATURES

OPENERS = ["hey can you help me with my essay", "write a python function that sorts a list",
           "I need help with my resume", "translate this to french please", "hi", "Hello!", "hello?"]
SENTENCES = [
    "I have two dogs named Rex and Bo.", "My email is {name}@example.com so write me.",
    "I work at Acme as a nurse since 2019.", "What is the capital of France?", "how do I fix error 404 in flask?",
    "call me at +44 20 7946 0958 or (555) 123-4567 tonight.", "my server is 8.8.8.8 and the router 192.168.1.1",
    "the v6 box is 2607:f8b0:4005:80a::200e, docs use 2001:db8::1", "see https://bob:hunter2@host.example.com/x",
    "open https://api.example.com/v1?token=abc123&x=1 and https://example.com/page", "it costs 1,000,000 at 12:30",
    "version 3.10.12 on 2023-01-15", "I'm moving to Berlin next month.", "Do you think it will rain tomorrow?",
    "lol ok :) thx", "I live in Lyon and I love cooking ratatouille", "why does my code print None?",
    "numbers 256 512 1024 and 020 7946 0958", "Im gonna try it tho", "I have a cat. I have a cat. I have a cat.",
]


def _user_text(rng: random.Random, name: str) -> str:
    return " ".join(rng.choice(SENTENCES).format(name=name) for _ in range(rng.randint(1, 3)))


def write_wildchat_fixture(path: Path, n: int = 240, seed: int = 7) -> Path:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        user = f"ip{rng.randrange(40):02d}"
        turns = []
        for k in range(rng.randint(1, 5)):
            text = rng.choice(OPENERS) if k == 0 and rng.random() < 0.6 else _user_text(rng, user)
            turns.append({"role": "user", "content": text, "hashed_ip": user, "toxic": False})
            if rng.random() < 0.1:  # a burst
                turns.append({"role": "user", "content": _user_text(rng, user)})
            turns.append({"role": "assistant", "content": " ".join(rng.choice(SENTENCES).format(name="bot")
                                                                    for _ in range(rng.randint(1, 4)))})
        if rng.random() < 0.15:
            turns.pop()  # the user spoke last: no end-of-conversation target
        row = {"conversation_hash": f"h{i:04d}", "model": "gpt-4", "timestamp": f"2023-05-{1 + i % 28:02d}T10:00:00",
               "conversation": turns, "turn": sum(t["role"] == "user" for t in turns),
               "language": rng.choice(["English", "French"]), "country": rng.choice(["France", "United States"]),
               "toxic": i % 37 == 5, "redacted": False, "state": None, "hashed_ip": user}
        kind = i % 29
        if kind == 3:
            row["conversation"][0]["content"] = ""
        elif kind == 7:
            row["conversation"][0]["role"] = "moderator"
        elif kind == 11:
            row["conversation"][0]["content"] = {"parts": ["not a string"]}
        elif kind == 13:
            row["conversation"].insert(0, {"role": "system", "content": "You are helpful."})
        elif kind == 17:
            row["conversation"][0]["content"] = [{"type": "text", "text": "part one"}, {"type": "text", "text": "two"}]
        elif kind == 19 and len(turns) >= 3:
            row["conversation"][1]["content"] = "   "  # an empty assistant turn between two user turns
        line = json.dumps(row, ensure_ascii=False)
        if kind == 23:
            line = line[: len(line) // 2]
        lines.append(line)
        if i % 31 == 4:  # the same conversation again under another hash
            row = dict(row, conversation_hash=f"dup{i:04d}")
            lines.append(json.dumps(row, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_stage(tmp_path: Path, name: str, **kw) -> Path:
    wc = write_wildchat_fixture(tmp_path / "wc.jsonl")
    sources = [SourceConfig(adapter="chitchat", max_items=400), SourceConfig(adapter="sharegpt", max_items=250),
               SourceConfig(adapter="wildchat", path=str(wc))]
    cfg = DataPrepConfig(sources=sources, output_dir=str(tmp_path / name), show_progress=False,
                         filters=FilterConfig(drop_toxic=True), **kw)
    return main(cfg)


def _digest(obj) -> str:
    text = obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def output_digests(out: Path) -> dict[str, str]:
    ds = load_from_disk(str(out / "dataset"))
    digests = {}
    for split in sorted(ds):
        features = TURN_ITEM_FEATURES if split.endswith("_turns") else RECORD_FEATURES
        assert ds[split].features == features, split
        digests[split] = _digest(ds[split].to_list())
    # locations (also inside raw records) hold machine-specific paths: this run's temporary folder
    # (the fixture file) and the packaged corpora's install folder. A raw record is clipped at 2,000
    # characters *with* its path, so where the clip falls depends on the path's length: compare the
    # first 1,500 characters of each raw record once the paths are replaced.
    folders = [json.dumps(str(f))[1:-1] + "/" for f in (out.parent, *(Path(p) for p in site.getsitepackages()))]
    lines = []
    for line in (out / "quarantine.jsonl").read_text(encoding="utf-8").splitlines():
        for folder in folders:
            line = line.replace(folder, "<dir>/")
        row = json.loads(line)
        if isinstance(row.get("raw"), str):
            row["raw"] = re.sub(r"\.\.\.\[\d+ more chars\]$", "", row["raw"])[:1500]
        lines.append(json.dumps(row, sort_keys=True, ensure_ascii=False))
    digests["quarantine"] = _digest("\n".join(lines))
    summary = json.loads((out / "summary.json").read_text())
    summary.pop("time_s"), summary.pop("peak_rss_mb")
    digests["summary"] = _digest(summary)
    return digests


EXPECTED = {
    "test": "aa5cd3957f712790",
    "test_turns": "886e03a1fd274047",
    "train": "051122722fba45f1",
    "validation": "1fc932f8871aa165",
    "validation_turns": "95fa8d7260866d5f",
    "quarantine": "a3f6651e01138037",
    "summary": "4487daf2783b537c",
}


@pytest.fixture(scope="module")
def golden_run(tmp_path_factory):
    return run_stage(tmp_path_factory.mktemp("golden"), "one_proc")


def test_outputs_match_the_pinned_digests(golden_run):
    got = output_digests(golden_run)
    print(json.dumps(got, indent=2))
    summary = json.loads((golden_run / "summary.json").read_text())
    assert summary["pii"]["email"] and summary["pii"]["phone"] and summary["pii"]["ip"]
    assert summary["pii"]["credential_url"] and summary["users_with_history_persona"]
    assert summary["condition_items_scrubbed"]["persona"]
    assert {"duplicate", "held_out_leak", "bad_json", "unknown_role", "non_string_content", "empty_turn",
            "too_long", "no_user_turn", "toxic"} <= {r for s in summary["sources"].values() for r in s["quarantined"]}
    assert got == EXPECTED


def test_worker_processes_give_the_same_outputs(golden_run, tmp_path):
    assert output_digests(run_stage(tmp_path, "two_procs", num_proc=2)) == output_digests(golden_run)
