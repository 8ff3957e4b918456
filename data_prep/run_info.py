"""Self-describing run directories: every stage writes ``run_info.json`` beside its outputs.

It records the seed, the git revision of the code, the command line and the versions of the
packages that shape the numbers (torch, transformers, peft, datasets, ...). No secrets: the
environment is never dumped. :func:`peak_rss_mb` is the peak-memory figure every stage and
benchmark reports.
"""

from __future__ import annotations

import json
import platform
import resource
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from usersim.data_prep.stage_config import dump_config

TRACKED_PACKAGES = (
    "usersim", "torch", "transformers", "peft", "accelerate", "datasets", "tokenizers",
    "safetensors", "scikit-learn", "scipy", "numpy", "sentence-transformers", "huggingface_hub",
)


def git_revision(cwd: str | Path | None = None) -> str:
    """``<sha>`` or ``<sha>-dirty``; ``unknown`` outside a git checkout."""
    here = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident memory in MB (0.1 MB steps) of this process; with ``children``, the larger of it
    and the peak of its waited-for child processes. Linux reports ``ru_maxrss`` in KiB."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if children:
        kib = max(kib, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return round(kib / 1024, 1)


def run_info(seed: int, stage: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "stage": stage,
        "seed": seed,
        "git_revision": git_revision(),
        "versions": package_versions(),
        "argv": sys.argv,
        "platform": platform.platform(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(extra or {}),
    }


def write_run_dir_header(out_dir: str | Path, cfg: Any, seed: int, stage: str,
                         extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create ``out_dir`` and write ``config.yaml`` (resolved) and ``run_info.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    info = run_info(seed, stage, extra)
    (out / "run_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return info
