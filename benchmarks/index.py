"""Videos/s of `singularity-vl index` (`build_index`, what the command runs) at `base` size, 8 frames per
video, over a folder of generated 720p clips, against encode-only (the same model encoding the same
clips, frames already decoded and transformed) in the same run. Encoding precision as the indexer picks
it: bf16 on GPUs and on CPUs that have it natively (AMX or AVX512-BF16), else fp32. Random weights (speed
does not depend on them).

Rates are steady-state: videos encoded after the first batch (of 8) over the time from the end of the
first batch to the end of the last; the index run's model loading, worker start-up and first batch are
reported apart (`index_startup_s`). The index run covers `--videos` files (at least 3 batches, so the
decoding the workers did ahead during the first batch is a small part of the timed span); encode-only
(2 batches, the first untimed) runs before and after it, and its rate is the mean of the two, so a drift
in machine speed hits both sides alike.

    python benchmarks/index.py [--videos 24] [--workers N] [--device cpu] [--json FILE] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from decode import machine
from singularity_vl.data.transforms import EvalTransform
from singularity_vl.data.video_writer import write_video
from singularity_vl.devices import resolve_device
from singularity_vl.models.config import base_config
from singularity_vl.models.precision import model_width, resolve_precision
from singularity_vl.models.singularity import SingularityBase, create_model
from singularity_vl.search import index as indexer

NUM_FRAMES, BATCH = 8, 8


def make_videos(folder: Path, count: int, seconds: float = 4.0) -> list[Path]:
    """`count` 1280x720 30 fps H.264 clips (keyframe every 30 frames, B-frames): a textured background
    panning under a moving block, different per clip."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"clip{i:03d}.mp4"
        paths.append(path)
        if path.is_file():
            continue
        rng = np.random.default_rng(i)
        coarse = rng.integers(0, 255, (720 // 16 + 1, 1280 // 16 + 40, 3)).astype(np.uint8)
        texture = np.kron(coarse, np.ones((16, 16, 1), np.uint8))

        def frames(texture=texture, rng=rng):
            for f in range(int(seconds * 30)):
                img = texture[:720, 2 * f : 2 * f + 1280].copy()
                x = (f * 9) % 1100
                img[260:460, x : x + 180] = rng.integers(0, 255, 3)
                yield img

        write_video(path, frames(), fps=30, gop=30, bframes=2, crf=26)
    return paths


def base_model(directory: Path) -> Path:
    """A random-weight `base` retrieval model saved as the indexer loads models."""
    if not (directory / "model.safetensors").is_file():
        torch.manual_seed(0)
        create_model(base_config("retrieval")).save_pretrained(directory)
    return directory


def encode_only(model: SingularityBase, clips: list[torch.Tensor]) -> float:
    """Steady-state videos/s of the indexer's encoding step alone, batches of BATCH, the first untimed."""
    batches = [clips[i : i + BATCH] for i in range(0, len(clips), BATCH)]
    indexer._encode(model, batches[0])
    start = time.perf_counter()
    for batch in batches[1:]:
        indexer._encode(model, batch)
    return sum(len(b) for b in batches[1:]) / (time.perf_counter() - start)


def index_run(videos: Path, model_dir: Path, out: Path, workers: int | None, device: str) -> tuple[float, float]:
    """(steady-state videos/s, seconds until the first batch was encoded) of one fresh `build_index` run."""
    shutil.rmtree(out, ignore_errors=True)
    ends: list[tuple[float, int]] = []
    original = indexer._encode

    def timed(model, clips):
        result = original(model, clips)
        ends.append((time.perf_counter(), len(clips)))
        return result

    indexer._encode = timed
    try:
        start = time.perf_counter()
        summary = indexer.build_index(
            videos, model_dir, out, num_frames=NUM_FRAMES, batch_size=BATCH, workers=workers, device=device
        )
    finally:
        indexer._encode = original
    assert not summary.failed, summary.text()
    done = sum(n for _, n in ends[1:])
    return done / (ends[-1][0] - ends[0][0]), ends[0][0] - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: the indexer's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    parser.add_argument("--workdir", default=None, help="where clips and the model are kept (default: a temp dir)")
    args = parser.parse_args()
    if args.videos < 3 * BATCH:
        parser.error(f"--videos must be at least {3 * BATCH} (one untimed batch, then timed ones)")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="index-bench-"))
    videos = workdir / "videos"
    paths = make_videos(videos, args.videos)
    model_dir = base_model(workdir / "model")
    device = resolve_device(args.device)
    model = SingularityBase.from_pretrained(model_dir, device=device).eval()
    precision = resolve_precision("auto", device, model_width(model))
    loader = indexer._FileLoader(videos, [p.name for p in paths], NUM_FRAMES, EvalTransform(224))
    clips = [loader[i][1] for i in range(2 * BATCH)]
    load_before = os.getloadavg()
    encode_before = encode_only(model, clips)
    workers = indexer.default_workers() if args.workers is None else args.workers
    rate, startup = index_run(videos, model_dir, workdir / "index", workers, str(device))
    encode_after = encode_only(model, clips)
    encode_rate = (encode_before + encode_after) / 2
    results = {
        "videos_per_s": round(rate, 3),
        "encode_only_videos_per_s": round(encode_rate, 3),
        "ratio_vs_encode_only": round(rate / encode_rate, 3),
        "encode_only_before_after": [round(encode_before, 3), round(encode_after, 3)],
        "index_startup_s": round(startup, 2),
        "videos": args.videos,
        "clip": "1280x720, 30 fps, 4 s, H.264 GOP 30 with B-frames",
        "size": "base",
        "frames": NUM_FRAMES,
        "batch": BATCH,
        "precision": precision,
        "device": str(device),
        "workers": workers,
        "torch_threads": torch.get_num_threads(),
        "machine": machine(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"{'path':28} {'videos/s':>9}")
    print(f"{'encode only (frames ready)':28} {encode_rate:>9.3f}")
    print(f"{'index (decode + encode)':28} {rate:>9.3f}   {rate / encode_rate:.2f}x encode-only")
    print(json.dumps(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
