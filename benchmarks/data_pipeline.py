"""Samples/s per core of the data path that feeds the model, ours against the release's reading procedure
in the same run, on release-format clips (`prepare-videos --fps 2 --size 224` outputs of generated 30 s
sources: 60 frames each, 224 px on the shorter side; see release_clips.py).

- training: 1 random frame (`rand`), random resized crop to 224 px, BEiT normalisation, caption
  tokenised and collated (`CaptionTrainDataset` + `TrainTransform` + `CaptionCollator`, as the trainer);
- evaluation: 4 and 12 frames (`middle`), squashed to 224 px, normalised, collated (`MediaEvalDataset` +
  `EvalTransform` + `media_collate`, as retrieval evaluation).

The release's procedure differs only in reading: it decodes every frame of the file and converts each to
RGB, then picks the sampled ones (its `read_frames_av`); the same datasets, transforms and collation are
used for both. Per core: one DataLoader worker process with one decoder thread and one torch thread
(the layout of a training job with one worker per core). The two readers alternate round by round
(`--rounds`), each round a fresh loader over a shuffled pass; rates are samples after the first batch
over the time since it (the steady state, without worker start-up), summed over rounds.

    python benchmarks/data_pipeline.py [--clips 12] [--rounds 3] [--json FILE] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from decode import machine
from release_clips import release_format_clips
from singularity_vl.data.annotations import CaptionSample
from singularity_vl.data.datasets import (
    CaptionCollator,
    CaptionTrainDataset,
    MediaEvalDataset,
    make_loader,
    media_collate,
)
from singularity_vl.data.sampling import sample_frame_indices
from singularity_vl.data.text import ReleaseTokenizer
from singularity_vl.data.transforms import EvalTransform, TrainTransform

IMAGE_SIZE = 224


def release_read(path: str, num_frames: int, mode: str, rng: random.Random) -> np.ndarray:
    """The release's PyAV reading: every frame decoded and converted to RGB, then the sampled ones picked
    (one decoder thread, for a per-core rate)."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    idx = sample_frame_indices(num_frames, len(frames), mode, rng)
    return np.stack([frames[i] for i in idx])


class ReleaseReadingTrainDataset(CaptionTrainDataset):
    """`CaptionTrainDataset` with the release's reading procedure."""

    def _frames(self, media, rng):
        return release_read(media, self.num_frames, self.sample_mode, rng)


class ReleaseReadingEvalDataset(MediaEvalDataset):
    """`MediaEvalDataset` with the release's reading procedure."""

    def __getitem__(self, i):
        frames = release_read(self.media[i], self.num_frames, self.sample_mode, random.Random(i))
        return {"video": self.transform(frames), "index": i}


def _rate(loader, expected_shape: tuple[int, ...]) -> tuple[int, float]:
    """(samples after the first batch, seconds since the first batch) of one pass over `loader`."""
    it = iter(loader)
    first = next(it)
    assert tuple(first["video"].shape[1:]) == expected_shape, first["video"].shape
    start = time.perf_counter()
    samples = 0
    for batch in it:
        samples += batch["size"]
    return samples, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=12, help="release-format clips generated")
    parser.add_argument("--rounds", type=int, default=3, help="passes per reader and path, alternating")
    parser.add_argument("--train-samples", type=int, default=96, help="training samples per pass")
    parser.add_argument("--eval-samples", type=int, default=36, help="evaluation samples per pass")
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--json", default=None)
    parser.add_argument("--workdir", default=None, help="where generated clips are kept (default: a temp dir)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="pipeline-bench-"))
    clips = [str(p) for p in release_format_clips(workdir / "release", args.clips)]
    tokenizer = ReleaseTokenizer()
    captions = ["a person walks a dog along the beach at sunset", "two people play table tennis indoors"]
    train_items = [
        CaptionSample(clips[i % len(clips)], "video", [captions[i % 2]], f"v{i % len(clips)}")
        for i in range(args.train_samples)
    ]
    eval_media = [clips[i % len(clips)] for i in range(args.eval_samples)]
    collate = CaptionCollator(tokenizer, max_length=32)
    train_transform = TrainTransform(IMAGE_SIZE)
    eval_transform = EvalTransform(IMAGE_SIZE)

    def train_loader(cls, seed: int):
        data = cls(train_items, train_transform, num_frames=1, sample_mode="rand", seed=seed)
        return make_loader(data, args.batch, collate, shuffle=True, num_workers=1, seed=seed)

    def eval_loader(cls, frames: int):
        data = cls(eval_media, eval_transform, num_frames=frames)
        return make_loader(data, args.batch, media_collate, shuffle=False, num_workers=1)

    cases = {
        "train": (
            lambda cls, r: train_loader(cls, r),
            CaptionTrainDataset,
            ReleaseReadingTrainDataset,
            (1, 3, IMAGE_SIZE, IMAGE_SIZE),
        ),
        "eval4": (
            lambda cls, r: eval_loader(cls, 4),
            MediaEvalDataset,
            ReleaseReadingEvalDataset,
            (4, 3, IMAGE_SIZE, IMAGE_SIZE),
        ),
        "eval12": (
            lambda cls, r: eval_loader(cls, 12),
            MediaEvalDataset,
            ReleaseReadingEvalDataset,
            (12, 3, IMAGE_SIZE, IMAGE_SIZE),
        ),
    }
    load_before = os.getloadavg()
    results: dict[str, float | int | str | dict | list] = {}
    print(f"{'path':8} {'ours (samples/s/core)':>22} {'release procedure':>18} {'speedup':>8}")
    for name, (make, ours_cls, release_cls, shape) in cases.items():
        totals = {"ours": [0, 0.0], "release": [0, 0.0]}
        for r in range(args.rounds):
            for reader, cls in (("ours", ours_cls), ("release", release_cls)):
                samples, seconds = _rate(make(cls, r), shape)
                totals[reader][0] += samples
                totals[reader][1] += seconds
        ours = totals["ours"][0] / totals["ours"][1]
        release = totals["release"][0] / totals["release"][1]
        results[f"{name}_samples_per_s_per_core"] = round(ours, 2)
        results[f"release_{name}_samples_per_s_per_core"] = round(release, 2)
        results[f"{name}_speedup_vs_release"] = round(ours / release, 2)
        print(f"{name:8} {ours:>22.1f} {release:>18.1f} {ours / release:>7.2f}x")
    results.update(
        machine=machine(),
        clip={"frames": 60, "fps": 2, "shorter_side": 224, "files": len(clips)},
        batch=args.batch,
        rounds=args.rounds,
        loadavg_before=[round(x, 2) for x in load_before],
        loadavg_after=[round(x, 2) for x in os.getloadavg()],
    )
    print(json.dumps(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
