"""Pre-training throughput with real decoding: samples/s of the training step fed by the trainer's own
data loader (mp4 decode, random crop, normalise, collate in worker processes) against the same step on
one batch already on the device (the model alone), in the same run. The ratio says whether decoding
keeps up with the accelerator.

Default: `base`, 224 px, 1 frame, batch 128, bf16 on a GPU (the paper's pre-training step); the clips are
release-format (2 fps, 224 px short side, 30 s), generated. On a CPU use e.g. `--size tiny --batch 8`.

    python benchmarks/train_pipeline.py [--device cuda] [--size base] [--batch 128] [--steps 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import torch

from singularity_vl.data.video_writer import moving_square_frames, write_video
from singularity_vl.devices import available_cpus, resolve_device, to_device
from singularity_vl.train.config import load_train_config
from singularity_vl.train.loop import Trainer

CLIP_FRAMES, CLIP_FPS = 60, 2  # a 30 s clip after `prepare-videos --fps 2 --size 224`


def _write_clip(args: tuple[Path, int]) -> None:
    path, seed = args
    write_video(path, moving_square_frames(CLIP_FRAMES, 224, 298, seed=seed), fps=CLIP_FPS, gop=CLIP_FRAMES)


def make_corpus(root: Path, clips: int, entries: int) -> Path:
    """`clips` generated videos, listed round-robin as `entries` caption annotations."""
    with Pool(max(1, available_cpus())) as pool:
        pool.map(_write_clip, [(root / f"clip{i:04d}.mp4", i) for i in range(clips)])
    anno = [
        {"video": f"clip{i % clips:04d}.mp4", "caption": f"a red square moves across clip {i}"} for i in range(entries)
    ]
    (root / "train.json").write_text(json.dumps(anno))
    return root / "train.json"


def _timed_steps(trainer: Trainer, batches, warmup: int, steps: int) -> float:
    """Samples/s over `steps` training steps after `warmup` (each step's batch from `batches`)."""
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    trainer.ddp.train()
    start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            sync()
            start = time.perf_counter()
        trainer._forward_backward(next(batches), "video", 1)
        trainer._optimizer_step()
    sync()
    return steps * trainer.cfg.batch_size["video"] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", default="base", choices=["tiny", "base"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--num-workers", default="auto")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        anno = make_corpus(Path(tmp), args.clips, args.batch * (args.warmup + args.steps + 2))
        corpus_s = time.time() - t0
        cfg = load_train_config(
            None,
            [
                "task=pretrain",
                f"train_file=[[{anno},{tmp},video]]",
                f"output_dir={tmp}/run",
                f"model={args.size}",
                "from_scratch=true",
                f"batch_size.video={args.batch}",
                "num_frames=1",
                f"precision={args.precision}",
                f"device={device}",
                f"num_workers={args.num_workers}",
                "resume=",
            ],
        )
        trainer = Trainer(cfg)
        trainer.out.mkdir(parents=True, exist_ok=True)
        trainer.samplers["video"].set_epoch(0)
        loader = iter(trainer.loaders["video"])
        real = _timed_steps(trainer, loader, args.warmup, args.steps)
        fixed = to_device(next(loader), trainer.device)

        def same_batch():
            while True:
                yield fixed

        model_only = _timed_steps(trainer, same_batch(), args.warmup, args.steps)
    result = {
        f"{args.size}_{trainer.model.config.vision.image_size}px_1frame_batch{args.batch}": {
            "samples_per_s_real_decoding": round(real, 1),
            "samples_per_s_model_only": round(model_only, 1),
            "ratio": round(real / model_only, 3),
            "precision": trainer.precision,
            "num_workers": trainer.num_workers,
        },
        "setting": {
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "cpus": available_cpus(),
            "load_average": os.getloadavg()[0],
            "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d"),
            "corpus_seconds": round(corpus_s, 1),
        },
    }
    for key, r in result.items():
        if key != "setting":
            print(
                f"{key}: real decoding {r['samples_per_s_real_decoding']} samples/s, model alone"
                f" {r['samples_per_s_model_only']} samples/s (ratio {r['ratio']}; {r['precision']},"
                f" {r['num_workers']} workers)"
            )
    print(json.dumps(result["setting"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
