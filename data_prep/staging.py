"""Pass 1's on-disk staging of the data stage: the quarantine file, staged conversations as marshal frames
(one file per split), and the training openers spilled per user for the persona history.

Nothing here holds the corpus in memory: frames are appended as conversations are kept and read back
in chunks by pass 2 (usersim.data_prep.condition_pass).
"""

from __future__ import annotations

import json
import marshal
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator


from usersim.data_prep.conditioning import persona_head, rank_typical_openers
from usersim.data_prep.disk_store import HeadStore
from usersim.data_prep.schema import Conversation, Turn


CHUNK_ROWS = 500  # staged conversations per conditioning task (one Arrow batch each)
MAX_OPENERS_PER_USER = 50  # training openers remembered per user for the persona summary
class LineWriter:
    """Append-only text file, one line per call (the quarantine file)."""

    def __init__(self, path: Path) -> None:
        self._f = Path(path).open("w", encoding="utf-8")

    def write_line(self, line: str) -> None:
        self._f.write(line + "\n")

    def close(self) -> None:
        self._f.close()


def stage_frame(conv: Conversation) -> bytes:
    """One staged conversation: its row's fields (metadata as its JSON text), marshalled as a
    header ``(id, user_id)`` and a body (the rest), each with a 4-byte length in front, so the
    ids can be read without the text. ``marshal`` is ~10x faster than JSON both ways and loses
    nothing here: every field is text (adapters build ids and turns as ``str``)."""
    head = marshal.dumps((conv.id, conv.user_id))
    body = marshal.dumps((conv.source, tuple((t.role, t.text) for t in conv.turns),
                          json.dumps(conv.metadata, sort_keys=True, ensure_ascii=False, default=str),
                          conv.location, conv.group_id, tuple(conv.other_user_ids)))
    return len(head).to_bytes(4, "little") + len(body).to_bytes(4, "little") + head + body


