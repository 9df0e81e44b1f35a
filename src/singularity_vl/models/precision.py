"""Mixed precision chosen by what the hardware runs natively.

bf16 autocast is the fast path on CPUs with AMX or AVX512-BF16 and on CUDA; on other CPUs (AVX2-only,
e.g. AMD Zen 3) PyTorch's bf16 matmul falls back to a scalar kernel ~100x slower than fp32, so `auto`
keeps fp32 there. On AMX CPUs very narrow models are faster in fp32 too: their GEMMs are too small to pay
for autocast's casts (measured on a 2-core Sapphire Rapids VM: `tiny`, width 64, 1.6-2.0x slower in bf16;
the demo's model, width 384, about even: whole demo 468 and 553 s in bf16, 556 s in fp32; `base`, 768,
steps 1.8-2.1x faster in bf16), so `auto` given the model's width picks bf16 on CPU only from
`CPU_BF16_MIN_WIDTH` up.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

import torch

Precision = Literal["auto", "fp32", "bf16", "fp16"]
CPU_BF16_MIN_WIDTH = 256  # narrowest hidden size for which `auto` picks bf16 on CPU (see above)


def cpu_has_native_bf16() -> bool:
    """True when this CPU has AMX tiles or AVX512-BF16 (oneDNN's fast bf16 GEMMs)."""
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def model_width(model: Any) -> int:
    """The widest hidden size (vision or text) of a Singularity model or config: what decides `auto` on CPU."""
    config = getattr(model, "config", model)
    return max(config.vision.hidden_size, config.text.hidden_size)


def resolve_precision(
    precision: Precision, device: torch.device | str, width: int | None = None
) -> Literal["fp32", "bf16", "fp16"]:
    """`auto` -> bf16 where native (CUDA with bf16 support, AMX/AVX512-BF16 CPUs), else fp32; on CPU also
    fp32 for a model narrower than `CPU_BF16_MIN_WIDTH` when its `width` (`model_width`) is given."""
    device = torch.device(device)
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if width is not None and width < CPU_BF16_MIN_WIDTH:
        return "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def autocast(
    precision: Precision, device: torch.device | str, cache_enabled: bool = True, width: int | None = None
) -> contextlib.AbstractContextManager:
    """The autocast context for `precision` on `device` (a no-op for fp32; `width` as `resolve_precision`).
    With activation checkpointing pass `cache_enabled=False`: cached weight casts are not replayed when a
    checkpointed block recomputes."""
    device = torch.device(device)
    resolved = resolve_precision(precision, device, width)
    if resolved == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if resolved == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype, cache_enabled=cache_enabled)
