"""Write videos with PyAV (test clips, the synthetic corpus, re-compressed datasets)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


@functools.cache
def _x264_params() -> str | None:
    """x264 options that keep its output the same from run to run: on CPUs with AVX-512, x264's AVX-512
    code sometimes encodes the same frames differently (measured: ~1 in 50 small clips, depending on
    what the process's memory held before), so it is held to its AVX2 code (every AVX-512 CPU has AVX2)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return None
    return "asm=AVX2" if "avx512f" in flags else None


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float = 30,
    codec: str = "libx264",
    gop: int = 30,
    bframes: int = 0,
    pix_fmt: str | None = None,
    crf: int = 23,
    timestamps: list[float] | None = None,
) -> Path:
    """Encode uint8 RGB frames (H, W, 3), streamed, to `path` atomically (temporary name, then rename).

    `gop` is the keyframe interval; `timestamps` (seconds, increasing) gives variable-frame-rate output.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".part" + path.suffix)
    frames = iter(frames)
    first = next(frames)
    height, width = first.shape[:2]
    rate = Fraction(fps).limit_denominator(1001)
    options = {"g": str(gop), "keyint_min": str(gop)} if codec == "libx264" else {"g": str(gop)}
    if codec == "libx264":
        options.update({"crf": str(crf), "bf": str(bframes), "sc_threshold": "0", "preset": "veryfast"})
        params = _x264_params()
        if params:
            options["x264-params"] = params
    fmt = "webm" if path.suffix == ".webm" else None
    with av.open(str(tmp), mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height = width, height
        stream.pix_fmt = pix_fmt or ("yuv444p" if (width % 2 or height % 2) else "yuv420p")
        if timestamps is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, rgb in enumerate(itertools.chain([first], frames)):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if timestamps is not None:
                frame.pts = int(round(timestamps[i] * 1000))
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)
    return path


def even_size(width: int, height: int, shorter: int) -> tuple[int, int]:
    """(w, h) with the shorter side `shorter` (never upscaled), aspect kept, both even (yuv420p)."""
    scale = min(1.0, shorter / min(width, height))
    w = max(2, int(round(width * scale / 2)) * 2)
    h = max(2, int(round(height * scale / 2)) * 2)
    return w, h


def moving_square_frames(n: int, height: int = 72, width: int = 96, seed: int = 0) -> list[np.ndarray]:
    """A textured background with a square that moves and changes colour every frame (every frame differs)."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    frames = []
    size = max(4, min(height, width) // 4)
    for i in range(n):
        img = background.copy()
        x = (i * 3) % max(1, width - size)
        y = (i * 2) % max(1, height - size)
        img[y : y + size, x : x + size] = ((i * 37) % 256, (i * 91) % 256, (255 - i * 13) % 256)
        frames.append(img)
    return frames
