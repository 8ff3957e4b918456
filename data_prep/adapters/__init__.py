"""Corpus adapters: each turns one source into a stream of Conversation / Quarantined items.

Contract (every adapter): ``read(source: SourceConfig) -> Iterator[AdapterItem]``; it streams (never
holds the corpus as Python objects), yields one item per unit read, and never raises on a bad
record: a bad record becomes ``Quarantined(reason=...)`` with its location (file:line or byte
offset). Only unusable *configuration* (missing file, unknown option, hub id while offline)
raises, with a message that says what to do. The adapters here check path and options when
called (before the first item), then read lazily.

Modules: ``chitchat``, ``sharegpt``, ``wildchat`` (also ``lmsys``), ``oasst``, ``jsonl`` (one per
corpus shape, each documenting its mapping); ``json_stream`` (incremental JSON array/object/JSONL
reading with byte offsets), ``table_rows`` (parquet/JSONL/hub rows), ``paths`` (file/glob/folder/
``hf:`` resolution, option checks), ``record_checks`` (shared type checks).
Locations: ``path:line`` (JSONL), ``path@byte_offset`` (JSON array/object), ``path#row``
(parquet, 0-based), ``hf:<id>:<split>#row``.
"""

from __future__ import annotations

import codecs
import importlib
from itertools import islice
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

from usersim.data_prep.config import SourceConfig
from usersim.data_prep.schema import AdapterItem, Reason

# adapter name -> "module:function"
ADAPTERS: dict[str, str] = {
    "chitchat": "usersim.data_prep.adapters.chitchat:read_chitchat",
    "sharegpt": "usersim.data_prep.adapters.sharegpt:read_sharegpt",
    "wildchat": "usersim.data_prep.adapters.wildchat:read_wildchat",
    "lmsys": "usersim.data_prep.adapters.wildchat:read_wildchat",
    "oasst": "usersim.data_prep.adapters.oasst:read_oasst",
    "jsonl": "usersim.data_prep.adapters.jsonl:read_jsonl",
}


# Adapters whose rows, in local JSONL files, can be mapped one line at a time away from the reader
# (in worker processes): adapter name -> "module:function" of ``map_row(location, rec, name)``.
LINE_MAPPERS: dict[str, str] = {
    "wildchat": "usersim.data_prep.adapters.wildchat:map_row",
    "lmsys": "usersim.data_prep.adapters.wildchat:map_row",
}
LINE_SUFFIXES = (".jsonl", ".ndjson")


class RawLine(NamedTuple):
    """One non-blank line of a local JSONL file, not parsed yet (:func:`resolve_line` maps it)."""

    path: str
    line: int  # 1-based
    offset: int  # byte offset of the line in the file
    data: bytes


def get_adapter(name: str) -> Callable[[SourceConfig], Iterator[AdapterItem]]:
    if name not in ADAPTERS:
        raise ValueError(f"unknown adapter {name!r}; available: {', '.join(sorted(ADAPTERS))}")
    module, func = ADAPTERS[name].split(":")
    return getattr(importlib.import_module(module), func)


def iter_source(source: SourceConfig) -> Iterator[AdapterItem]:
    """All items of one source, honouring ``max_items``."""
    items = get_adapter(source.adapter)(source)
    try:
        yield from islice(items, source.max_items or None)
    finally:
        close = getattr(items, "close", None)
        if close is not None:  # release the open file now, not at garbage collection
            close()


def _line_mapper(adapter: str) -> Callable:
    module, func = LINE_MAPPERS[adapter].split(":")
    return getattr(importlib.import_module(module), func)


def iter_source_lines(source: SourceConfig) -> Iterator[RawLine | AdapterItem] | None:
    """The items of ``source`` as raw lines, when its adapter maps JSONL rows line by line and all
    its files are local JSONL (else None: read it with :func:`iter_source`). Each non-blank line
    is one item, as the adapter would read it (``max_items`` honoured); :func:`resolve_line` turns
    a line into exactly the item the adapter yields for it. The path and options are checked now,
    by the adapter itself."""
    if source.adapter not in LINE_MAPPERS:
        return None
    items = get_adapter(source.adapter)(source)  # raises on a bad path or option, reads nothing
    close = getattr(items, "close", None)
    if close is not None:
        close()
    from usersim.data_prep.adapters.paths import is_hf, resolve_files, source_name
    from usersim.data_prep.adapters.table_rows import TABLE_SUFFIXES

    if not source.path or is_hf(source.path):
        return None
    files = resolve_files(source.path, TABLE_SUFFIXES)
    if not all(f.name.endswith(LINE_SUFFIXES) for f in files):
        return None
    return islice(_raw_lines(files, _line_mapper(source.adapter), source_name(source)), source.max_items or None)


def _raw_lines(files: list[Path], mapper: Callable, name: str) -> Iterator[RawLine | AdapterItem]:
    """What ``json_stream.iter_jsonl`` reads from each file, the lines left unparsed."""
    from usersim.data_prep.adapters.json_stream import RawRecord

    for file in files:
        offset, line_no, path = 0, 0, str(file)
        with open(file, "rb") as fh:
            try:
                for line_no, data in enumerate(fh, start=1):
                    body = data[len(codecs.BOM_UTF8):] if line_no == 1 and data.startswith(codecs.BOM_UTF8) else data
                    if body and not body.isspace():  # a blank line is not an item
                        yield RawLine(path, line_no, offset, data)
                    offset += len(data)
            except OSError as e:  # as iter_jsonl: what was read so far is all there is
                rec = RawRecord(offset, line=line_no + 1, error=Reason.TRUNCATED_FILE,
                                detail=f"compressed file unreadable here: {e}")
                yield mapper(f"{path}:{rec.line}", rec, name)


def resolve_line(raw: RawLine, adapter: str, name: str) -> AdapterItem:
    """The item ``adapter`` yields for the raw line (source ``name``)."""
    from usersim.data_prep.adapters.json_stream import _jsonl_record

    rec, _ = _jsonl_record(raw.data, raw.line, raw.offset)
    return _line_mapper(adapter)(f"{raw.path}:{rec.line}", rec, name)
