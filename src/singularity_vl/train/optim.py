"""The release's optimisation recipe: AdamW without weight decay on biases and 1-D parameters (norms),
an optional larger learning rate for named new modules, cosine schedule with linear warm-up to
`lr * min_lr_multi`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    different_lr_names: Sequence[str] = (),
    different_lr: float | None = None,
) -> list[dict]:
    """Parameter groups by (weight decay, lr). Biases and 1-D tensors get no decay; the 0-d temperature
    does get it, as in the release (`len(param.shape) == 1` excludes only 1-D tensors)."""
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        wd = 0.0 if (p.ndim == 1 or name.endswith(".bias")) else weight_decay
        use_diff = different_lr is not None and any(n in name for n in different_lr_names)
        groups.setdefault((wd, different_lr if use_diff else lr), []).append(p)
    return [{"params": ps, "weight_decay": wd, "lr": group_lr} for (wd, group_lr), ps in groups.items()]


def create_optimizer(
    model: nn.Module,
    lr: float = 1e-4,
    weight_decay: float = 0.02,
    betas: tuple[float, float] = (0.9, 0.999),
    different_lr_names: Sequence[str] = (),
    different_lr: float | None = None,
) -> torch.optim.AdamW:
    groups = param_groups(model, lr, weight_decay, different_lr_names, different_lr)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, weight_decay=weight_decay)


def cosine_lambda(num_warmup_steps: int, num_training_steps: int, min_lr_multi: float = 0.0):
    """The release's multiplier: linear warm-up, then half a cosine, never below `min_lr_multi`. Past the
    last step it stays at the floor (the release's formula would climb back up; runs never go there)."""

    def fn(step: int) -> float:
        if step < num_warmup_steps:
            return max(min_lr_multi, step / max(1, num_warmup_steps))
        progress = min(1.0, (step - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps))
        return max(min_lr_multi, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return fn


def create_scheduler(
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    epochs: float,
    warmup_epochs: float = 0.0,
    min_lr_multi: float = 0.01,
) -> LambdaLR:
    """Cosine schedule over `epochs` (warm-up in possibly fractional epochs), stepped once per optimizer step."""
    total = int(math.ceil(steps_per_epoch * epochs))
    warmup = int(steps_per_epoch * warmup_epochs)
    return LambdaLR(optimizer, cosine_lambda(warmup, total, min_lr_multi))
