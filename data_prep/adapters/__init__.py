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

import importlib
from itertools import islice
from typing import Callable, Iterator

from data_prep.config import SourceConfig
from data_prep.schema import AdapterItem

# adapter name -> "module:function"
ADAPTERS: dict[str, str] = {
    "chitchat": "data_prep.adapters.chitchat:read_chitchat",
    "sharegpt": "data_prep.adapters.sharegpt:read_sharegpt",
    "wildchat": "data_prep.adapters.wildchat:read_wildchat",
    "lmsys": "data_prep.adapters.wildchat:read_wildchat",
    "oasst": "data_prep.adapters.oasst:read_oasst",
    "jsonl": "data_prep.adapters.jsonl:read_jsonl",
}


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
