"""Release-format clips for the benchmarks: generated 30 s sources (a panning textured background with a
moving block and faint sensor noise, landscape and portrait) passed through `prepare-videos --fps 2
--size 224` (the same function the command runs), i.e. 60 frames, 224 px on the shorter side, H.264 with
a keyframe every 2 s: the files training and evaluation actually read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from singularity_vl.data.prepare_videos import prepare_videos
from singularity_vl.data.video_writer import write_video

SOURCE_SECONDS, SOURCE_FPS = 30, 10
SOURCE_SIZES = ((480, 270), (270, 480))  # (width, height): landscape and portrait


def _source_frames(width: int, height: int, seed: int):
    """SOURCE_SECONDS of smooth texture panning sideways, a block crossing it, Gaussian noise (sigma 1)."""
    rng = np.random.default_rng(seed)
    frames = SOURCE_SECONDS * SOURCE_FPS
    coarse = rng.integers(0, 255, (height // 8 + 1, (width + 3 * frames) // 8 + 1, 3)).astype(np.float32)
    texture = np.kron(coarse, np.ones((8, 8, 1), np.float32))
    for _ in range(4):  # blur the blocks into a smooth texture
        texture = (texture + np.roll(texture, 1, 0) + np.roll(texture, -1, 0) + np.roll(texture, 1, 1)) / 4
    block = max(16, min(width, height) // 5)
    colour = rng.integers(0, 255, 3)
    for i in range(frames):
        img = texture[:height, 3 * i : 3 * i + width].copy()
        x = (i * 4) % (width - block)
        y = (height - block) // 2
        img[y : y + block, x : x + block] = colour
        img += rng.normal(0, 1, img.shape).astype(np.float32)
        yield np.clip(img, 0, 255).astype(np.uint8)


def release_format_clips(workdir: Path, count: int) -> list[Path]:
    """`count` prepared clips under `workdir/prepared` (kept between runs), sources alternating landscape
    and portrait."""
    sources, prepared = workdir / "sources", workdir / "prepared"
    sources.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = sources / f"clip{i:03d}.mp4"
        if not path.is_file():
            width, height = SOURCE_SIZES[i % len(SOURCE_SIZES)]
            write_video(path, _source_frames(width, height, seed=i), fps=SOURCE_FPS, gop=250, bframes=2)
    summary = prepare_videos(sources, prepared, fps=2, size=224, workers=1, progress=False)
    if summary.failed:
        raise RuntimeError(f"prepare-videos failed: {summary.failed}")
    return [prepared / f"clip{i:03d}.mp4" for i in range(count)]
