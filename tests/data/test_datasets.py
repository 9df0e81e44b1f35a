"""Datasets and loaders: collate, skipped files counted, deterministic sampling, mixed media, training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from singularity_vl.data.annotations import load_caption_corpora, load_qa
from singularity_vl.data.datasets import (
    CaptionCollator,
    CaptionTrainDataset,
    MediaEvalDataset,
    MixedLoader,
    QACollator,
    QATrainDataset,
    make_loader,
    media_collate,
)
from singularity_vl.data.text import ReleaseTokenizer
from singularity_vl.data.transforms import EvalTransform, TrainTransform
from singularity_vl.data.video_writer import moving_square_frames, write_video


@pytest.fixture(scope="module")
def tokenizer():
    return ReleaseTokenizer()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """6 good videos and one corrupt file, annotated in the release's format."""
    root = tmp_path_factory.mktemp("corpus")
    entries = []
    for i in range(6):
        write_video(root / f"v{i}.mp4", moving_square_frames(20, 48, 64, seed=i), fps=10, gop=5)
        entries.append({"video": f"v{i}.mp4", "caption": f"a square number {i} moves"})
    (root / "broken.mp4").write_bytes(b"\x00\x01 not a video" * 50)
    entries.insert(3, {"video": "broken.mp4", "caption": "broken"})
    (root / "train.json").write_text(json.dumps(entries))
    return root


def test_corrupt_video_skipped_counted_and_epoch_trains(corpus, tokenizer):
    from singularity_vl.models.config import tiny_config
    from singularity_vl.models.singularity import create_model

    samples = load_caption_corpora([[str(corpus / "train.json"), str(corpus), "video"]])
    ds = CaptionTrainDataset(samples, TrainTransform(32), num_frames=1)
    loader = make_loader(ds, batch_size=4, collate_fn=CaptionCollator(tokenizer, 12), num_workers=1)
    cfg = tiny_config("retrieval")
    cfg.vision.image_size = 32
    model = create_model(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    skipped = seen = 0
    for batch in loader:  # one worker process: PyAV slice threading inside a forked worker
        skipped += batch["skipped"]
        seen += batch["size"]
        if batch["size"] < 2:
            continue
        out = model(batch["video"], batch["input_ids"], batch["attention_mask"], batch["video_ids"])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert skipped == 1 and seen == 6


def _list(batch: list) -> list:
    return batch


def test_same_samples_whatever_the_worker_count(corpus):
    """Frames and crops are drawn from (seed, epoch, index): the same samples, in the same order, from the
    main process and from 2 worker processes; a new epoch draws new ones."""
    samples = load_caption_corpora([[str(corpus / "train.json"), str(corpus), "video"]])
    ds = CaptionTrainDataset(samples, TrainTransform(32, flip="on"), num_frames=2, seed=3)

    def load(workers: int) -> list:
        loader = make_loader(ds, batch_size=3, collate_fn=_list, num_workers=workers, seed=5)
        return [None if item is None else (item["video"], item["caption"]) for batch in loader for item in batch]

    main_process, workers = load(0), load(2)  # the main process decodes first, then forks the workers
    assert len(main_process) == len(workers) == 7 and sum(item is None for item in workers) == 1  # the broken file
    for a, b in zip(main_process, workers, strict=True):
        assert (a is None and b is None) or (torch.equal(a[0], b[0]) and a[1] == b[1])
    a = ds[0]["video"]
    assert torch.equal(a, ds[0]["video"])
    ds.set_epoch(1)
    assert not torch.equal(a, ds[0]["video"])  # a new epoch draws new frames and crops
    assert ds[3] is None  # the broken file


def test_eval_dataset_and_collate(corpus):
    ds = MediaEvalDataset(
        [str(corpus / "v0.mp4"), str(corpus / "broken.mp4"), str(corpus / "v1.mp4")], EvalTransform(24), num_frames=4
    )
    batch = media_collate([ds[i] for i in range(3)])
    assert batch["video"].shape == (2, 4, 3, 24, 24) and batch["index"].tolist() == [0, 2]
    assert batch["skipped"] == 1


def test_qa_collate(corpus, tokenizer):
    (corpus / "qa.json").write_text(
        json.dumps(
            [
                {"video": "v0.mp4", "question": "what moves?", "answer": ["square", "square", "box"], "question_id": 1},
                {"video": "v1.mp4", "question": "what colour?", "answer": "red", "question_id": 2},
            ]
        )
    )
    ds = QATrainDataset(load_qa([str(corpus / "qa.json"), str(corpus), "video"]), TrainTransform(24))
    batch = QACollator(tokenizer, max_q_len=8, max_a_len=5)([ds[0], ds[1]])
    assert batch["answers_per_question"].tolist() == [2, 1]
    assert batch["answer_weights"].tolist() == pytest.approx([2 / 3, 1 / 3, 1.0])
    assert batch["answer_ids"][0].tolist()[:3] == [101, tokenizer.tok.convert_tokens_to_ids("square"), 102]
    assert batch["question_ids"].shape == (2, 8)


def test_mixed_loader_one_media_type_per_step():
    img = make_loader(list(range(10)), batch_size=2, collate_fn=lambda b: b)
    vid = make_loader(list(range(4)), batch_size=2, collate_fn=lambda b: b)
    mixed = MixedLoader({"image": img, "video": vid}, seed=0)
    names = [name for name, _ in mixed]
    assert len(mixed) == 7 and names.count("image") == 5 and names.count("video") == 2
    assert names == mixed.order()
    mixed.set_epoch(1)
    orders = {tuple(mixed.order()) for mixed.epoch in range(6)}
    assert len(orders) > 1  # shuffled differently across epochs, identically for the same epoch


def test_list_of_frame_images(tmp_path):
    import av

    paths = []
    for i in range(5):
        p = tmp_path / f"f{i}.png"
        with av.open(str(p), "w", format="image2") as c:
            s = c.add_stream("png", rate=1)
            s.width, s.height, s.pix_fmt = 16, 16, "rgb24"
            for pkt in s.encode(av.VideoFrame.from_ndarray(np.full((16, 16, 3), i * 40, np.uint8), format="rgb24")):
                c.mux(pkt)
            for pkt in s.encode():
                c.mux(pkt)
        paths.append(str(p))
    import random

    from singularity_vl.data.datasets import read_media

    frames = read_media(paths, 2, "middle", random.Random(0))
    assert (
        frames.shape == (2, 16, 16, 3) and frames[0, 0, 0, 0] == 0 and frames[1, 0, 0, 0] == 120
    )  # middles of (0,1), (2,4)
