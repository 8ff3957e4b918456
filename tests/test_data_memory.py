"""The data stage's per-conversation and per-user state lives on disk (usersim.data_prep.disk_store), so its
memory does not grow with the corpus, and every decision stays what an in-memory set or dict gave."""

from __future__ import annotations

import hashlib
import marshal
import random
import tracemalloc

import pyarrow as pa
import pytest

import usersim.data_prep.disk_store as disk_store
from usersim.data_prep.dedupe import DuplicateFilter
from usersim.data_prep.disk_store import DiskSet, HeadStore
from usersim.data_prep.main import check_no_held_out_leak
from usersim.data_prep.split import TRAIN, assign_split
from usersim.data_prep.staging import OpenerSpill, user_heads


def _key(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()[:32]


def _heap_after_keys(n: int) -> int:
    """Python-heap bytes a DuplicateFilter holds after ``n`` distinct keys (added as pass 1 does, in batches)."""
    batches = [[_key(i) for i in range(start, min(n, start + 500))] for start in range(0, n, 500)]
    tracemalloc.start()
    try:
        dupes = DuplicateFilter()
        for batch in batches:
            dupes.seen_keys(batch)
        held = tracemalloc.get_traced_memory()[0]
        dupes.close()
        return held
    finally:
        tracemalloc.stop()


def test_dedupe_keys_cost_no_python_heap_per_key():
    small, large = _heap_after_keys(20_000), _heap_after_keys(80_000)
    # an in-memory set of 128-bit ints held ~100 bytes a key: 60k more keys were ~6 MB more
    assert large - small < 500_000, (small, large)


def test_dedupe_decisions_are_exact_across_the_spill_to_disk(monkeypatch):
    monkeypatch.setattr(disk_store, "CACHE_KIB", 64)  # a tiny page cache: most keys live only in the file
    rng = random.Random(0)
    keys = [_key(rng.randrange(30_000)) for _ in range(60_000)]  # about half are repeats, far apart
    dupes = DuplicateFilter()
    got = []
    for start in range(0, len(keys), 500):
        got += dupes.seen_keys(keys[start:start + 500])
    seen: set[str] = set()
    want = []
    for k in keys:
        want.append(k in seen)
        seen.add(k)
    assert got == want and len(dupes) == len(seen)
    assert dupes.seen_key(keys[0]) and not dupes.seen_key(_key(10**9))  # one at a time, as before
    assert dupes.seen_keys([_key(-1), _key(-1)]) == [False, True]  # a repeat inside one batch
    dupes.close()


def test_disk_set_counts_distinct_keys_like_a_set(tmp_path):
    s = DiskSet(tmp_path / "users.sqlite")
    assert s.add_new(["train\x1fa", "train\x1fb", "train\x1fa"]) == [True, True, False]
    assert s.add_new(["test\x1fa", "train\x1fb"]) == [True, False] and len(s) == 3
    s.close()
    assert not (tmp_path / "users.sqlite").exists()


def _train_folder(folder, rows):
    folder.mkdir(parents=True)
    table = pa.Table.from_pylist(rows, schema=pa.schema([("id", pa.string()), ("user_id", pa.string()),
                                                         ("other_user_ids", pa.list_(pa.string()))]))
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return folder


def _users(split: str, n: int, fractions) -> list[str]:
    return [u for u in (f"user-{i}" for i in range(10_000)) if assign_split(u, 0, fractions) == split][:n]


@pytest.mark.parametrize("where", ["user_id", "other_user_ids"])
def test_leak_check_finds_a_held_out_user_without_a_set_of_held_out_users(tmp_path, where):
    fractions = {"validation": 0.1, "test": 0.1}
    train = _users(TRAIN, 3, fractions)
    held = _users("test", 1, fractions)[0]
    rows = [{"id": str(i), "user_id": u, "other_user_ids": [train[0]]} for i, u in enumerate(train)]
    assert check_no_held_out_leak(_train_folder(tmp_path / "ok", rows), 0, fractions) == 3
    bad = [*rows, {"id": "x", "user_id": held if where == "user_id" else train[1],
                   "other_user_ids": [held] if where == "other_user_ids" else []}]
    with pytest.raises(AssertionError, match=held):
        check_no_held_out_leak(_train_folder(tmp_path / "bad", bad), 0, fractions)


def test_opener_partitions_split_when_too_big_and_keep_each_users_order(tmp_path, monkeypatch):
    rng = random.Random(1)
    adds = [(f"u{rng.randrange(400)}", f"c{i}", f"opener {i} " + "x" * rng.randrange(50)) for i in range(6000)]
    want: dict[str, list] = {}
    for user, cid, opener in adds:
        found = want.setdefault(user, [])
        if len(found) < 50:
            found.append((cid, opener))

    def spilled(folder, max_bytes):
        monkeypatch.setattr(OpenerSpill, "MAX_PARTITION_BYTES", max_bytes)
        spill = OpenerSpill(folder)
        for a in adds:
            spill.add(*a)
        spill.close()
        return spill

    got: dict[str, list] = {}
    for users in spilled(tmp_path / "small", 2_000).partitions():  # every partition re-split, some twice
        assert not set(users) & set(got)
        got.update(users)
    assert got == want and not list((tmp_path / "small").iterdir())
    heads = user_heads(spilled(tmp_path / "heads", 2_000), 3, HeadStore(tmp_path / "heads.sqlite"))
    assert len(heads) == sum(len(v) > 1 for v in want.values())
    users = sorted(want)[:5] + ["nobody"]
    for user, head in zip(users, heads.get_many(users)):
        assert (head is None) == (len(want.get(user, [])) < 2)
        if head is not None:
            assert isinstance(marshal.loads(head), tuple)
    heads.close()
