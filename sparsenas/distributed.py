"""torch.distributed for supernet searches run under ``torchrun``: the process group, rank tests,
and the few collectives the supernet trainers use.

``torchrun --nproc-per-node N -m sparsenas.cli search ...`` starts N processes with ``RANK``,
``WORLD_SIZE`` and ``MASTER_ADDR``/``MASTER_PORT`` in their environment; :func:`init_from_env`
joins them (gloo on CPU, nccl on CUDA). Without those variables every helper here is the
single-process no-op, so nothing else needs to know whether it runs distributed.
"""
from __future__ import annotations

import os
from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn


def env_world_size() -> int:
    """The world size torchrun asked for (1 when not started by torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def init_from_env(device: str = "cpu") -> bool:
    """Join the process group torchrun described; True when this process runs distributed."""
    if dist.is_initialized():
        return True
    if env_world_size() <= 1:
        return False
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """Rank 0 (or a single process): the only one that talks to the study and writes checkpoints."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (pickled between the ranks of one job)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap(module: nn.Module) -> nn.Module:
    """``module`` in DistributedDataParallel when distributed (gradients averaged over the ranks in
    backward), else ``module`` itself. ``find_unused_parameters``: the supernet trainers step one
    parameter group at a time (weights, scores, one child's slices), so most steps leave some unused."""
    if not active():
        return module
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [module_device(module).index] if module_device(module).type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=True)


def module_device(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def average_(tensors: Iterable[Tensor | None]) -> None:
    """All-reduce the mean of ``tensors`` in place (one flat buffer: one collective)."""
    ts = [t for t in tensors if t is not None]
    if not active() or not ts:
        return
    flat = torch.cat([t.reshape(-1) for t in ts])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for t in ts:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def average_grads(params: Iterable[nn.Parameter]) -> None:
    """Average the gradients of ``params`` over the ranks, by hand: for the architecture parameters,
    whose gradients come from ``torch.autograd.grad`` or a forward outside the DDP wrapper."""
    params = list(params)
    if not active():
        return
    for p in params:
        if p.grad is None:  # every rank must send the same shapes
            p.grad = torch.zeros_like(p)
    average_([p.grad for p in params])


def shard(batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """This rank's share of a global batch (rows rank, rank + W, ...): together the ranks see the
    batch one process would, so with the loss scaled by :func:`shard_weight` the averaged gradient
    is the one-process gradient."""
    if not active():
        return batch
    return tuple(t[rank()::world_size()] for t in batch)


def shard_weight(global_rows: int) -> float:
    """Factor turning a shard's summed loss into its share of the global batch's mean loss, after
    DDP's division by the world size: ``world / global_rows``."""
    return world_size() / max(1, global_rows)
