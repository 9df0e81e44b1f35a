"""Frames come out as a player shows them: display rotation (and mirroring) and non-square sample aspect
ratios are applied by the reader (every decode path), by `prepare-videos` and for images (EXIF)."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from singularity_vl.cli import main
from singularity_vl.data.video_reader import (
    read_clip,
    read_frames,
    sample_aspect_ratio,
    set_decoded_clip_cache,
    video_index,
)

H, W = 32, 48  # stored size of the test pictures
COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], dtype=np.uint8)


def quadrants() -> np.ndarray:
    """Stored picture: red top-left, green top-right, blue bottom-left, white bottom-right."""
    img = np.zeros((H, W, 3), np.uint8)
    img[: H // 2, : W // 2] = COLOURS[0]
    img[: H // 2, W // 2 :] = COLOURS[1]
    img[H // 2 :, : W // 2] = COLOURS[2]
    img[H // 2 :, W // 2 :] = COLOURS[3]
    return img


def write_tagged(
    path: Path, rotation: int = 0, hflip: bool = False, sar: Fraction | None = None, n: int = 12, codec="libx264"
) -> Path:
    """A clip of `quadrants()` whose container says: turn `rotation` degrees counter-clockwise, then mirror
    left-right if `hflip`, and show each stored pixel `sar` times as wide as high."""
    with av.open(str(path), "w") as container:
        options = {"g": "4", "crf": "8"} if codec == "libx264" else {"g": "4"}
        stream = container.add_stream(codec, rate=10, options=options)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv444p" if codec == "libx264" else "yuv420p"
        if sar is not None:
            stream.codec_context.sample_aspect_ratio = sar
        if rotation or hflip:
            stream.set_display_rotation(rotation, hflip=hflip)
        for _ in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(quadrants(), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def shown(rotation: int, hflip: bool, sar: Fraction = Fraction(1)) -> np.ndarray:
    """What a player shows, built with numpy only: stretch by the sample aspect ratio, turn, mirror."""
    img = quadrants()
    wide = img[:, (np.arange(round(W * sar)) / sar).astype(int)]
    img = np.rot90(wide, k=rotation // 90)  # counter-clockwise
    return np.fliplr(img) if hflip else img


def assert_looks_like(got: np.ndarray, want: np.ndarray) -> None:
    """Same size and the same colour in each of a 4x4 grid of cells (robust to compression at edges)."""
    assert got.shape == want.shape, (got.shape, want.shape)
    h, w = want.shape[:2]
    for i in range(4):
        for j in range(4):
            y, x = (2 * i + 1) * h // 8, (2 * j + 1) * w // 8
            assert np.abs(got[y, x].astype(int) - want[y, x].astype(int)).max() < 40, (i, j, got[y, x], want[y, x])


CASES = [(0, False, None), (90, False, None), (180, False, None), (-90, False, None), (90, True, None)]
CASES += [(0, False, Fraction(2)), (90, False, Fraction(2)), (-90, True, Fraction(1, 2))]


@pytest.mark.parametrize(("rotation", "hflip", "sar"), CASES)
def test_reader_shows_rotation_and_aspect(tmp_path, rotation, hflip, sar):
    path = write_tagged(tmp_path / "phone.mp4", rotation, hflip, sar)
    want = shown(rotation, hflip, sar or Fraction(1))
    # the seeking path (thumbnails of the search server read this way), the sequential path (read_clip on a
    # short mp4) and the whole-file cache each return the frames as shown
    for frame in read_frames(path, [0, 7, 3]):
        assert_looks_like(frame, want)
    clip = read_clip(path, 3, "rand", random.Random(0))
    for frame in clip.frames:
        assert_looks_like(frame, want)
    set_decoded_clip_cache(16)
    try:
        for frame in read_clip(path, 2, "middle").frames:
            assert_looks_like(frame, want)
    finally:
        set_decoded_clip_cache(0)


# (PyAV does not write a sample aspect ratio into webm; VP9 streams carry none of their own)
@pytest.mark.parametrize(("suffix", "codec", "sar"), [(".mkv", "libx264", Fraction(2)), (".webm", "libvpx-vp9", None)])
def test_other_containers_carry_the_rotation(tmp_path, suffix, codec, sar):
    path = write_tagged(tmp_path / f"clip{suffix}", 90, False, sar, n=4, codec=codec)
    assert_looks_like(read_frames(path, [1])[0], shown(90, False, sar or Fraction(1)))


def test_rotate_tag_without_display_matrix(tmp_path):
    """Older tools wrote a `rotate` tag (degrees clockwise) instead of a display matrix."""
    path = tmp_path / "tagged.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10, options={"crf": "8"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv444p"
        stream.metadata["rotate"] = "90"
        for packet in [*stream.encode(av.VideoFrame.from_ndarray(quadrants(), format="rgb24")), *stream.encode()]:
            container.mux(packet)
    assert_looks_like(read_frames(path, [0])[0], shown(-90, False))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_images_follow_exif_orientation(tmp_path, orientation):
    """Every EXIF orientation, checked against Pillow's own `exif_transpose`."""
    from PIL import Image, ImageOps

    path = tmp_path / f"o{orientation}.jpg"
    img = Image.fromarray(quadrants())
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, exif=exif, quality=95)
    want = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert_looks_like(read_frames(path, [0])[0], want)


def test_prepare_videos_writes_upright_square_pixels(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    write_tagged(src / "portrait.mp4", 90, False, Fraction(2), n=20)  # shown 32 x 96 (w x h)
    dst = tmp_path / "dst"
    assert main(["prepare-videos", str(src), str(dst), "--fps", "5", "--size", "16", "--workers", "1"]) == 0
    out = dst / "portrait.mp4"
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (16, 48)  # shorter side 16, the shown aspect 1:3 kept
        assert sample_aspect_ratio(stream) == 1
        first = next(container.decode(stream))
        assert first.rotation == 0  # nothing left for a player to turn
    assert video_index(out).num_frames == 10  # 2 s at 5 fps
    small = shown(90, False, Fraction(2))[::2, ::2]  # 48 x 16, the same picture
    assert_looks_like(read_frames(out, [0])[0], small)


class _StoredFramesDecord:
    """Stands in for decord (not installed here): returns frames as stored, as decord does."""

    class DECORDError(RuntimeError):
        pass

    class VideoReader:
        def __init__(self, path: str, num_threads: int = 1) -> None:
            with av.open(path) as container:
                self.frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])

        def __len__(self) -> int:
            return len(self.frames)

        def get_avg_fps(self) -> float:
            return 10.0

        def get_batch(self, idx):
            frames = self.frames[idx]
            return type("Batch", (), {"asnumpy": lambda self: frames})()


def test_decord_frames_are_shown_like_pyav_frames(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "decord", _StoredFramesDecord)
    path = write_tagged(tmp_path / "phone.mp4", 90, True, Fraction(2))
    want = shown(90, True, Fraction(2))
    clip = read_clip(path, 3, "middle", backend="decord")
    pyav = read_clip(path, 3, "middle")
    assert clip.indices == pyav.indices
    for frame in clip.frames:
        assert_looks_like(frame, want)
    assert np.abs(clip.frames.astype(int) - pyav.frames.astype(int)).mean() < 3  # resized in RGB, not YUV
