"""torch.distributed helpers that every process calls alike: rank and world, collectives on the device
the backend needs (NCCL: the GPU), strided work splits and gathering them back in order."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_distributed(device: str | torch.device | None = "auto") -> tuple[int, int, torch.device]:
    """(rank, world size, device) from torchrun's environment and the requested `device`; a plain
    process is rank 0 of 1. Under torchrun a CUDA device means this process's GPU (`LOCAL_RANK`), and
    the backend is NCCL on GPUs, gloo on CPUs."""
    from singularity_vl.devices import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if dev.type == "cuda":
        index = int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else (dev.index or 0)
        dev = torch.device("cuda", index)
        torch.cuda.set_device(dev)
    under_torchrun = "TORCHELASTIC_RUN_ID" in os.environ  # a process group even for one process (NCCL checked)
    if (world > 1 or under_torchrun) and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return rank, world, dev


def rank_world() -> tuple[int, int]:
    """(rank, world size); a plain process is rank 0 of 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on the process that writes files (rank 0, or the only one)."""
    return rank_world()[0] == 0


def collective_device() -> torch.device:
    """Where collective tensors must live: the current GPU for NCCL, the CPU for gloo."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_(t: torch.Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> torch.Tensor:
    """In-place all-reduce of `t` wherever it lives (copied to the backend's device and back if needed)."""
    if rank_world()[1] == 1:
        return t
    dev = collective_device()
    if t.device == dev:
        dist.all_reduce(t, op=op)
        return t
    buf = t.to(dev)
    dist.all_reduce(buf, op=op)
    t.copy_(buf.to(t.device))
    return t


def all_agree(flag: bool) -> bool:
    """True only when `flag` is true on every rank (each rank takes part: use it before a collective
    that some rank might want to skip)."""
    return bool(all_reduce_(torch.tensor([int(flag)]), dist.ReduceOp.MIN).item())


def sum_int(value: int) -> int:
    """`value` summed over ranks."""
    return int(all_reduce_(torch.tensor([value], dtype=torch.int64)).item())


def my_share(n: int) -> range:
    """This rank's items of `n`: every `world`-th from `rank` (the split `gather_strided` undoes)."""
    rank, world = rank_world()
    return range(rank, n, world)


def gather_strided(local: torch.Tensor, n: int) -> torch.Tensor:
    """Every rank's `local` rows (rank r holds items r, r+world, ...) back as all `n` rows in order, on
    every rank and on `local`'s device."""
    rank, world = rank_world()
    if world == 1:
        return local
    per = -(-n // world)  # ceil: ranks hold per or per-1 rows
    dev = collective_device()
    padded = torch.zeros((per, *local.shape[1:]), dtype=local.dtype, device=dev)
    padded[: len(local)] = local.to(dev)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    out = torch.stack(parts, 1).flatten(0, 1)[:n]  # row per*r + i of rank r is item i*world + r
    return out.to(local.device)


def gather_objects(local: list) -> list:
    """Concatenation, in rank order, of every rank's `local` list (picklable items), on every rank."""
    _, world = rank_world()
    if world == 1:
        return list(local)
    parts: list = [None] * world
    dist.all_gather_object(parts, local)
    return [x for part in parts for x in part]


__all__ = [
    "init_distributed",
    "all_agree",
    "all_reduce_",
    "collective_device",
    "gather_objects",
    "gather_strided",
    "is_main",
    "my_share",
    "rank_world",
    "sum_int",
]
