"""Which frames to read: the release's `get_frame_indices`, as a pure function.

Modes: `rand` (training: a random frame from each of N equal segments), `middle` (testing: the middle
frame of each segment), `uniform` (N frames evenly spaced from first to last, ours), `fpsX` (frames at X
per second, e.g. `fps0.5`). Fewer frames than N: padded with the last index.
"""

from __future__ import annotations

import random

import numpy as np


def _segments(num_frames: int, vlen: int) -> list[tuple[int, int]]:
    """N equal segments as (start, next_start - 1), exactly as the release builds them."""
    bounds = np.linspace(start=0, stop=vlen, num=num_frames + 1).astype(int)
    return [(int(bounds[i]), int(bounds[i + 1]) - 1) for i in range(num_frames)]


def sample_frame_indices(
    num_frames: int,
    vlen: int,
    mode: str = "rand",
    rng: random.Random | None = None,
    fps: float | None = None,
    max_num_frames: int = -1,
) -> list[int]:
    """Frame indices (sorted, within [0, vlen)) for a video of `vlen` frames.

    `rand` reproduces two release quirks on purpose: the last frame of a segment is never drawn
    (`random.choice(range(start, next_start - 1))`), and if any segment holds a single frame the whole
    draw becomes a random sorted subset of all frames. `fps` is the video's frame rate (for `fpsX`).
    """
    if vlen < 1:
        raise ValueError(f"a video needs at least one frame, got vlen={vlen}")
    if num_frames < 1 and not mode.startswith("fps"):
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    rng = rng or random.Random()
    if mode in ("rand", "middle"):
        n = min(num_frames, vlen)
        segments = _segments(n, vlen)
        if mode == "rand":
            try:
                indices = [rng.choice(range(start, end)) for start, end in segments]
            except IndexError:  # a 1-frame segment: range(start, start) is empty (release fallback)
                indices = sorted(rng.sample(range(vlen), n))
        else:
            indices = [(start + end) // 2 for start, end in segments]
    elif mode == "uniform":
        n = min(num_frames, vlen)
        indices = sorted({int(round(x)) for x in np.linspace(0, vlen - 1, n)})
    elif mode.startswith("fps"):
        try:
            output_fps = float(mode[3:])
        except ValueError as e:
            raise ValueError(f"bad sampling mode {mode!r}: expected e.g. 'fps0.5'") from e
        if fps is None or fps <= 0:
            raise ValueError(f"sampling mode {mode!r} needs the video's fps")
        duration = vlen / fps
        delta = 1 / output_fps  # each frame represents a clip of this length; take its middle
        seconds = np.arange(delta / 2, duration + delta / 2, delta)
        indices = [int(i) for i in np.around(seconds * fps).astype(int) if i < vlen]
        if max_num_frames > 0:
            indices = indices[:max_num_frames]
        return indices or [0]
    else:
        raise ValueError(f"unknown sampling mode {mode!r}: use rand, middle, uniform or fpsX")
    if len(indices) < num_frames:  # short video: pad with the last frame
        indices = indices + [indices[-1]] * (num_frames - len(indices))
    return indices
