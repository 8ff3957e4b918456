"""What a train run directory holds for the runtime: the decoding it was given, the length it was trained at,
where its base model is, and fetching a published adapter repo (docs/contracts.md, train run directory)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from usersim.train.config import TrainConfig

DECODING_FILE = "decoding.json"
DECODING_KEYS = ("temperature", "top_p", "end_bias")
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def read_decoding(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The decoding a train run was given (``decoding.json``: temperature, top_p, end_bias), {} if none.

    Written by ``usersim decoding`` (usersim.eval.decoding_choice), which chooses it on validation users.
    """
    path = Path(run_dir) / DECODING_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    chosen = data.get("chosen", data)
    unknown = set(chosen) - set(DECODING_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown decoding keys {sorted(unknown)}; known: {list(DECODING_KEYS)}")
    return {k: chosen[k] for k in DECODING_KEYS if k in chosen}


def trained_max_seq_len(run_dir: str | os.PathLike) -> int:
    """The ``max_seq_len`` a train run was trained at (its ``config.yaml``), else TrainConfig's default."""
    import yaml

    config_file = Path(run_dir) / "config.yaml"
    if config_file.is_file():
        value = (yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}).get("max_seq_len")
        if isinstance(value, int) and value > 0:
            return value
    return TrainConfig.max_seq_len


def resolve_base_path(run_dir: Path, base_model: str | None) -> str:
    """Where the base checkpoint is: the override, base_model.json's path, or adapter_config's base.

    adapter_config.json's ``base_model_name_or_path`` is used when base_model.json is absent, or
    names no existing directory while adapter_config names an existing directory or a Hub id
    (``owner/name``, e.g. a published adapter repo whose base is not bundled).
    """
    if base_model:
        return str(base_model)
    config_file = run_dir / "adapter_config.json"
    peft_base = str(json.loads(config_file.read_text()).get("base_model_name_or_path") or "")
    peft_base_usable = bool(peft_base) and (Path(peft_base).expanduser().is_dir() or (
        peft_base.count("/") == 1 and not peft_base.startswith((".", "/", "~"))))
    info_file = run_dir / "base_model.json"
    if info_file.is_file():
        info = json.loads(info_file.read_text())
        path = Path(str(info.get("path") or "")).expanduser()
        candidates = [path] if path.is_absolute() else [run_dir / path, path]
        for cand in candidates:
            if str(path) not in ("", ".") and cand.is_dir():
                return str(cand)
        if not peft_base_usable:
            note = f" ({info['note']})" if info.get("note") else ""
            raise FileNotFoundError(
                f"{info_file} names base model {str(path)!r}, which is not a directory here{note}; "
                "rebuild it (usersim train converts the base once) or pass base_model=<local checkpoint dir>")
    if not peft_base:
        raise ValueError(f"{run_dir} has no base_model.json and {config_file} names no base model; pass base_model=")
    return peft_base


def download_adapter_repo(repo_id: str) -> Path:
    """snapshot_download of a published adapter repo, with a clear error when it cannot be reached."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt",
                                                                "config.yaml"]))
    except Exception as exc:  # offline, unknown repo, no access: the message must say what to do
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        hint = ("HF_HUB_OFFLINE is set, so nothing can be downloaded: pass a local train run directory"
                if offline else "check the repo id, your network and (for private repos) `hf auth login`")
        raise OSError(f"{repo_id!r} is not a local directory and could not be fetched from the Hub "
                      f"({type(exc).__name__}); {hint}") from None
