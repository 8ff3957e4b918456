"""Resumable training state: tensors in safetensors, everything else in JSON, except where an engine forbids it.

``RUN_DIR/checkpoints/step-000120/`` holds

- ``adapter.safetensors``: the trainable (LoRA) parameters, full tensors, named as in the training
  module (``model.base_model.model...``). Under FSDP the shards are gathered collectively first.
- ``optimizer.safetensors`` (tensors ``state/<param name>/<key>``) + the param groups in
  ``state.json``. The state is the *full* (unsharded) optimizer state, gathered with
  ``torch.distributed.checkpoint.state_dict`` on every rank and re-sharded on load, so the same
  file serves one process, DDP and FSDP, and a resume on a different number of processes.
- ``rng-rank<R>.safetensors`` + ``rng-rank<R>.json``: each process's RNG state (LoRA dropout).
- ``deepspeed/`` (DeepSpeed only): ZeRO partitions the optimizer state into flat buffers that only
  the engine can read back, so every rank writes its partition with ``engine.save_checkpoint``.
  These files are torch pickles (``*_optim_states.pt``): the one place a checkpoint is not
  safetensors + JSON. They only load on the same number of processes.
- ``state.json``: scheduler state, progress/history, and the plan (world size, grad_accum_steps,
  data settings) a resume must match. Written last, so a directory without it (a process killed
  mid-save) is ignored by ``resume_from_checkpoint: auto``.
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
PLAIN, FSDP, DEEPSPEED = "plain", "fsdp", "deepspeed"


class ResumeMismatchError(RuntimeError):
    """The checkpoint was written under settings this run cannot continue from exactly."""


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


def engine_of(accelerator: Any) -> str:
    kind = str(getattr(accelerator.distributed_type, "value", accelerator.distributed_type)).upper()
    return FSDP if kind == "FSDP" else DEEPSPEED if kind == "DEEPSPEED" else PLAIN


# --- trainable parameters ---------------------------------------------------------------------

def trainable_names(accelerator: Any, model: nn.Module) -> list[str]:
    return [n for n, p in accelerator.unwrap_model(model).named_parameters() if p.requires_grad]


def gather_trainable(accelerator: Any, model: nn.Module) -> dict[str, torch.Tensor]:
    """Full CPU copies of the trainable parameters. Collective: every rank must call it.

    The main process gets every tensor; under FSDP the other ranks get ``{}``.
    """
    engine = engine_of(accelerator)
    if engine == DEEPSPEED:
        plugin = accelerator.state.deepspeed_plugin
        if plugin is not None and plugin.zero_stage == 3:
            raise NotImplementedError("ZeRO-3 shards the LoRA parameters; use ZeRO-2 or FSDP "
                                      "(configs/accelerate/fsdp.yaml) for bases that do not fit one GPU")
        unwrapped = accelerator.unwrap_model(model)
        return {n: p.detach().cpu().contiguous() for n, p in unwrapped.named_parameters() if p.requires_grad}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    # A frozen weight tied to another (Gemma's lm_head = embed_tokens) can still come back: keep the trainable ones.
    wanted = set(trainable_names(accelerator, model))
    return {n: t.contiguous() for n, t in get_model_state_dict(model, options=opts).items() if n in wanted}


def _load_trainable(accelerator: Any, model: nn.Module, tensors: dict[str, torch.Tensor], ckpt: Path) -> None:
    """Copy full saved tensors into the (possibly sharded) trainable parameters; every rank calls it."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = dict(accelerator.unwrap_model(model).named_parameters())
    names = [n for n, p in params.items() if p.requires_grad]
    missing = [n for n in names if n not in tensors]
    if missing:
        raise ValueError(f"checkpoint {ckpt} does not match the model: no tensor for {missing[0]!r}")
    with torch.no_grad():
        for name in names:  # the same order on every rank: distribute_tensor is collective
            p, full = params[name], tensors[name]
            if tuple(full.shape) != tuple(p.shape):
                raise ValueError(f"checkpoint {ckpt}: {name!r} has shape {tuple(full.shape)}, the model {tuple(p.shape)}")
            full = full.to(device=p.device, dtype=p.dtype)
            p.copy_(distribute_tensor(full, p.device_mesh, p.placements) if isinstance(p, DTensor) else full)


