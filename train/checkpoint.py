"""Resumable training state: tensors in safetensors, everything else in JSON (no pickle).

``RUN_DIR/checkpoints/step-000120/`` holds ``adapter.safetensors`` (trainable parameters by name),
``optimizer.safetensors`` + the optimizer's param groups in ``state.json``, per-process RNG
states (``rng-rank<R>.safetensors`` + ``rng-rank<R>.json``), the scheduler state, the data
position (epoch, step) and the history needed for the curve. ``state.json`` is written last, so a
directory without it (a process killed mid-save) is ignored by ``resume_from_checkpoint: auto``.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

STATE = "state.json"


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:08d}"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    root = Path(run_dir) / "checkpoints"
    done = sorted(p for p in root.glob("step-*") if (p / STATE).is_file()) if root.is_dir() else []
    return done[-1] if done else None


def resolve_resume(run_dir: str | Path, resume: str) -> Path | None:
    """"" -> None, "auto" -> newest complete checkpoint (or None), else the given path (must be complete)."""
    if not resume:
        return None
    if resume == "auto":
        return latest_checkpoint(run_dir)
    path = Path(resume)
    if not (path / STATE).is_file():
        raise FileNotFoundError(f"resume_from_checkpoint={resume!r}: no complete checkpoint there (missing {STATE})")
    return path


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    sd = optimizer.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{idx}.{key}"] = t.detach().cpu().contiguous()
    return tensors, sd["param_groups"]


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                    param_groups: list[dict[str, Any]]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = t
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    py = random.getstate()
    np_state = np.random.get_state()
    return tensors, {"python": [py[0], list(py[1]), py[2]],
                     "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}


def _set_rng_state(tensors: dict[str, torch.Tensor], other: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    v, internal, gauss = other["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = other["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_rng(ckpt: Path, rank: int) -> None:
    ckpt.mkdir(parents=True, exist_ok=True)
    tensors, other = _rng_state()
    save_file(tensors, str(ckpt / f"rng-rank{rank}.safetensors"))
    (ckpt / f"rng-rank{rank}.json").write_text(json.dumps(other))


def save_checkpoint(ckpt: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    progress: dict[str, Any]) -> None:
    """Main process only, after every rank has called :func:`save_rng`. ``state.json`` goes last."""
    ckpt.mkdir(parents=True, exist_ok=True)
    adapter = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(adapter, str(ckpt / "adapter.safetensors"))
    opt_tensors, param_groups = _optimizer_tensors(optimizer)
    save_file(opt_tensors, str(ckpt / "optimizer.safetensors"))
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    state = {"progress": progress, "optimizer_param_groups": param_groups, "scheduler": sched}
    tmp = ckpt / (STATE + ".tmp")
    tmp.write_text(json.dumps(state))
    tmp.rename(ckpt / STATE)


def load_checkpoint(ckpt: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    rank: int) -> dict[str, Any]:
    """Restore adapter, optimizer, scheduler and this rank's RNG; returns the saved progress dict."""
    state = json.loads((ckpt / STATE).read_text())
    adapter = load_file(str(ckpt / "adapter.safetensors"))
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in adapter]
    if missing:
        raise ValueError(f"checkpoint {ckpt} does not match the model: no tensor for {missing[0]!r}")
    with torch.no_grad():
        for name, t in adapter.items():
            params[name].copy_(t.to(params[name].dtype))
    _load_optimizer(optimizer, load_file(str(ckpt / "optimizer.safetensors")), state["optimizer_param_groups"])
    scheduler.load_state_dict({**scheduler.state_dict(), **state["scheduler"]})
    rng_file = ckpt / f"rng-rank{rank}.safetensors"
    if rng_file.is_file():
        _set_rng_state(load_file(str(rng_file)), json.loads((ckpt / f"rng-rank{rank}.json").read_text()))
    return state["progress"]


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    root = Path(run_dir) / "checkpoints"
    if keep <= 0 or not root.is_dir():
        return
    done = sorted(p for p in root.glob("step-*") if (p / STATE).is_file())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
