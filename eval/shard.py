"""Eval across processes: each process of ``accelerate launch`` / ``torchrun`` takes a share of the items.

The model-bound steps (every system's generation, perplexity) run on every process over its share:
items ``rank, rank + world, ...`` and likewise for the perplexity conversations. Rank 0 gathers the
shares, puts them back in item order and computes every metric alone; the other processes exit.
Rows sample with per-row seeds derived from the item id (usersim.simulator.derive_seed), so a turn
does not depend on which process or batch wrote it, and 2 processes give the samples of 1.

One process (no ``WORLD_SIZE`` > 1 in the environment) is the plain case: nothing is initialised.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

from usersim.eval.simulate import SystemTurns

T = TypeVar("T")


@dataclass
class Shard:
    """This process's place among ``world`` processes, and the device it should use ("" = default)."""

    rank: int = 0
    world: int = 1
    device: str = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def take(self, n: int) -> list[int]:
        """The indices of ``n`` items this process handles (every ``world``-th, from ``rank``)."""
        return list(range(self.rank, n, self.world))

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order (on every process); ``[obj]`` alone."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                # both processes reach here before either tears gloo down: a rank that destroyed its group while
                # the other still finished its gather aborted once ("terminate called without an active
                # exception") in a full test run on a loaded 2-core machine
                dist.barrier()
                dist.destroy_process_group()


def current_shard(device: str = "") -> Shard:
    """The shard of this process: joins the process group that ``accelerate launch``/``torchrun`` set up.

    Each process uses ``cuda:<LOCAL_RANK>`` when CUDA is available and ``device`` is unset (nccl), else
    the CPU (gloo).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Shard(device=device)
    import torch
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and not device.startswith("cpu")
    if use_cuda and not device:
        device = f"cuda:{local}"
    if use_cuda:
        torch.cuda.set_device(torch.device(device))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Shard(rank, world, device)


def merge_turns(n_items: int, parts: Sequence[tuple[list[int], dict[str, SystemTurns]]]) -> dict[str, SystemTurns]:
    """Per system, the turns of every shard put back at their item indices."""
    systems = list(parts[0][1]) if parts else []
    out: dict[str, SystemTurns] = {}
    for system in systems:
        texts: list[str | None] = [None] * n_items
        ends, capped = [False] * n_items, [False] * n_items
        seen = 0
        for indices, turns in parts:
            t = turns[system]
            for j, i in enumerate(indices):
                texts[i], ends[i], capped[i] = t.texts[j], t.ends[j], t.capped[j]
            seen += len(indices)
        if seen != n_items:
            raise ValueError(f"the shards hold {seen} turns of {system!r} for {n_items} items")
        out[system] = SystemTurns(texts, ends, capped)
    return out


def merge_rows(n: int, parts: Sequence[tuple[list[int], list[T]]]) -> list[T]:
    """Rows of every shard put back at their indices (``n`` rows in all)."""
    out: list[Any] = [None] * n
    for indices, rows in parts:
        for i, row in zip(indices, rows, strict=True):
            out[i] = row
    if any(r is None for r in out):
        raise ValueError(f"the shards hold {sum(r is not None for r in out)} of {n} rows")
    return out
