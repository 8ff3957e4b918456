"""Rows of table-shaped sources (WildChat, LMSYS, OASST, generic JSONL), whatever the file format.

``source_rows(source, default_path)`` checks the path at once (raising on a configuration error)
and returns a stream of ``(location, RawRecord)``:

- ``*.parquet`` -> pyarrow, one record batch (1024 rows) at a time; location ``path#row`` (0-based);
  a file pyarrow cannot open (cut download, not parquet) -> one ``truncated_file`` record;
- ``*.json`` -> JSON array (first byte ``[``) or JSONL; any other file -> JSONL, always line by
  line (via :mod:`json_stream`; location ``path@byte_offset`` / ``path:line``); ``*.gz``
  variants are decompressed on the fly;
- ``hf:<id>[:<split>]`` -> ``datasets.load_dataset(..., streaming=True)``; location
  ``hf:<id>:<split>#row``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from usersim.data_prep.adapters.json_stream import RawRecord, iter_json_records, iter_jsonl, record_location
from usersim.data_prep.adapters.paths import hf_spec, is_hf, iter_hf_rows, resolve_files, source_name
from usersim.data_prep.config import SourceConfig
from usersim.data_prep.schema import Reason

TABLE_SUFFIXES = (".parquet", ".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".ndjson.gz")
PARQUET_BATCH_ROWS = 1024

LocatedRecord = tuple[str, RawRecord]


def iter_parquet(path: str | Path) -> Iterator[LocatedRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        yield f"{path}#0", RawRecord(0, error=Reason.TRUNCATED_FILE,
                                      detail=f"cannot read parquet file: {e}")
        return
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for value in batch.to_pylist():
                yield f"{path}#{row}", RawRecord(row, value=value)
                row += 1
    except (pa.ArrowException, OSError) as e:
        yield f"{path}#{row}", RawRecord(row, error=Reason.TRUNCATED_FILE,
                                          detail=f"parquet file unreadable from row {row}: {e}")


def iter_table_file(path: str | Path) -> Iterator[LocatedRecord]:
    if str(path).endswith(".parquet"):
        yield from iter_parquet(path)
        return
    records = iter_json_records(path) if str(path).endswith((".json", ".json.gz")) else iter_jsonl(path)
    for rec in records:
        yield record_location(path, rec), rec


def source_rows(source: SourceConfig, default_path: str | Path | None = None) -> Iterator[LocatedRecord]:
    """All rows of a source (see module doc). Raises now if the path is unusable."""
    path = source.path or (str(default_path) if default_path else "")
    if not path:
        raise ValueError(f"source {source_name(source)!r}: adapter {source.adapter!r} needs `path` "
                         "(a file, a glob, a folder or hf:<dataset id>)")
    if is_hf(path):
        spec = hf_spec(source)

        def hub() -> Iterator[LocatedRecord]:
            for i, row in enumerate(iter_hf_rows(spec)):
                yield spec.location(i), RawRecord(i, value=row)

        return hub()
    files = resolve_files(path, TABLE_SUFFIXES)

    def local() -> Iterator[LocatedRecord]:
        for f in files:
            yield from iter_table_file(f)

    return local()
