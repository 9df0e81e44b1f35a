"""COCO and Flickr30K image-text retrieval on the Karpathy splits, from Karpathy's `dataset_coco.json` /
`dataset_flickr30k.json` (the split files of "Deep Visual-Semantic Alignments", Karpathy & Fei-Fei 2015).

Training files hold one entry per (image, caption), as the release's `coco_train.json` (the train and
restval images for COCO: 113,287; Flickr30K: 29,000); the val and test files hold one entry per image
with its captions (`"caption": [...]`): COCO 5,000 + 5,000 images, Flickr30K 1,014 + 1,000. Captions are
kept as written (whitespace collapsed); `pre_text` cleans them at load time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from singularity_vl.data.converters.common import (
    ConvertError,
    Summary,
    VideoCheck,
    field_of,
    read_json,
    write_outputs,
)

TRAIN_SPLITS = ("train", "restval")


def _karpathy_images(path: str | Path) -> list[dict[str, Any]]:
    data = read_json(path, dict)
    images = data.get("images")
    if not isinstance(images, list):
        raise ConvertError(f"{path}: missing list 'images' (expected a Karpathy split file, dataset_*.json)")
    return images


def _image_entry(img: Any, where: str, with_filepath: bool) -> tuple[str, str, list[str]]:
    """(relative image path, split, captions) of one Karpathy entry."""
    name = field_of(img, "filename", where)
    rel = f"{field_of(img, 'filepath', where)}/{name}" if with_filepath else name
    split = field_of(img, "split", where)
    if split not in ("train", "restval", "val", "test"):
        raise ConvertError(f"{where}: 'split' must be train, restval, val or test, got {split!r}")
    sentences = field_of(img, "sentences", where, list)
    captions = []
    for j, sent in enumerate(sentences):
        captions.append(" ".join(field_of(sent, "raw", f"{where}: sentences[{j}]").split()))
    if not captions:
        raise ConvertError(f"{where}: 'sentences' is empty")
    return rel, split, captions


def _build(
    name: str,
    karpathy_json: str | Path,
    out: str | Path,
    prefix: str,
    with_filepath: bool,
    image_root: str | Path | None,
    skip_missing: bool,
) -> Summary:
    summary = Summary(name, media="image")
    check = VideoCheck(image_root, skip_missing, summary)
    outputs: dict[str, list[dict[str, Any]]] = {f"{prefix}_{s}.json": [] for s in ("train", "val", "test")}
    for i, img in enumerate(_karpathy_images(karpathy_json)):
        rel, split, captions = _image_entry(img, f"{karpathy_json}: images[{i}]", with_filepath)
        if not check.exists(rel):
            continue
        if split in TRAIN_SPLITS:
            outputs[f"{prefix}_train.json"] += [{"image": rel, "caption": c} for c in captions]
        else:
            outputs[f"{prefix}_{split}.json"].append({"image": rel, "caption": captions})
    check.finish()
    summary.counts = {
        "train images": len({e["image"] for e in outputs[f"{prefix}_train.json"]}),
        "train captions": len(outputs[f"{prefix}_train.json"]),
        "val images": len(outputs[f"{prefix}_val.json"]),
        "test images": len(outputs[f"{prefix}_test.json"]),
    }
    return write_outputs(out, outputs, summary)


def build_coco(
    karpathy_json: str | Path, out: str | Path, image_root: str | Path | None = None, skip_missing: bool = False
) -> Summary:
    """coco_{train,val,test}.json from `dataset_coco.json`; image paths `train2014/...` / `val2014/...`
    (relative to the COCO image folder holding train2014/ and val2014/)."""
    return _build("coco", karpathy_json, out, "coco", True, image_root, skip_missing)


def build_flickr30k(
    karpathy_json: str | Path, out: str | Path, image_root: str | Path | None = None, skip_missing: bool = False
) -> Summary:
    """flickr30k_{train,val,test}.json from `dataset_flickr30k.json`; image paths are the file names
    (relative to the folder of `flickr30k-images`)."""
    return _build("flickr30k", karpathy_json, out, "flickr30k", False, image_root, skip_missing)