# --- optimizer ---------------------------------------------------------------------------------

def _raw_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps it


def gather_optimizer(accelerator: Any, model: nn.Module, optimizer: Any) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Full optimizer state as (tensors keyed ``state/<param>/<key>``, param groups). Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    sd = get_optimizer_state_dict(model, _raw_optimizer(optimizer),
                                  options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    tensors = {}
    for name, state in sd.get("state", {}).items():
        for key, value in state.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"state/{name}/{key}"] = t.detach().cpu().contiguous()
    return tensors, sd.get("param_groups", [])


def _load_optimizer(model: nn.Module, optimizer: Any, tensors: dict[str, torch.Tensor],
                    param_groups: list[dict[str, Any]]) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    state: dict[str, dict[str, torch.Tensor]] = {}
    for full, t in tensors.items():
        _, rest = full.split("/", 1)
        name, key = rest.rsplit("/", 1)
        state.setdefault(name, {})[key] = t
    set_optimizer_state_dict(model, _raw_optimizer(optimizer), {"state": state, "param_groups": param_groups},
                             options=StateDictOptions(full_state_dict=True))


# --- RNG -----------------------------------------------------------------------------------------

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


def load_rng(ckpt: Path, rank: int) -> None:
    files = [ckpt / f"rng-rank{rank}.safetensors", ckpt / f"rng-rank{rank}.json"]
    absent = [f.name for f in files if not f.is_file()]
    if absent:
        raise FileNotFoundError(f"checkpoint {ckpt} has no RNG state for rank {rank} ({', '.join(absent)} missing): "
                                "the checkpoint is incomplete; resume from an earlier one or start fresh")
    _set_rng_state(load_file(str(files[0])), json.loads(files[1].read_text()))


def reseed_rng(seed: int, step: int, rank: int) -> None:
    """A deterministic RNG state for a rank that has no saved one (the world size changed)."""
    s = (seed * 1_000_003 + step * 101 + rank) % (2**32)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


# --- the plan a resume must match -------------------------------------------------------------

def check_resumable(ckpt: Path, plan: dict[str, Any]) -> dict[str, Any]:
    """Refuse (ResumeMismatchError) unless ``plan`` can continue the checkpoint's run exactly.

    ``plan`` holds world_size, grad_accum_steps, engine and the settings that decide the data order.
    Returns the saved plan. A different world size is fine when world_size x grad_accum_steps (the
    packed rows of one optimizer step, which fixes the data order and the step count) is unchanged,
    except under DeepSpeed, whose optimizer partitions are tied to the number of ranks.
    """
    saved = json.loads((ckpt / STATE).read_text()).get("plan")
    if saved is None:
        raise ResumeMismatchError(f"checkpoint {ckpt} predates the recorded training plan; start fresh")
    data_keys = [k for k in plan if k not in ("world_size", "grad_accum_steps", "engine")]
    changed = [f"{k}: {saved.get(k)!r} -> {plan[k]!r}" for k in data_keys if saved.get(k) != plan[k]]
    if changed:
        raise ResumeMismatchError(f"cannot resume from {ckpt}: settings that decide the data order changed "
                                  f"({'; '.join(changed)}); restore them or start fresh")
    rows_then = saved["world_size"] * saved["grad_accum_steps"]
    rows_now = plan["world_size"] * plan["grad_accum_steps"]
    if rows_then != rows_now:
        raise ResumeMismatchError(
            f"cannot resume from {ckpt}: it was written by {saved['world_size']} process(es) x grad_accum_steps="
            f"{saved['grad_accum_steps']} = {rows_then} packed rows per optimizer step, this run has "
            f"{plan['world_size']} x {plan['grad_accum_steps']} = {rows_now}. The data order (which rows form "
            f"each step, and so the step count) depends on that product; relaunch so that processes x "
            f"grad_accum_steps = {rows_then}, or start fresh")
    if (saved["engine"] == DEEPSPEED) != (plan["engine"] == DEEPSPEED):
        raise ResumeMismatchError(f"cannot resume from {ckpt}: written under {saved['engine']}, this run uses "
                                  f"{plan['engine']}; DeepSpeed keeps its optimizer state in its own format")
    if saved["engine"] == DEEPSPEED and saved["world_size"] != plan["world_size"]:
        raise ResumeMismatchError(f"cannot resume from {ckpt}: DeepSpeed partitioned the optimizer state over "
                                  f"{saved['world_size']} processes and this run has {plan['world_size']}; "
                                  "relaunch with the same number of processes")
    return saved


