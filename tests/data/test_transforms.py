"""Pixel transforms: shapes, value range, one crop per clip, flip with caption swap."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from singularity_vl.data.transforms import (
    EvalTransform,
    TrainTransform,
    normalize,
    random_resized_crop_params,
    resize,
    swap_left_right,
    to_tensor,
)


def _clip(t=3, h=60, w=80):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return np.stack([base] * t)  # identical frames: a shared crop keeps them identical


def test_test_transform_shape_and_range():
    out = EvalTransform(32)(_clip())
    assert out.shape == (3, 3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1


def _bicubic_1d(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of bicubic convolution (Keys, a = -0.75), half-pixel centres, edge samples
    repeated, no antialias: written out from the definition."""
    a = -0.75

    def kernel(x: float) -> float:
        x = abs(x)
        if x <= 1:
            return (a + 2) * x**3 - (a + 3) * x**2 + 1
        return a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a if x < 2 else 0.0

    w = np.zeros((n_out, n_in))
    for o in range(n_out):
        src = (o + 0.5) * n_in / n_out - 0.5
        i0 = int(np.floor(src))
        for i in range(i0 - 1, i0 + 3):
            w[o, min(max(i, 0), n_in - 1)] += kernel(src - i)
    return w


@pytest.mark.parametrize("size", [(16, 24), (5, 7), (8, 8)], ids=["up", "down", "same"])
def test_resize_matches_bicubic_on_uint8(size):
    x = to_tensor(_clip(2, 8, 12))
    y = resize(x, size)
    assert y.dtype == torch.uint8 and y.shape == (2, 3, *size)
    wh, ww = _bicubic_1d(8, size[0]), _bicubic_1d(12, size[1])
    expected = np.einsum("oh,tchw,pw->tcop", wh, x.numpy().astype(np.float64), ww)
    expected = np.clip(np.round(expected), 0, 255)
    diff = np.abs(y.numpy().astype(np.int16) - expected)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99  # 1 at most where float32 rounds a .5 the other way


def test_train_crop_is_shared_by_all_frames():
    tr = TrainTransform(24, flip="on")
    out, caption = tr(_clip(4), "a cat", random.Random(3))
    assert out.shape == (4, 3, 24, 24)
    for t in range(1, 4):
        assert torch.equal(out[0], out[t])
    assert caption == "a cat"


def test_crop_params_within_bounds_and_scale():
    rng = random.Random(0)
    for _ in range(200):
        top, left, h, w = random_resized_crop_params(60, 80, rng)
        assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 80
        assert h * w >= 0.5 * 60 * 80 * 0.9


def test_flip_swaps_direction_words():
    assert swap_left_right("moves from Left to right, leftover") == "moves from Right to left, leftover"
    frames = _clip(1)
    frames[..., :40, :] = 0  # left half dark
    tr = TrainTransform(16, scale=(1.0, 1.0), flip="swap")
    seen = set()
    for seed in range(20):
        out, caption = tr(frames, "a ball moves left", random.Random(seed))
        flipped = out[0, 0, :, :8].mean() > out[0, 0, :, 8:].mean()
        assert caption == ("a ball moves right" if flipped else "a ball moves left")
        seen.add(bool(flipped))
    assert seen == {True, False}
    assert TrainTransform(16, flip="off")(frames, "left", random.Random(0))[1] == "left"
    with pytest.raises(ValueError, match="flip"):
        TrainTransform(16, flip="maybe")


def test_normalize_beit():
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    assert normalize(x).flatten().tolist() == [-1.0, 1.0, -1.0, 1.0, -1.0, 1.0]
