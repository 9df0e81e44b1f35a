"""COCO / Flickr30K (Karpathy splits) and VQA v2 converters, and `prepare-images`, on fixtures in each
dataset's own format: outputs loadable by our readers, a broken entry and a missing file each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from singularity_vl.cli import main
from singularity_vl.data.annotations import load_caption_corpora, load_qa, load_retrieval_eval
from singularity_vl.data.converters.common import ConvertError
from singularity_vl.data.converters.images import build_coco, build_flickr30k
from singularity_vl.data.converters.vqa import build_vqa
from singularity_vl.data.prepare_images import prepare_images, release_size


def _json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _touch(root: Path, names) -> Path:
    for n in names:
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        (root / n).write_bytes(b"")
    return root


# --- COCO / Flickr30K ------------------------------------------------------------------------------------
def _karpathy(tmp_path: Path, coco: bool) -> tuple[Path, list[str]]:
    splits = ["train", "restval", "val", "test", "test"]
    images, paths = [], []
    for i, split in enumerate(splits):
        folder = "val2014" if split != "train" else "train2014"
        name = f"COCO_{folder}_{i:012d}.jpg" if coco else f"{1000 + i}.jpg"
        img = {
            "filename": name,
            "split": split,
            "imgid": i,
            "sentences": [{"raw": f"A  dog number {i}, caption {j}.", "tokens": []} for j in range(5)],
        }
        if coco:
            img["filepath"] = folder
        images.append(img)
        paths.append(f"{folder}/{name}" if coco else name)
    return _json(tmp_path / ("dataset_coco.json" if coco else "dataset_flickr30k.json"), {"images": images}), paths


@pytest.mark.parametrize("coco", [True, False], ids=["coco", "flickr30k"])
def test_karpathy_splits(tmp_path, coco):
    src, paths = _karpathy(tmp_path, coco)
    root = _touch(tmp_path / "images", paths)
    build = build_coco if coco else build_flickr30k
    prefix = "coco" if coco else "flickr30k"
    summary = build(src, tmp_path / "out", image_root=root)
    assert summary.counts == {"train images": 2, "train captions": 10, "val images": 1, "test images": 2}
    train = json.loads((tmp_path / "out" / f"{prefix}_train.json").read_text())
    assert train[0] == {"image": paths[0], "caption": "A dog number 0, caption 0."}  # one entry per caption
    samples = load_caption_corpora([[str(tmp_path / "out" / f"{prefix}_train.json"), str(root), "image"]])
    assert len(samples) == 10 and samples[0].captions == ["a dog number 0 caption 0"]
    test = load_retrieval_eval([str(tmp_path / "out" / f"{prefix}_test.json"), str(root), "image"])
    assert len(test.media) == 2 and len(test.texts) == 10 and test.media_to_text[1] == [5, 6, 7, 8, 9]


def test_karpathy_broken_entry_and_missing_files(tmp_path, capsys):
    src, paths = _karpathy(tmp_path, True)
    data = json.loads(src.read_text())
    del data["images"][2]["sentences"][1]["raw"]
    broken = _json(tmp_path / "broken.json", data)
    with pytest.raises(ConvertError, match=r"images\[2\]: sentences\[1\]: missing key 'raw'"):
        build_coco(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written
    data["images"][2]["sentences"][1]["raw"] = "x"
    data["images"][3]["split"] = "dev"
    with pytest.raises(ConvertError, match=r"images\[3\]: 'split' must be"):
        build_coco(_json(tmp_path / "broken2.json", data), tmp_path / "out")
    root = _touch(tmp_path / "images", paths[1:])  # the first image is missing
    with pytest.raises(ConvertError, match=r"1 image\(s\) not found .*COCO_train2014_000000000000.jpg"):
        build_coco(src, tmp_path / "out", image_root=root)
    summary = build_coco(src, tmp_path / "out", image_root=root, skip_missing=True)
    assert summary.counts["train images"] == 1 and "whose image is missing" in summary.text()
    with pytest.raises(ConvertError, match="file not found"):
        build_flickr30k(tmp_path / "no_such.json", tmp_path / "out")
    with pytest.raises(ConvertError, match="missing list 'images'"):
        build_flickr30k(_json(tmp_path / "x.json", {"imgs": []}), tmp_path / "out")
    # the command line
    assert main(["prepare", "coco", "--karpathy", str(src), "--out", str(tmp_path / "cli")]) == 0
    assert "test images: 2" in capsys.readouterr().out
    assert main(["prepare", "flickr30k", "--karpathy", str(broken), "--out", str(tmp_path / "cli2")]) == 2
    assert "missing key 'raw'" in capsys.readouterr().err


# --- VQA v2 ----------------------------------------------------------------------------------------------
def _vqa(tmp_path: Path) -> dict[str, Path]:
    files = {}
    for split, n in (("train2014", 3), ("val2014", 4)):
        qs = [
            {"image_id": 10 + i, "question": f"What is  {i}?", "question_id": 100 * (split == "val2014") + i}
            for i in range(n)
        ]  # noqa: E501
        anns = [
            {
                "question_id": q["question_id"],
                "image_id": q["image_id"],
                "question_type": "what is",
                "answer_type": "other",
                "multiple_choice_answer": "dog" if i % 2 == 0 else "cat",
                "answers": [
                    {"answer": "dog" if j < 7 else "cat", "answer_confidence": "yes", "answer_id": j + 1}
                    for j in range(10)
                ],
            }
            for i, q in enumerate(qs)
        ]
        files[f"{split}_q"] = _json(
            tmp_path / f"v2_OpenEnded_mscoco_{split}_questions.json", {"data_subtype": split, "questions": qs}
        )  # noqa: E501
        files[f"{split}_a"] = _json(tmp_path / f"v2_mscoco_{split}_annotations.json", {"annotations": anns})
    files["test_q"] = _json(
        tmp_path / "v2_OpenEnded_mscoco_test-dev2015_questions.json",
        {"data_subtype": "test-dev2015", "questions": [{"image_id": 7, "question": "Why?", "question_id": 9000}]},
    )
    files["minival"] = _json(tmp_path / "minival.json", [{"question_id": 100}, {"question_id": 102}])
    return files


def _build_vqa(f, out, **kw):
    return build_vqa(f["train2014_q"], f["train2014_a"], f["val2014_q"], f["val2014_a"], out, **kw)


def test_vqa(tmp_path):
    f = _vqa(tmp_path)
    summary = _build_vqa(f, tmp_path / "out", test_questions=f["test_q"], minival=f["minival"], num_answers=1)
    out = tmp_path / "out"
    assert summary.counts["vqa_minival questions"] == 2 and summary.counts["vqa_valminusminival questions"] == 2
    train = json.loads((out / "vqa_train.json").read_text())
    assert train[0]["image"] == "train2014/COCO_train2014_000000000010.jpg" and train[0]["question"] == "What is 0?"
    assert train[0]["answer"] == ["dog"] * 7 + ["cat"] * 3 and train[0]["answer_type"] == "other"
    test = json.loads((out / "vqa_test.json").read_text())
    assert test == [{"image": "test2015/COCO_test2015_000000000007.jpg", "question": "Why?", "question_id": 9000}]
    assert json.loads((out / "vqa_answer_list.json").read_text()) == ["dog"]  # the most frequent majority answer
    (item,) = load_qa([str(out / "vqa_minival.json"), "/coco", "image"])[:1]
    assert item.answers == ["dog", "cat"] and item.weights == pytest.approx([0.7, 0.3])
    assert item.all_answers == ["dog"] * 7 + ["cat"] * 3 and item.question_id == 100
    assert item.answer_type == "other"
    # without a minival list, val2014 stays whole
    assert "vqa_val questions" in _build_vqa(f, tmp_path / "out2").counts


def test_vqa_broken_entry_and_missing_files(tmp_path, capsys):
    f = _vqa(tmp_path)
    anns = json.loads(f["val2014_a"].read_text())
    del anns["annotations"][1]["answers"][3]["answer"]
    broken = _json(tmp_path / "broken_a.json", anns)
    with pytest.raises(ConvertError, match=r"broken_a.json: annotations\[1\]: answers\[3\]: missing key 'answer'"):
        build_vqa(f["train2014_q"], f["train2014_a"], f["val2014_q"], broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    anns = json.loads(f["val2014_a"].read_text())
    anns["annotations"] = anns["annotations"][:-1]
    with pytest.raises(ConvertError, match=r"questions\[3\]: question 103 has no annotation"):
        build_vqa(f["train2014_q"], f["train2014_a"], f["val2014_q"], _json(tmp_path / "a.json", anns), tmp_path / "o")
    with pytest.raises(ConvertError, match="not val2014 questions"):
        _build_vqa(f, tmp_path / "out", minival=_json(tmp_path / "mv.json", [100, 55]))
    with pytest.raises(ConvertError, match="file not found"):
        build_vqa(tmp_path / "nope.json", f["train2014_a"], f["val2014_q"], f["val2014_a"], tmp_path / "out")
    root = _touch(tmp_path / "coco", [f"train2014/COCO_train2014_{10 + i:012d}.jpg" for i in range(3)])
    root = _touch(root, [f"val2014/COCO_val2014_{10 + i:012d}.jpg" for i in range(3)])  # val image 13 missing
    with pytest.raises(ConvertError, match=r"1 image\(s\) not found .*COCO_val2014_000000000013.jpg"):
        _build_vqa(f, tmp_path / "out", image_root=root)
    assert _build_vqa(f, tmp_path / "out", image_root=root, skip_missing=True).counts["vqa_val questions"] == 3
    args = ["prepare", "vqa", "--train-questions", str(f["train2014_q"]), "--train-annotations", str(f["train2014_a"])]
    args += ["--val-questions", str(f["val2014_q"]), "--val-annotations", str(f["val2014_a"])]
    assert main([*args, "--minival", str(f["minival"]), "--out", str(tmp_path / "cli")]) == 0
    assert "vqa_minival questions: 2" in capsys.readouterr().out
    assert main([*args, "--image-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "cli2")]) == 2
    assert "image root is not a directory" in capsys.readouterr().err


# --- prepare-images --------------------------------------------------------------------------------------
def test_release_size():
    assert release_size(640, 480) == (298, 224)  # int(224 * 4 / 3) = 298
    assert release_size(480, 640) == (224, 298)
    assert release_size(500, 333) == (336, 224)  # truncated, not rounded: 224 * 500 / 333 = 336.3
    assert release_size(100, 100) == (224, 224)  # small images are enlarged too, as in the release
    assert release_size(300, 301, size=360) == (360, 361)


def test_prepare_images(tmp_path, capsys):
    src = tmp_path / "src"
    (src / "train2014").mkdir(parents=True)
    Image.new("RGB", (640, 480), (200, 10, 10)).save(src / "train2014" / "a.jpg")
    Image.new("RGB", (120, 300), (10, 200, 10)).save(src / "b.png")
    (src / "broken.jpg").write_bytes(b"not an image")
    summary = prepare_images(src, tmp_path / "dst", workers=1, progress=False)
    assert sorted(Path(p).name for p in summary.done) == ["a.jpg", "b.png"]
    with Image.open(tmp_path / "dst" / "train2014" / "a.jpg") as a:
        assert a.size == (298, 224) and a.format == "JPEG"
    with Image.open(tmp_path / "dst" / "b.png") as b:
        assert b.size == (224, 560) and b.format == "PNG"
    # as the release: an unreadable file is copied unchanged; here it is also named in the summary
    assert (tmp_path / "dst" / "broken.jpg").read_bytes() == b"not an image"
    assert list(summary.copied) == [str(src / "broken.jpg")] and "broken.jpg" in summary.text()
    again = prepare_images(src, tmp_path / "dst", workers=1, progress=False)
    assert len(again.skipped) == 3 and not again.done  # resumable
    with pytest.raises(FileNotFoundError, match="source folder not found"):
        prepare_images(tmp_path / "nowhere", tmp_path / "dst")
    assert main(["prepare-images", str(src), str(tmp_path / "dst2"), "--workers", "2"]) == 0
    assert "2 resized" in capsys.readouterr().out


def test_prepare_images_format_follows_the_file_name(tmp_path):
    """As the release's `save(output_path)`: a PNG named .jpg comes out as a JPEG."""
    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (300, 400), (1, 2, 3)).save(src / "really_png.jpg", format="PNG")
    summary = prepare_images(src, tmp_path / "dst", workers=1, progress=False)
    assert len(summary.done) == 1
    with Image.open(tmp_path / "dst" / "really_png.jpg") as out:
        assert out.format == "JPEG" and out.size == (224, 298)
