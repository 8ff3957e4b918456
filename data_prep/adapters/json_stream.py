"""Streaming JSON readers: one record at a time, with its byte offset, never the whole file.

Three shapes are read:

- a top-level JSON **array** (``[rec, rec, ...]``, e.g. ShareGPT's 125 MB file): one record per
  element;
- a top-level JSON **object** (``{"key": rec, ...}``, e.g. chit-chat's 40 MB file): one record per
  member, with its key;
- **JSONL**: one record per non-blank line (a line of only whitespace is not a record).

Each record is a :class:`RawRecord`: the parsed value, or an ``error`` reason code
(``bad_json``, ``invalid_utf8``, ``truncated_file``) with the record's raw text. Nothing here
raises on bad data; only a missing file raises (``OSError``).

How the array/object reader works: the file is decoded in 1 MiB chunks with an incremental UTF-8
decoder using ``surrogateescape``, so an invalid byte survives as a lone surrogate instead of
failing the whole file. Each element is parsed with ``json.JSONDecoder.raw_decode`` (C speed).
When that fails (bad element, or an element cut by the chunk boundary), a small structural scanner
finds where the element ends (the next ``,`` or closing bracket at depth 0, skipping strings),
reading more chunks if needed. Then:

- the element's text re-encodes to UTF-8 strictly -> parsed value (or ``bad_json``);
- it contains lone surrogates (invalid bytes in the file) -> ``invalid_utf8``;
- the file ends before the element does -> ``truncated_file`` at the element's byte offset;
  every complete element before it was already yielded.

A bad element is skipped only if its brackets and quotes balance; an unbalanced one makes the
scanner run to the next depth-0 comma it can see, possibly the end of the file (then reported as
``truncated_file``). Memory: the current chunk plus the current element.
"""

from __future__ import annotations

import codecs
import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Optional

from usersim.data_prep.schema import Reason

CHUNK_BYTES = 1 << 20
MAX_RAW_CHARS = 4000  # raw text kept on an error record (the quarantine file clips further)

# strict=False: raw control characters (tabs, newlines) inside strings are accepted, as scraped
# corpora contain them; everything else follows the JSON grammar.
_DECODER = json.JSONDecoder(strict=False)
_PARSE_ERRORS = (json.JSONDecodeError, RecursionError)  # RecursionError: absurdly deep nesting
_WS = re.compile(r"[ \t\n\r]*")
_STRUCT = re.compile(r'[\[\]{},"]')
_STRUCT_KEY = re.compile(r'[\[\]{},:"]')  # inside an object member name, ':' also ends it
# Rest of a JSON string after its opening quote, up to and including the closing quote.
_STRING_REST = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.S)


@dataclass
class RawRecord:
    """One record read from a file: a value, or an error code with the raw text."""

    offset: int  # byte offset of the record's first byte in the file
    line: int = 0  # 1-based line number (JSONL only; 0 otherwise)
    key: Optional[str] = None  # member name, for a top-level object
    value: Any = None
    error: Optional[str] = None  # a Reason code, or None when ``value`` is valid
    detail: str = ""
    raw: str = ""  # the record's text (clipped), set on errors

    @property
    def ok(self) -> bool:
        return self.error is None


def _clip(text: str) -> str:
    return text if len(text) <= MAX_RAW_CHARS else text[:MAX_RAW_CHARS]


