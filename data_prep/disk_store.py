"""On-disk sets and maps for the data stage's per-conversation and per-user state, so its memory does not
grow with the corpus: stdlib ``sqlite3`` files with a bounded page cache (``CACHE_KIB``), no journal,
no fsync, one open transaction (the files are scratch: they live in the staging folder and go with it).

- :class:`DiskSet`: a set of keys (dedupe keys, distinct users per split); ``add_new(keys)`` answers,
  for a batch, which keys are new, in order, as a Python set would.
- :class:`HeadStore`: user id -> marshalled persona head (pass 2 looks up one chunk's users at a time).

Everything happens inside the one transaction (never one transaction per statement); head lookups go
by batch (one ``SELECT ... IN`` per chunk of users).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterable, Sequence

CACHE_KIB = 8192  # page cache per database (SQLite spills the rest to its file, i.e. the OS page cache)
_IN_MAX = 500  # parameters per ``IN (...)`` query (SQLite's limit is >= 999)


def open_scratch_db(path: Path | str | None) -> sqlite3.Connection:
    """A scratch database at ``path`` (None: SQLite's private temporary file, deleted on close) with a
    bounded cache, no journal and no fsync, inside one transaction."""
    con = sqlite3.connect("" if path is None else str(path), isolation_level=None, check_same_thread=False)
    for pragma in ("journal_mode=OFF", "synchronous=OFF", "locking_mode=EXCLUSIVE", "temp_store=FILE",
                   f"cache_size=-{CACHE_KIB}"):
        con.execute(f"PRAGMA {pragma}")
    con.execute("BEGIN")
    return con


def _found(con: sqlite3.Connection, sql: str, keys: Sequence) -> Iterable[tuple]:
    """Rows of ``sql`` (``... IN ({})``) over ``keys``, ``_IN_MAX`` parameters at a time."""
    for i in range(0, len(keys), _IN_MAX):
        part = keys[i:i + _IN_MAX]
        yield from con.execute(sql.format(",".join("?" * len(part))), part)


class _ScratchFile:
    """One scratch database: opened at ``path`` (None: a private temporary file), deleted on ``close``."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = None if path is None else Path(path)
        self._con = open_scratch_db(path)
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def close(self) -> None:
        self._con.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class DiskSet(_ScratchFile):
    """A set of ``bytes`` or ``str`` keys on disk; ``len()`` counts the distinct keys added."""

    def __init__(self, path: Path | str | None = None) -> None:
        super().__init__(path)
        self._con.execute("CREATE TABLE IF NOT EXISTS k (k PRIMARY KEY) WITHOUT ROWID")
        self._cur = self._con.cursor()

    def add_new(self, keys: Iterable) -> list[bool]:
        """Add ``keys``; for each, in order, whether it was new (not in the set, nor earlier in ``keys``).
        One ``INSERT OR IGNORE`` a key (its row count says which): a single B-tree descent, cheaper here
        than a batched ``SELECT ... IN`` followed by an ``executemany``."""
        cur, sql, out = self._cur, "INSERT OR IGNORE INTO k VALUES (?)", []
        for key in keys:
            cur.execute(sql, (key,))
            out.append(cur.rowcount == 1)
        self._n += sum(out)
        return out


class HeadStore(_ScratchFile):
    """user id -> persona head (``bytes``): appended with ``add``, indexed once by ``finish`` (building
    the index after the rows sorts them once; a table keyed by user would take them in random key
    order, a random page each)."""

    def __init__(self, path: Path | str | None = None) -> None:
        super().__init__(path)
        self._con.execute("CREATE TABLE IF NOT EXISTS heads (user TEXT, head BLOB)")
        self._finished = False

    def add(self, rows: Sequence[tuple[str, bytes]]) -> None:
        self._con.executemany("INSERT INTO heads VALUES (?, ?)", rows)
        self._n += len(rows)

    def finish(self) -> "HeadStore":
        if not self._finished:
            self._con.execute("CREATE UNIQUE INDEX heads_user ON heads (user)")
            self._finished = True
        return self

    def get_many(self, users: Sequence[str]) -> list[bytes | None]:
        """Each user's head (None: none stored), in order."""
        found = dict(_found(self._con, "SELECT user, head FROM heads WHERE user IN ({})", list(dict.fromkeys(users))))
        return [found.get(u) for u in users]
