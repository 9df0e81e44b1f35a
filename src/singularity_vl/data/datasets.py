"""Map-style datasets, collate functions and the mixed image/video loader.

A file that cannot be read is skipped: the dataset returns None, the collate function drops it and counts
it in `batch["skipped"]`, and its path is logged once per process. (The release silently substituted
another random video while keeping the original caption: a mismatched pair.)
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from singularity_vl.data.annotations import CaptionSample, MCItem, QAItem
from singularity_vl.data.sampling import sample_frame_indices
from singularity_vl.data.text import ReleaseTokenizer
from singularity_vl.data.transforms import EvalTransform, TrainTransform
from singularity_vl.data.video_reader import VideoReadError, read_clip, read_frames

log = logging.getLogger(__name__)
_logged_failures: set[str] = set()


def _log_failure(err: VideoReadError) -> None:
    if err.path not in _logged_failures:
        _logged_failures.add(err.path)
        log.warning("skipping unreadable media %s", err)


def read_media(
    media: str | list[str], num_frames: int, mode: str, rng: random.Random, backend: str = "pyav"
) -> np.ndarray:
    """uint8 (T, H, W, 3) from a video/image path, or from a list of frame image files."""
    if isinstance(media, list):
        idx = sample_frame_indices(num_frames, len(media), mode, rng)
        return np.concatenate([read_frames(media[i], [0]) for i in idx])
    return read_clip(media, num_frames, mode, rng, backend=backend).frames


class _TrainMediaDataset(Dataset):
    """Shared by the training datasets: randomness (frames, crop, flip, caption choice) is drawn from
    (seed, epoch, index), so any worker layout gives the same samples; unreadable media -> None."""

    def __init__(
        self, transform: TrainTransform, num_frames: int, sample_mode: str, seed: int, video_backend: str
    ) -> None:
        self.transform = transform
        self.num_frames = num_frames
        self.sample_mode = sample_mode
        self.seed = seed
        self.video_backend = video_backend
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rng(self, i: int) -> random.Random:
        return random.Random(f"{self.seed}-{self.epoch}-{i}")

    def _frames(self, media: str | list[str], rng: random.Random) -> np.ndarray | None:
        try:
            return read_media(media, self.num_frames, self.sample_mode, rng, self.video_backend)
        except VideoReadError as e:
            _log_failure(e)
            return None


class CaptionTrainDataset(_TrainMediaDataset):
    """(video/image, caption) pairs for pre-training and retrieval fine-tuning."""

    def __init__(
        self,
        samples: Sequence[CaptionSample],
        transform: TrainTransform,
        num_frames: int = 1,
        sample_mode: str = "rand",
        seed: int = 0,
        video_backend: str = "pyav",
    ) -> None:
        super().__init__(transform, num_frames, sample_mode, seed, video_backend)
        self.samples = list(samples)
        keys: dict[str, int] = {}
        self.match_ids = [keys.setdefault(s.match_key, len(keys)) for s in self.samples]
        # caption-keyed samples (SSv2): the id of each cleaned caption, for captions the flip's swap rewrites
        self._caption_ids: dict[str, int] = {}
        for s, match_id in zip(self.samples, self.match_ids, strict=True):
            if s.keyed_by_caption:
                self._caption_ids.setdefault(s.captions[0], match_id)
        self._fresh_id = len(keys)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        s = self.samples[i]
        rng = self._rng(i)
        frames = self._frames(s.media, rng)
        if frames is None:
            return None
        chosen = rng.choice(s.captions)
        video, caption = self.transform(frames, chosen, rng)
        match_id = self.match_ids[i]
        if s.keyed_by_caption and caption != chosen:
            # the flip swapped left/right: the clip now shows the other caption's event, whose videos are its
            # positives (a caption no sample has: a class of its own)
            match_id = self._caption_ids.get(caption, self._fresh_id + i)
        return {"video": video, "caption": caption, "video_id": match_id, "index": i}


class MediaEvalDataset(Dataset):
    """Test-time frames (`middle` of N segments by default) of each media item, for evaluation."""

    def __init__(
        self,
        media: Sequence[str | list[str]],
        transform: EvalTransform,
        num_frames: int = 4,
        sample_mode: str = "middle",
    ) -> None:
        self.media = list(media)
        self.transform = transform
        self.num_frames = num_frames
        self.sample_mode = sample_mode

    def __len__(self) -> int:
        return len(self.media)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        try:
            frames = read_media(self.media[i], self.num_frames, self.sample_mode, random.Random(i))
        except VideoReadError as e:
            _log_failure(e)
            return None
        return {"video": self.transform(frames), "index": i}


class QATrainDataset(_TrainMediaDataset):
    """(video, question, weighted answers) for QA fine-tuning."""

    def __init__(
        self,
        items: Sequence[QAItem],
        transform: TrainTransform,
        num_frames: int = 1,
        sample_mode: str = "rand",
        seed: int = 0,
        video_backend: str = "pyav",
    ) -> None:
        super().__init__(transform, num_frames, sample_mode, seed, video_backend)
        self.items = [it for it in items if it.answers]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        it = self.items[i]
        rng = self._rng(i)
        frames = self._frames(it.media, rng)
        if frames is None:
            return None
        video, _ = self.transform(frames, None, rng)
        return {"video": video, "question": it.question, "answers": it.answers, "weights": it.weights, "index": i}


class MCEvalDataset(MediaEvalDataset):
    """MSRVTT-MC: test frames plus the 5 options and the answer index."""

    def __init__(self, items: Sequence[MCItem], transform: EvalTransform, num_frames: int = 12) -> None:
        super().__init__([it.media for it in items], transform, num_frames)
        self.items = list(items)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        out = super().__getitem__(i)
        if out is not None:
            out.update(options=self.items[i].options, answer=self.items[i].answer)
        return out


def _drop_failed(batch: list[dict | None]) -> tuple[list[dict], int]:
    kept = [b for b in batch if b is not None]
    return kept, len(batch) - len(kept)


class CaptionCollator:
    """Stack videos, tokenise captions the release's way; failed items dropped and counted."""

    def __init__(self, tokenizer: ReleaseTokenizer, max_length: int = 32, pad_to_longest: bool = False) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_to_longest = pad_to_longest

    def __call__(self, batch: list[dict | None]) -> dict[str, Any]:
        kept, skipped = _drop_failed(batch)
        if not kept:
            return {"skipped": skipped, "size": 0}
        text = self.tokenizer([b["caption"] for b in kept], self.max_length, self.pad_to_longest)
        return {
            "video": torch.stack([b["video"] for b in kept]),
            "input_ids": text["input_ids"],
            "attention_mask": text["attention_mask"],
            "video_ids": torch.tensor([b["video_id"] for b in kept]),
            "index": torch.tensor([b["index"] for b in kept]),
            "skipped": skipped,
            "size": len(kept),
        }


