"""Where computation runs: the default device, moving batches there, and data-loader workers sized from
the machine. Every entry point (train, evaluate, index, search, serve, demo, `sv.load`) goes through here."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch


def default_device() -> torch.device:
    """`cuda` when a GPU is visible, else `cpu`."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """A torch device from `device` (`None` or `"auto"`: `default_device()`); a CUDA device that is not
    there is a clear error, not a crash deep inside the first kernel."""
    if device is None or (isinstance(device, str) and device in ("", "auto")):
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device: {device!r} is not a device (cpu, cuda, cuda:1, ...)") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} requested, but no CUDA GPU is visible (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device: {device!r} requested, but only {torch.cuda.device_count()} GPU(s) are visible")
    return dev


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's parameters (its first one; our models live on one device)."""
    return next(model.parameters()).device


def to_device(batch: Any, device: torch.device | str) -> Any:
    """`batch` with every tensor (in dicts, lists, tuples) on `device`; other values as they are.
    Copies from pinned memory to a GPU are asynchronous."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: what a container or `taskset` grants)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def auto_num_workers(device: torch.device | str, requested: int | str = "auto") -> int:
    """Data-loader worker processes: `requested` as given, or for `auto` the CPUs each local process
    (`LOCAL_WORLD_SIZE` under torchrun) may use: on a GPU all but one of them, up to 16, so decoding keeps
    up with the accelerator; on the CPU, where workers compete with the model for the same cores, a
    quarter of them, up to 4 (none on a 2-core machine)."""
    if requested != "auto":
        try:
            n = int(requested)
        except (TypeError, ValueError) as e:
            raise ValueError(f"num_workers must be 'auto' or an integer >= 0, got {requested!r}") from e
        if n < 0:
            raise ValueError(f"num_workers must be 'auto' or an integer >= 0, got {requested!r}")
        return n
    per_process = max(1, available_cpus() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    if torch.device(device).type == "cuda":
        return min(16, max(1, per_process - 1))
    return min(4, per_process // 4)