def _printable(text: str) -> str:
    """Raw text for the quarantine: invalid bytes shown as U+FFFD instead of lone surrogates."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def open_binary(path: str | Path) -> BinaryIO:
    """The file for reading bytes; ``*.gz`` is decompressed on the fly (offsets then count
    decompressed bytes)."""
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")


def first_non_space_byte(path: str | Path) -> bytes:
    """The first non-whitespace byte of a file (b"" for an empty/blank file)."""
    with open_binary(path) as fh:
        first = True
        while True:
            chunk = fh.read(65536)
            if not chunk:
                return b""
            if first and chunk.startswith(codecs.BOM_UTF8):
                chunk = chunk[len(codecs.BOM_UTF8):]
            first = False
            stripped = chunk.lstrip()
            if stripped:
                return stripped[:1]


class _TextWindow:
    """A sliding window of decoded text over a binary file, tracking byte offsets."""

    def __init__(self, fh: BinaryIO, chunk_bytes: int = CHUNK_BYTES):
        self.fh = fh
        self.chunk_bytes = chunk_bytes
        self.decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self.buf = ""
        self.pos = 0  # current index in buf
        self.pos_byte = 0  # byte offset in the file of buf[pos]
        self.eof = False

    def fill(self) -> bool:
        """Append one more chunk; False at end of file."""
        if self.eof:
            return False
        try:
            data = self.fh.read(self.chunk_bytes)
        except (EOFError, OSError):  # a cut/corrupt .gz: what was read so far is all there is
            data = b""
        if self.pos > len(self.buf) // 2:  # drop consumed text (amortised linear)
            self.buf = self.buf[self.pos:]
            self.pos = 0
        if not data:
            self.eof = True
            self.buf += self.decoder.decode(b"", final=True)
            return False
        self.buf += self.decoder.decode(data)
        return True

    def skip_ws(self) -> str:
        """Skip whitespace; return the next char ('' at end of file) without consuming it."""
        while True:
            self.advance_to(_WS.match(self.buf, self.pos).end())
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.fill():
                return ""

    def advance_to(self, index: int) -> None:
        if index > self.pos:
            self.pos_byte += len(self.buf[self.pos:index].encode("utf-8", "surrogateescape"))
            self.pos = index

    def scan_to_boundary(self, start: int, key: bool = False) -> Optional[int]:
        """Index of the depth-0 ``,``/``]``/``}`` ending the element at ``start``; None at EOF.

        ``key``: the element is an object member name, which a depth-0 ``:`` also ends.

        Reads more chunks as needed (``start`` stays valid: fill only drops text before pos).
        """
        i, depth = start, 0
        struct = _STRUCT_KEY if key else _STRUCT
        while True:
            m = struct.search(self.buf, i)
            if m is None:
                if not self._fill_keeping(len(self.buf), start):
                    return None
                i, start = self._kept
                continue
            j, c = m.start(), m.group()
            if c == '"':
                s = _STRING_REST.match(self.buf, j + 1)
                if s is None:  # string not closed within the window
                    if not self._fill_keeping(j, start):
                        return None
                    i, start = self._kept
                    continue
                i = s.end()
                continue
            if c in "{[":
                depth += 1
            elif c in "}]":
                if depth == 0:
                    return j
                depth -= 1
            elif depth == 0:  # ',' or ':'
                return j
            i = j + 1

    def _fill_keeping(self, *indices: int) -> bool:
        """fill(), then shift ``indices`` (into buf, all >= pos) to match; result in ``_kept``."""
        before = self.pos
        more = self.fill()
        shift = before - self.pos
        self._kept = tuple(i - shift for i in indices)
        return more

    def decode_value(self, key: bool = False) -> tuple[Optional[str], Any, str, str]:
        """Parse the value at pos and consume it: (error, value, detail, raw_text).

        At return, pos is at the char after the value (for errors: at the boundary found by the
        scanner, or at the end of the file for ``truncated_file``).
        """
        start = self.pos
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, start)
            except _PARSE_ERRORS:
                break
            if end < len(self.buf) or self.eof:
                text = self.buf[start:end]
                if _has_invalid_bytes(text):
                    self.advance_to(end)
                    return Reason.INVALID_UTF8, None, "invalid UTF-8 bytes", _clip(_printable(text))
                self.advance_to(end)
                return None, value, "", ""
            # A value that ends exactly at the window edge may continue (e.g. a number): read more.
            self.fill()
            start = self.pos
        # Failed: a bad value, or one cut by the window edge. Find its end (reading on as needed),
        # then parse again with the whole value in the window.
        boundary = self.scan_to_boundary(self.pos, key)
        start = self.pos
        if boundary is None:
            text = self.buf[start:]
            self.advance_to(len(self.buf))
            return Reason.TRUNCATED_FILE, None, "file ends inside this record", _clip(_printable(text))
        try:
            value, end = _DECODER.raw_decode(self.buf, start)
        except _PARSE_ERRORS as e:
            value, end, error = None, boundary, e
        else:
            error = None
        text = self.buf[start:end].rstrip(" \t\n\r")
        self.advance_to(end)
        if _has_invalid_bytes(text):
            return Reason.INVALID_UTF8, None, "invalid UTF-8 bytes", _clip(_printable(text))
        if error is not None:
            return Reason.BAD_JSON, None, f"invalid JSON: {error}", _clip(text)
        return None, value, "", ""


def _has_invalid_bytes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def iter_json_container(path: str | Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[RawRecord]:
    """Records of a top-level JSON array (elements) or object (members, with ``key``)."""
    with open_binary(path) as fh:
        win = _TextWindow(fh, chunk_bytes)
        if fh.read(3) == codecs.BOM_UTF8:  # a UTF-8 byte-order mark is not data
            win.pos_byte = 3
        else:
            fh.seek(0)
        opener = win.skip_ws()
        if opener == "":
            return
        if opener not in "[{":
            yield RawRecord(win.pos_byte, error=Reason.BAD_JSON,
                            detail="file is neither a JSON array nor an object",
                            raw=_clip(_printable(win.buf[win.pos:win.pos + MAX_RAW_CHARS])))
            return
        closer = "]" if opener == "[" else "}"
        win.advance_to(win.pos + 1)
        while True:
            c = win.skip_ws()
            if c == "":
                yield RawRecord(win.pos_byte, error=Reason.TRUNCATED_FILE,
                                detail=f"file ends before the closing {closer!r}")
                return
            if c == closer:  # end (a trailing comma before it is tolerated)
                win.advance_to(win.pos + 1)
                break
            if c in ",]}":  # a stray separator or the wrong closing bracket
                yield RawRecord(win.pos_byte, error=Reason.BAD_JSON, detail=f"unexpected {c!r}", raw=c)
                win.advance_to(win.pos + 1)
                continue
            offset = win.pos_byte
            key = None
            if opener == "{":
                error, key, detail, raw = _read_key(win)
                if error is not None:
                    yield RawRecord(offset, error=error, detail=detail, raw=raw)
                    if error == Reason.TRUNCATED_FILE:
                        return
                    if win.skip_ws() == ",":
                        win.advance_to(win.pos + 1)
                    continue
                if win.skip_ws() == "":
                    yield RawRecord(offset, key=key, error=Reason.TRUNCATED_FILE,
                                    detail="file ends after a member name")
                    return
            error, value, detail, raw = win.decode_value()
            c = win.skip_ws()
            if c == "" and error is None and isinstance(value, (int, float)) and not isinstance(value, bool):
                # A number right at a cut-off end may itself be cut ("10" -> "1"): not trusted.
                error, value, detail, raw = Reason.TRUNCATED_FILE, None, "file ends inside this record", str(value)
            yield RawRecord(offset, key=key, value=value, error=error, detail=detail, raw=raw)
            if error == Reason.TRUNCATED_FILE:
                return
            if c in (",", closer):
                win.advance_to(win.pos + 1)
                if c == closer:
                    break
            # Otherwise a missing separator (or EOF): the loop reads on from here.
        if win.skip_ws() != "":
            while len(win.buf) - win.pos < MAX_RAW_CHARS and win.fill():
                pass
            yield RawRecord(win.pos_byte, error=Reason.BAD_JSON, detail="text after the closing bracket",
                            raw=_clip(_printable(win.buf[win.pos:win.pos + MAX_RAW_CHARS])))


def _read_key(win: _TextWindow) -> tuple[Optional[str], Optional[str], str, str]:
    """Read ``"key":`` of an object member; on failure skip the member: (error, key, detail, raw)."""
    error, key, detail, raw = win.decode_value(key=True) if win.buf[win.pos] == '"' else ("x", None, "", "")
    if error is None and isinstance(key, str) and win.skip_ws() == ":":
        win.advance_to(win.pos + 1)
        return None, key, "", ""
    if error == Reason.TRUNCATED_FILE:
        return error, None, detail, raw
    # Not a `"key":` start: skip to the end of this member and report it.
    start = win.pos
    boundary = win.scan_to_boundary(win.pos)
    if boundary is None:
        text = win.buf[start:]
        win.advance_to(len(win.buf))
        return Reason.TRUNCATED_FILE, None, "file ends inside this member", _clip(_printable(text))
    text = win.buf[start:boundary]
    win.advance_to(boundary)
    return Reason.BAD_JSON, None, "object member is not `\"key\": value`", _clip(_printable(text))


def iter_jsonl(path: str | Path) -> Iterator[RawRecord]:
    """Records of a JSONL file, one per non-blank line (``line`` is 1-based).

    A line with invalid UTF-8 -> ``invalid_utf8``; unparsable -> ``bad_json``, except the last
    line when the file does not end with a newline: that is a cut-off write -> ``truncated_file``.
    A ``*.gz`` file that ends early (cut download) -> one ``truncated_file`` record at the cut.
    """
    with open_binary(path) as fh:
        yield from _jsonl_lines(fh)


def _jsonl_lines(fh: BinaryIO) -> Iterator[RawRecord]:
    offset, line_no = 0, 0
    try:
        for line_no, data in enumerate(fh, start=1):
            rec, offset = _jsonl_record(data, line_no, offset)
            if rec is not None:
                yield rec
    except (EOFError, OSError, gzip.BadGzipFile) as e:  # compressed stream cut or corrupt
        yield RawRecord(offset, line=line_no + 1, error=Reason.TRUNCATED_FILE,
                        detail=f"compressed file unreadable here: {e}")


def _jsonl_record(data: bytes, line_no: int, offset: int) -> tuple[Optional[RawRecord], int]:
    """One JSONL line -> (record or None for a blank line, offset of the next line)."""
    line_offset, offset = offset, offset + len(data)
    if line_no == 1 and data.startswith(codecs.BOM_UTF8):  # byte-order mark: not data
        data, line_offset = data[len(codecs.BOM_UTF8):], len(codecs.BOM_UTF8)
    if not data or data.isspace():  # blank (bytes.strip's whitespace), without copying the line
        return None, offset
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return RawRecord(line_offset, line=line_no, error=Reason.INVALID_UTF8,
                         detail=f"invalid UTF-8 at byte {e.start} of the line",
                         raw=_clip(data.decode("utf-8", "replace"))), offset
    try:
        value = _DECODER.decode(text)
    except _PARSE_ERRORS as e:
        cut = not data.endswith(b"\n")
        return RawRecord(line_offset, line=line_no,
                         error=Reason.TRUNCATED_FILE if cut else Reason.BAD_JSON,
                         detail=("last line has no newline and does not parse: " if cut
                                 else "invalid JSON: ") + str(e),
                         raw=_clip(text)), offset
    return RawRecord(line_offset, line=line_no, value=value), offset


def iter_json_records(path: str | Path) -> Iterator[RawRecord]:
    """Records of a JSON array/object file or a JSONL file, told apart by the first byte.

    ``[`` -> array elements. Anything else -> JSONL (a one-line JSON object file is also valid
    JSONL, so an object is never mistaken for a record container here).
    """
    if first_non_space_byte(path) == b"[":
        return iter_json_container(path)  # (also reads a cut .gz: the cut is a truncated_file)
    return iter_jsonl(path)


def record_location(path: str | Path, rec: RawRecord) -> str:
    """``path:line`` for JSONL records, ``path@byte_offset`` otherwise."""
    return f"{path}:{rec.line}" if rec.line else f"{path}@{rec.offset}"