class QACollator:
    """Questions (max_q_len) and `answer + " [SEP]"` (max_a_len), answers flattened with per-question counts."""

    def __init__(
        self,
        tokenizer: ReleaseTokenizer,
        max_q_len: int = 25,
        max_a_len: int = 5,
        eos: str = "[SEP]",
        pad_to_longest: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.max_q_len = max_q_len
        self.max_a_len = max_a_len
        self.eos = eos
        self.pad_to_longest = pad_to_longest

    def __call__(self, batch: list[dict | None]) -> dict[str, Any]:
        kept, skipped = _drop_failed(batch)
        if not kept:
            return {"skipped": skipped, "size": 0}
        q = self.tokenizer([b["question"] for b in kept], self.max_q_len, self.pad_to_longest)
        answers = [f"{a} {self.eos}" for b in kept for a in b["answers"]]
        a = self.tokenizer(answers, self.max_a_len, self.pad_to_longest)
        return {
            "video": torch.stack([b["video"] for b in kept]),
            "question_ids": q["input_ids"],
            "question_mask": q["attention_mask"],
            "answer_ids": a["input_ids"],
            "answer_mask": a["attention_mask"],
            "answers_per_question": torch.tensor([len(b["answers"]) for b in kept]),
            "answer_weights": torch.tensor([w for b in kept for w in b["weights"]], dtype=torch.float32),
            "skipped": skipped,
            "size": len(kept),
        }


def media_collate(batch: list[dict | None]) -> dict[str, Any]:
    """Evaluation batches: stacked frames and their dataset indices; failures counted."""
    kept, skipped = _drop_failed(batch)
    out: dict[str, Any] = {"skipped": skipped, "size": len(kept)}
    if kept:
        out["video"] = torch.stack([b["video"] for b in kept])
        out["index"] = torch.tensor([b["index"] for b in kept])
        for key in ("options", "answer"):
            if key in kept[0]:
                out[key] = [b[key] for b in kept]
    return out


def seed_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: distinct, reproducible numpy/random seeds per worker, one torch thread."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    torch.set_num_threads(1)


def mixed_order(batches: dict[str, int], seed: int) -> list[str]:
    """Media type of each step: every batch of every corpus once, shuffled with `seed` (the release's
    MetaLoader order, identical on every rank)."""
    names = [name for name, n in batches.items() for _ in range(n)]
    random.Random(seed).shuffle(names)
    return names


class MixedLoader:
    """Several loaders (e.g. an image and a video corpus), one media type per step: the release's
    MetaLoader. Each epoch takes every batch of every loader once, in an order shuffled with `seed + epoch`
    (the same on every rank, so no broadcast is needed)."""

    def __init__(self, loaders: dict[str, DataLoader], seed: int = 0) -> None:
        self.loaders = loaders
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for loader in self.loaders.values():
            for obj in (loader.dataset, getattr(loader, "sampler", None)):
                if hasattr(obj, "set_epoch"):
                    obj.set_epoch(epoch)

    def order(self) -> list[str]:
        return mixed_order({name: len(loader) for name, loader in self.loaders.items()}, self.seed + self.epoch)

    def __len__(self) -> int:
        return sum(len(loader) for loader in self.loaders.values())

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        iters = {name: iter(loader) for name, loader in self.loaders.items()}
        for name in self.order():
            yield name, next(iters[name])


def make_loader(
    dataset: Dataset,
    batch_size: int,
    collate_fn: Callable,
    shuffle: bool = True,
    num_workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    sampler=None,
) -> DataLoader:
    """A DataLoader with deterministic shuffling and worker seeding (pass a DistributedSampler under DDP)."""
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=num_workers,
        worker_init_fn=seed_worker,
        generator=gen,
        drop_last=drop_last,
        persistent_workers=False,
    )
