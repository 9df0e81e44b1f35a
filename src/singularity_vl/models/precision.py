"""Mixed precision chosen by what the hardware runs natively.

bf16 autocast is the fast path on CPUs with AMX or AVX512-BF16 and on CUDA; on other CPUs (AVX2-only,
e.g. AMD Zen 3) PyTorch's bf16 matmul falls back to a scalar kernel ~100x slower than fp32, so `auto`
keeps fp32 there.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

Precision = Literal["auto", "fp32", "bf16", "fp16"]


def cpu_has_native_bf16() -> bool:
    """True when this CPU has AMX tiles or AVX512-BF16 (oneDNN's fast bf16 GEMMs)."""
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def resolve_precision(precision: Precision, device: torch.device | str) -> Literal["fp32", "bf16", "fp16"]:
    """`auto` -> bf16 where native (CUDA with bf16 support, AMX/AVX512-BF16 CPUs), else fp32."""
    device = torch.device(device)
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def autocast(
    precision: Precision, device: torch.device | str, cache_enabled: bool = True
) -> contextlib.AbstractContextManager:
    """The autocast context for `precision` on `device` (a no-op for fp32). With activation checkpointing
    pass `cache_enabled=False`: cached weight casts are not replayed when a checkpointed block recomputes."""
    device = torch.device(device)
    resolved = resolve_precision(precision, device)
    if resolved == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if resolved == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype, cache_enabled=cache_enabled)