def iter_frame_bounds(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(header start, body start, body end) of each staged conversation in ``data``."""
    pos, end = 0, len(data)
    while pos < end:
        head = int.from_bytes(data[pos:pos + 4], "little")
        body = int.from_bytes(data[pos + 4:pos + 8], "little")
        yield pos + 8, pos + 8 + head, pos + 8 + head + body
        pos += 8 + head + body


def iter_frame_ids(data: bytes) -> Iterator[tuple[str, str]]:
    """(conversation id, user id) of each staged conversation in ``data`` (the text stays unread)."""
    view = memoryview(data)
    for start, mid, _ in iter_frame_bounds(data):
        yield marshal.loads(view[start:mid])


def iter_frames(data: bytes) -> Iterator[tuple]:
    """The staged tuples in ``data``: (id, source, user_id, turns, metadata, location, group_id, others)."""
    view = memoryview(data)
    for start, mid, end in iter_frame_bounds(data):
        cid, user_id = marshal.loads(view[start:mid])
        source, turns, metadata, location, group_id, others = marshal.loads(view[mid:end])
        yield cid, source, user_id, turns, metadata, location, group_id, others


def frame_row(frame: tuple) -> dict[str, Any]:
    """The staged conversation's row: ``Conversation.to_row()`` of the conversation it was made from."""
    cid, source, user_id, turns, metadata, location, group_id, others = frame
    return {"id": cid, "source": source, "user_id": user_id, "turns": [{"role": r, "text": t} for r, t in turns],
            "metadata": metadata, "location": location, "group_id": group_id, "other_user_ids": list(others)}


class StagingWriter:
    """A split's staged conversations, cut into chunks of ``chunk_rows`` (byte ranges)."""

    def __init__(self, path: Path, chunk_rows: int = CHUNK_ROWS) -> None:
        self.path = Path(path)
        self._f = self.path.open("wb")
        self.chunk_rows = chunk_rows
        self.n = 0
        self._offset = 0
        self._chunk_start = 0
        self.chunks: list[tuple[int, int]] = []  # (start byte, end byte) of each chunk

    def write_frame(self, frame: bytes) -> None:
        self._f.write(frame)
        self._offset += len(frame)
        self.n += 1
        if self.n % self.chunk_rows == 0:
            self._end_chunk()

    def _end_chunk(self) -> None:
        if self._offset > self._chunk_start:
            self.chunks.append((self._chunk_start, self._offset))
            self._chunk_start = self._offset

    def close(self) -> None:
        self._end_chunk()
        self._f.close()

    def read_chunk(self, chunk: tuple[int, int]) -> bytes:
        with self.path.open("rb") as f:
            f.seek(chunk[0])
            return f.read(chunk[1] - chunk[0])


class OpenerSpill:
    """Every training conversation's (user, conversation id, clipped opener), in reading order, on
    disk in ``PARTITIONS`` files by user (a CRC of the user id), so the openers cost no memory
    during pass 1 and :func:`user_heads` reads one partition's users at a time. A partition over
    ``MAX_PARTITION_BYTES`` is first split by more bits of the same CRC (``SUBPARTITIONS`` files,
    again while one is too big), so what is read at once does not grow with the corpus."""

    PARTITIONS = 32
    SUBPARTITIONS = 16
    MAX_PARTITION_BYTES = 8 << 20

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._files = [(self.folder / f"{k:02d}.bin").open("wb") for k in range(self.PARTITIONS)]

    def add(self, user_id: str, cid: str, opener: str) -> None:
        data = marshal.dumps((user_id, cid, opener))
        f = self._files[_user_crc(user_id) % self.PARTITIONS]
        f.write(len(data).to_bytes(4, "little") + data)

    def close(self) -> None:
        for f in self._files:
            f.close()

    def partitions(self) -> Iterator[dict[str, list[tuple[str, str]]]]:
        """Per partition: user -> their first ``MAX_OPENERS_PER_USER`` (conversation id, opener)."""
        for k in range(self.PARTITIONS):
            yield from self._read(self.folder / f"{k:02d}.bin", 5)

    def _read(self, path: Path, shift: int) -> Iterator[dict[str, list[tuple[str, str]]]]:
        """The users of one partition file (``shift``: the CRC bits already used to get here)."""
        if path.stat().st_size > self.MAX_PARTITION_BYTES and shift < 32:
            parts = [path.with_name(f"{path.stem}-{j:x}.bin") for j in range(self.SUBPARTITIONS)]
            files = [q.open("wb") for q in parts]
            for (user_id, _, _), record in _records(path):
                files[(_user_crc(user_id) >> shift) % self.SUBPARTITIONS].write(record)
            for f in files:
                f.close()
            path.unlink()
            for q in parts:
                yield from self._read(q, shift + self.SUBPARTITIONS.bit_length() - 1)
            return
        users: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for (user_id, cid, opener), _ in _records(path):
            found = users[user_id]
            if len(found) < MAX_OPENERS_PER_USER:
                found.append((cid, opener))
        path.unlink()
        yield users


def _user_crc(user_id: str) -> int:
    return zlib.crc32(user_id.encode("utf-8", "surrogatepass"))


def _records(path: Path) -> Iterator[tuple[tuple[str, str, str], bytes]]:
    """((user id, conversation id, opener), the length-prefixed record) of each opener in a spill file."""
    with path.open("rb") as f:
        while True:
            size = f.read(4)
            if not size:
                return
            data = f.read(int.from_bytes(size, "little"))
            yield marshal.loads(data), size + data


# ---- pass 1 ------------------------------------------------------------------------------

def user_heads(openers: OpenerSpill, n_turns: int, store: HeadStore | None = None) -> HeadStore:
    """Per user with more than one training opener: the marshalled
    :func:`~usersim.data_prep.conditioning.persona_head` of their ranked openers, all a persona history
    needs (read one partition of users at a time), into ``store`` (on disk; a temporary one when None)."""
    store = HeadStore() if store is None else store
    for users in openers.partitions():
        store.add([(user, marshal.dumps(tuple(persona_head(rank_typical_openers(found), n_turns))))
                   for user, found in users.items() if len(found) > 1])
    return store.finish()


def conversation_tuple(conv: Conversation) -> tuple:
    return (conv.id, conv.source, conv.user_id, [(t.role, t.text) for t in conv.turns], conv.metadata, conv.location,
            conv.group_id, conv.other_user_ids)


def tuple_conversation(t: tuple) -> Conversation:
    return Conversation(id=t[0], source=t[1], user_id=t[2], turns=[Turn(r, x) for r, x in t[3]], metadata=t[4],
                        location=t[5], group_id=t[6], other_user_ids=t[7])
