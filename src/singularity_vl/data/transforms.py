"""Pixel transforms of the release without torchvision (whose PyPI build does not import beside the CPU
torch used here): random resized crop (scale 0.5-1, bicubic) with one crop per clip, horizontal flip,
test-time squash to res x res (bicubic, no antialias as torchvision 0.11), BEiT normalisation."""

from __future__ import annotations

import math
import random
import re

import numpy as np
import torch
import torch.nn.functional as F

BEIT_MEAN = (0.5, 0.5, 0.5)
BEIT_STD = (0.5, 0.5, 0.5)
_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.IGNORECASE)


def to_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> uint8 (T, 3, H, W)."""
    t = torch.as_tensor(frames)
    return t.permute(0, 3, 1, 2).contiguous()


def resize(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (T, 3, H, W) -> uint8 (T, 3, h, w), bicubic without antialias, rounded and clamped
    (torchvision's behaviour on uint8 tensors)."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    out = F.interpolate(frames.float(), size=size, mode="bicubic", align_corners=False, antialias=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def random_resized_crop_params(
    height: int, width: int, rng: random.Random, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
    """(top, left, h, w) as torchvision's RandomResizedCrop.get_params, drawn from `rng`."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height  # fallback: central crop
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def normalize(frames: torch.Tensor, mean=BEIT_MEAN, std=BEIT_STD) -> torch.Tensor:
    """uint8 (T, 3, H, W) -> float (T, 3, H, W): /255, then (x - mean) / std."""
    x = frames.float().div(255.0)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s


def swap_left_right(text: str) -> str:
    """'left' <-> 'right' (keeping case), so a caption stays true for a horizontally flipped clip."""

    def repl(m: re.Match) -> str:
        word = m.group(0)
        new = "right" if word.lower() == "left" else "left"
        return new.capitalize() if word[0].isupper() else new

    return _LEFT_RIGHT.sub(repl, text)


class TrainTransform:
    """Random resized crop (same for all frames of a clip), optional horizontal flip, normalise.

    `flip`: "off" (default; direction-sensitive data), "on" (the release: flips with p=0.5, captions
    untouched), "swap" (flips and swaps left/right in the caption so it stays true)."""

    def __init__(self, image_size: int, scale=(0.5, 1.0), flip: str = "off") -> None:
        if flip not in ("off", "on", "swap"):
            raise ValueError(f"flip must be off, on or swap, got {flip!r}")
        self.image_size = image_size
        self.scale = scale
        self.flip = flip

    def __call__(self, frames: np.ndarray, caption: str | None, rng: random.Random) -> tuple[torch.Tensor, str | None]:
        clip = to_tensor(frames)
        top, left, h, w = random_resized_crop_params(clip.shape[-2], clip.shape[-1], rng, self.scale)
        clip = resize(clip[..., top : top + h, left : left + w], (self.image_size, self.image_size))
        if self.flip != "off" and rng.random() < 0.5:
            clip = clip.flip(-1)
            if self.flip == "swap" and caption is not None:
                caption = swap_left_right(caption)
        return normalize(clip), caption


class EvalTransform:
    """Squash to res x res (bicubic), normalise."""

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        return normalize(resize(to_tensor(frames), (self.image_size, self.image_size)))
