"""SSv2 recipes flip with a left/right swap: a clip whose caption the swap rewrites takes the match id of
the caption it now has (its positives in ITC, never its ITM negatives), not the one it was loaded with."""

from __future__ import annotations

import json

from PIL import Image

from singularity_vl.data.annotations import load_caption_corpora
from singularity_vl.data.datasets import CaptionTrainDataset
from singularity_vl.data.transforms import TrainTransform


def _corpus(tmp_path):
    for i in range(6):
        Image.new("RGB", (32, 32), (40 * i, 0, 0)).save(tmp_path / f"v{i}.png")
    anno = [{"image": f"v{i}.png", "caption": "Moving something from left to right"} for i in range(3)]
    anno += [{"image": f"v{i}.png", "caption": "Moving something from right to left"} for i in range(3, 5)]
    anno += [{"image": "v5.png", "caption": "Turning the camera left while filming something"}]
    (tmp_path / "anno.json").write_text(json.dumps(anno))
    return [str(tmp_path / "anno.json"), str(tmp_path), "image"]


def test_swapped_caption_takes_the_other_templates_id(tmp_path):
    samples = load_caption_corpora([_corpus(tmp_path)], multi_video_gt=True)
    ds = CaptionTrainDataset(samples, TrainTransform(16, flip="swap"), seed=0)
    ids = {
        "moving something from left to right": ds.match_ids[0],
        "moving something from right to left": ds.match_ids[3],
    }
    assert ids["moving something from left to right"] != ids["moving something from right to left"]
    seen_swapped = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            swapped = item["caption"] != samples[i].captions[0]
            if item["caption"] in ids:
                assert item["video_id"] == ids[item["caption"]]  # the id always follows the caption shown
            elif swapped:  # "turning the camera right ...": no sample has it, a class of its own
                assert item["video_id"] not in ds.match_ids
            seen_swapped.add(swapped)
    assert seen_swapped == {True, False}


def test_release_flip_keeps_caption_and_id(tmp_path):
    samples = load_caption_corpora([_corpus(tmp_path)], multi_video_gt=True)
    ds = CaptionTrainDataset(samples, TrainTransform(16, flip="on"), seed=0)
    for i in range(len(ds)):
        item = ds[i]
        assert item["caption"] == samples[i].captions[0] and item["video_id"] == ds.match_ids[i]