# --- save / load ---------------------------------------------------------------------------------

def save_checkpoint(accelerator: Any, ckpt: Path, model: nn.Module, optimizer: Any, scheduler: Any,
                    progress: dict[str, Any], plan: dict[str, Any]) -> None:
    """Every rank calls this (gathers are collective); the main process writes the shared files, state.json last."""
    rank = accelerator.process_index
    ckpt.mkdir(parents=True, exist_ok=True)
    save_rng(ckpt, rank)
    adapter = gather_trainable(accelerator, model)
    if plan["engine"] == DEEPSPEED:
        # Every rank writes its ZeRO partition of the optimizer state; the frozen base is left out.
        model.save_checkpoint(str(ckpt / "deepspeed"), tag="engine", save_latest=False,
                              exclude_frozen_parameters=True)
        opt_tensors, param_groups = {}, []
    else:
        opt_tensors, param_groups = gather_optimizer(accelerator, model, optimizer)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_file(adapter, str(ckpt / "adapter.safetensors"))
        if plan["engine"] != DEEPSPEED:
            save_file(opt_tensors, str(ckpt / "optimizer.safetensors"))
        sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
        state = {"progress": progress, "plan": plan, "optimizer_param_groups": param_groups, "scheduler": sched}
        tmp = ckpt / (STATE + ".tmp")
        tmp.write_text(json.dumps(state))
        tmp.rename(ckpt / STATE)
    accelerator.wait_for_everyone()


def load_checkpoint(accelerator: Any, ckpt: Path, model: nn.Module, optimizer: Any, scheduler: Any,
                    plan: dict[str, Any], seed: int) -> tuple[dict[str, Any], str]:
    """Restore adapter, optimizer, scheduler and this rank's RNG; every rank calls it.

    Returns (saved progress, a note on the RNG). Raises ResumeMismatchError first if the checkpoint
    cannot be continued under ``plan`` (see :func:`check_resumable`).
    """
    saved_plan = check_resumable(ckpt, plan)
    state = json.loads((ckpt / STATE).read_text())
    _load_trainable(accelerator, model, load_file(str(ckpt / "adapter.safetensors")), ckpt)
    if plan["engine"] == DEEPSPEED:
        path, _ = model.load_checkpoint(str(ckpt / "deepspeed"), tag="engine", load_module_strict=False,
                                        load_optimizer_states=True, load_lr_scheduler_states=False)
        if path is None:
            raise FileNotFoundError(f"checkpoint {ckpt}: DeepSpeed found no engine state under deepspeed/")
    else:
        _load_optimizer(model, optimizer, load_file(str(ckpt / "optimizer.safetensors")),
                        state["optimizer_param_groups"])
    scheduler.load_state_dict({**scheduler.state_dict(), **state["scheduler"]})
    rank, step = accelerator.process_index, state["progress"]["step"]
    if saved_plan["world_size"] == plan["world_size"]:
        load_rng(ckpt, rank)
        note = "per-rank RNG restored"
    else:
        reseed_rng(seed, step, rank)
        note = (f"world size {saved_plan['world_size']} -> {plan['world_size']}: same data order, but the per-rank "
                "RNG streams (LoRA dropout) cannot carry over, so each rank is reseeded from (seed, step, rank)")
    return state["progress"], note


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    root = Path(run_dir) / "checkpoints"
    if keep <= 0 or not root.is_dir():
        return
    done = sorted(p for p in root.glob("step-*") if (p / STATE).is_file())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
