"""Writes a ``DatasetDict`` directory (the layout of ``DatasetDict.save_to_disk``) batch by batch.

The data stage builds its splits as Arrow record batches and appends them here, so nothing is
held in memory or written twice: ``datasets.load_from_disk`` reads the result as if
``save_to_disk`` had written it (``dataset_dict.json``; per split ``data-XXXXX-of-YYYYY.arrow``
shards of at most ``max_shard_bytes``, ``dataset_info.json`` with the features and
``state.json``). Shards are Arrow IPC streams with the features in their schema metadata,
written by ``datasets.arrow_writer.ArrowWriter``. ``datasets`` is imported when a split is
written, not with this module (it takes about half a second).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pyarrow as pa

if TYPE_CHECKING:
    from datasets import Features
    from datasets.arrow_writer import ArrowWriter

MAX_SHARD_BYTES = 500 * 1000 * 1000  # datasets' default max_shard_size ("500MB")


def table_to_ipc(table: pa.Table) -> bytes:
    """``table`` as Arrow IPC stream bytes (how worker processes hand batches back)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def table_from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


class SplitWriter:
    """One split's shards; ``write`` appends a table, ``close`` names the shards and writes the state."""

    def __init__(self, folder: Path, name: str, features: Features, max_shard_bytes: int = MAX_SHARD_BYTES):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.features = features
        self.max_shard_bytes = max_shard_bytes
        self.rows = 0
        self._shards: list[Path] = []
        self._writer: ArrowWriter | None = None

    def _open_shard(self) -> ArrowWriter:
        from datasets.arrow_writer import ArrowWriter

        path = self.folder / f"shard-{len(self._shards):05d}.arrow.tmp"
        self._shards.append(path)
        self._writer = ArrowWriter(features=self.features, path=str(path))
        return self._writer

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        writer = self._writer or self._open_shard()
        if writer._num_bytes and writer._num_bytes + table.nbytes > self.max_shard_bytes:
            writer.finalize()
            writer.close()
            writer = self._open_shard()
        writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> None:
        from datasets import DatasetInfo
        from datasets.fingerprint import generate_random_fingerprint

        writer = self._writer or self._open_shard()  # an empty split still gets one (schema-only) shard
        writer.finalize()
        writer.close()
        n = len(self._shards)
        files = []
        for i, path in enumerate(self._shards):
            name = f"data-{i:05d}-of-{n:05d}.arrow"
            os.replace(path, self.folder / name)
            files.append({"filename": name})
        state = {"_data_files": files, "_fingerprint": generate_random_fingerprint(), "_format_columns": None,
                 "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False, "_split": self.name}
        (self.folder / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
        info = asdict(DatasetInfo(features=self.features))
        (self.folder / "dataset_info.json").write_text(json.dumps({k: info[k] for k in sorted(info)}, indent=2),
                                                      encoding="utf-8")

    def shard_paths(self) -> list[Path]:
        return sorted(self.folder.glob("data-*.arrow"))


class DatasetDictWriter:
    """The splits of one ``DatasetDict`` directory, written under ``folder`` and moved to ``target``
    on ``commit`` (an existing ``target`` is replaced)."""

    def __init__(self, folder: Path, features: dict[str, Features]):
        self.folder = Path(folder)
        self.splits = {name: SplitWriter(self.folder / name, name, f) for name, f in features.items()}

    def __getitem__(self, name: str) -> SplitWriter:
        return self.splits[name]

    def close(self) -> None:
        for w in self.splits.values():
            w.close()
        (self.folder / "dataset_dict.json").write_text(json.dumps({"splits": list(self.splits)}), encoding="utf-8")

    def commit(self, target: Path) -> None:
        target = Path(target)
        if target.exists():
            shutil.rmtree(target)
        os.replace(self.folder, target)


def iter_split_batches(folder: Path, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The record batches of a written split, reduced to ``columns`` (memory-mapped: only those
    columns' pages are read)."""
    for path in sorted(Path(folder).glob("data-*.arrow")):
        with pa.memory_map(str(path)) as source:
            for batch in pa.ipc.open_stream(source):
                yield batch.select(columns)
