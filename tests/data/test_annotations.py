"""Every annotation format of the release, valid and broken."""

from __future__ import annotations

import json

import pytest

from singularity_vl.data.annotations import (
    AnnotationError,
    CorpusSpec,
    answer_weights,
    load_answer_list,
    load_caption_corpora,
    load_mc,
    load_qa,
    load_retrieval_eval,
)
from singularity_vl.data.datasets import CaptionTrainDataset
from singularity_vl.data.transforms import TrainTransform


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return str(path)


def test_pretrain_corpora_image_and_video(tmp_path):
    img = _write(tmp_path, "coco.json", [{"image": "a.jpg", "caption": "A Dog!"}, {"image": "b.jpg", "caption": "cat"}])
    vid = _write(tmp_path, "webvid.json", [{"video": "v/1.mp4", "caption": ["First.", "second"]}])
    samples = load_caption_corpora([[img, str(tmp_path / "img")], [vid, str(tmp_path / "vid"), "video"]])
    assert [s.media_type for s in samples] == ["image", "image", "video"]
    assert samples[0].media == str(tmp_path / "img" / "a.jpg") and samples[0].captions == ["a dog"]
    assert samples[2].captions == ["first", "second"]
    assert samples[2].match_key == str(tmp_path / "vid" / "v" / "1.mp4")


def test_match_keys_follow_the_file_not_its_name(tmp_path):
    """Only entries showing the same file are each other's positives: `a/clip.mp4` and `b/clip.mp4` are
    not, nor the same relative name in two corpora; the same file written two ways is."""
    webvid = _write(
        tmp_path,
        "webvid.json",
        [
            {"video": "a/clip.mp4", "caption": "a dog runs"},
            {"video": "b/clip.mp4", "caption": "a cat sleeps"},
            {"video": "a/./clip.mp4", "caption": "a brown dog"},
        ],
    )
    other = _write(tmp_path, "other.json", [{"video": "a/clip.mp4", "caption": "a car"}])
    samples = load_caption_corpora([[webvid, str(tmp_path / "webvid"), "video"], [other, str(tmp_path / "o"), "video"]])
    dataset = CaptionTrainDataset(samples, TrainTransform(32))
    assert dataset.match_ids == [0, 1, 0, 2]
    # SSv2-template style: one caption, many videos; the caption is the key
    ssv2 = _write(tmp_path, "t.json", [{"video": "1.webm", "caption": "x"}, {"video": "2.webm", "caption": "x"}])
    samples = load_caption_corpora([[ssv2, str(tmp_path), "video"]], multi_video_gt=True)
    assert CaptionTrainDataset(samples, TrainTransform(32)).match_ids == [0, 0]


def test_video_entries_may_use_the_image_key(tmp_path):
    f = _write(tmp_path, "msrvtt.json", [{"image": "x.mp4", "caption": "c"}])
    assert load_caption_corpora([[f, "/data", "video"]])[0].media == "/data/x.mp4"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([{"caption": "c"}], "entry 0: missing key 'video'"),
        ([{"video": "a.mp4"}], "entry 0: missing key 'caption'"),
        ([{"video": "a.mp4", "caption": 3}], "'caption' must be a string"),
        ([{"video": "a.mp4", "caption": "ok"}, {"video": 5, "caption": "c"}], "entry 1: 'video' must be a non-empty"),
        ([{"video": "../../etc/passwd", "caption": "c"}], "outside the media root"),
        ([{"video": "/abs.mp4", "caption": "c"}], "outside the media root"),
        ({"video": "a"}, "expected a JSON list"),
        ("[{", "invalid JSON at line 1"),
        (["str"], "entry 0: expected an object"),
    ],
)
def test_broken_entries_name_file_and_entry(tmp_path, data, message):
    f = _write(tmp_path, "bad.json", data)
    with pytest.raises(AnnotationError, match=message) as err:
        load_caption_corpora([[f, str(tmp_path), "video"]])
    assert "bad.json" in str(err.value)


def test_missing_file_and_bad_spec(tmp_path):
    with pytest.raises(AnnotationError, match="not found"):
        load_caption_corpora([[str(tmp_path / "nope.json"), "/r", "video"]])
    with pytest.raises(AnnotationError, match="media type"):
        CorpusSpec.parse(["a.json", "/r", "audio"])


def test_retrieval_eval_multi_text(tmp_path):
    f = _write(
        tmp_path, "coco_test.json", [{"image": "a.jpg", "caption": ["x", "y"]}, {"image": "b.jpg", "caption": "z"}]
    )
    ev = load_retrieval_eval([f, "/r"])
    assert ev.texts == ["x", "y", "z"]
    assert ev.text_to_media == [[0], [0], [1]] and ev.media_to_text == [[0, 1], [2]]


def test_retrieval_eval_multi_video_ssv2(tmp_path):
    f = _write(
        tmp_path,
        "ssv2_tpl.json",
        [
            {"video": ["1.webm", "2.webm"], "caption": "Pushing [something] from left to right"},
            {"video": ["3.webm"], "caption": "Throwing [something]"},
        ],
    )
    ev = load_retrieval_eval([f, "/r", "video"], multi_video_gt=True)
    assert ev.texts == ["pushing [something] from left to right", "throwing [something]"]
    assert ev.text_to_media == [[0, 1], [2]] and ev.media_to_text == [[0], [0], [1]]
    assert ev.media[1] == "/r/2.webm"


def test_retrieval_eval_paragraph(tmp_path):
    f = _write(tmp_path, "didemo.json", [{"video": "a.mp4", "caption": ["A man enters.", "He sits."]}])
    ev = load_retrieval_eval([f, "/r", "video"], paragraph=True)
    assert ev.texts == ["a man enters he sits"] and ev.media_to_text == [[0]]


def test_mc(tmp_path):
    f = _write(tmp_path, "mc.json", [{"video": "a.mp4", "caption": ["o1", "o2", "o3", "o4", "o5"], "answer": 2}])
    item = load_mc([f, "/r", "video"])[0]
    assert item.answer == 2 and len(item.options) == 5
    bad = _write(tmp_path, "mc_bad.json", [{"video": "a.mp4", "caption": ["o1", "o2"], "answer": 7}])
    with pytest.raises(AnnotationError, match="entry 0: 'answer' must be an option index"):
        load_mc([bad, "/r", "video"])


def test_qa_and_answer_weights(tmp_path):
    f = _write(
        tmp_path,
        "qa.json",
        [
            {"video": "a.mp4", "question": "What is it?", "answer": ["dog", "dog", "cat"], "question_id": 7},
            {"video": "b.mp4", "question": "Who?", "answer": "man", "question_id": 8},
        ],
    )
    items = load_qa([f, "/r", "video"])
    assert items[0].question == "what is it" and items[0].answers == ["dog", "cat"]
    assert items[0].weights == pytest.approx([2 / 3, 1 / 3]) and items[0].question_id == 7
    assert items[1].answers == ["man"] and items[1].weights == [1.0]
    assert answer_weights(["a"]) == (["a"], [1.0])
    bad = _write(tmp_path, "qa_bad.json", [{"video": "a.mp4", "question": "q", "answer": [1]}])
    with pytest.raises(AnnotationError, match="entry 0: 'answer'"):
        load_qa([bad, "/r", "video"])
    answers = _write(tmp_path, "answers.json", ["yes", "no"])
    assert load_answer_list(answers) == ["yes", "no"]
    with pytest.raises(AnnotationError, match="entry 1"):
        load_answer_list(_write(tmp_path, "a2.json", ["yes", 3]))
