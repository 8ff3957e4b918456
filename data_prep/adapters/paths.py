"""Where a source's records come from: local files (file, glob, folder) or ``hf:<dataset id>``.

Also the option check every adapter runs first. Errors here are configuration errors: they raise
at once (when the adapter is called, before any record is read) with a message saying what to do.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from usersim.data_prep.config import SourceConfig

HF_PREFIX = "hf:"
HF_OPTIONS = ("split", "config")  # hf: <split> (default "train"), <config> (dataset config name)
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def source_name(source: SourceConfig) -> str:
    """The label of a source in ids, counts and quarantine: ``name`` or the adapter name."""
    return source.name or source.adapter


def check_options(source: SourceConfig, allowed: Iterable[str]) -> dict[str, Any]:
    """The source's options, after checking every key is known to the adapter (else ValueError)."""
    allowed = set(allowed) | (set(HF_OPTIONS) if is_hf(source.path) else set())
    unknown = sorted(set(source.options) - allowed)
    if unknown:
        raise ValueError(
            f"source {source_name(source)!r} (adapter {source.adapter!r}): unknown option(s) "
            f"{', '.join(map(repr, unknown))}; valid options: {', '.join(sorted(allowed)) or 'none'}"
        )
    return dict(source.options)


def is_hf(path: str) -> bool:
    return path.startswith(HF_PREFIX)


def resolve_files(path: str | Path, suffixes: tuple[str, ...] = ()) -> list[Path]:
    """The files a local ``path`` names: a file, a glob (sorted matches) or a folder.

    For a folder, all files inside (recursively, sorted) whose name ends with one of ``suffixes``
    (all files when empty). Raises FileNotFoundError when nothing matches.
    """
    path = str(path)
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith(".")
                       and (not suffixes or f.name.endswith(suffixes)))
        if not files:
            raise FileNotFoundError(
                f"folder {path!r} holds no {'/'.join(suffixes) or ''} files; point `path` at a file, "
                "a glob or a folder with data files")
        return files
    if glob.has_magic(path):
        files = sorted(Path(f) for f in glob.glob(path, recursive=True) if Path(f).is_file())
        if not files:
            raise FileNotFoundError(f"glob {path!r} matches no files; check `path`")
        return files
    raise FileNotFoundError(f"data file {path!r} not found; check the source's `path` "
                            "(a file, a glob, a folder, or hf:<dataset id>)")


@dataclass
class HubSpec:
    dataset_id: str
    split: str
    config: str | None

    def location(self, row_index: int) -> str:
        return f"hf:{self.dataset_id}:{self.split}#{row_index}"


def hf_spec(source: SourceConfig) -> HubSpec:
    """Parse ``hf:<id>`` / ``hf:<id>:<split>`` (+ options split/config); fail fast when offline."""
    rest = source.path[len(HF_PREFIX):]
    dataset_id, _, split = rest.partition(":")
    if not dataset_id:
        raise ValueError(f"source {source_name(source)!r}: empty dataset id in path {source.path!r}; "
                         "write hf:<owner>/<dataset>[:<split>]")
    split = split or source.options.get("split") or "train"
    offline = [v for v in _OFFLINE_VARS if os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")]
    if offline:
        raise RuntimeError(
            f"source {source_name(source)!r}: path {source.path!r} needs the Hugging Face Hub, but "
            f"{'/'.join(offline)} is set (offline mode). Download the dataset files while online and "
            "point `path` at the local file/folder, or unset the offline variable.")
    return HubSpec(dataset_id, split, source.options.get("config"))


def iter_hf_rows(spec: HubSpec) -> Iterator[dict[str, Any]]:
    """Rows of a hub dataset split, streamed (nothing is downloaded up front)."""
    import datasets

    ds = datasets.load_dataset(spec.dataset_id, spec.config, split=spec.split, streaming=True)
    yield from ds
