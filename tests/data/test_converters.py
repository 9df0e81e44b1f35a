"""Dataset converters on small fixtures written in each dataset's own format: counts, ids, ground
truths, loading through our readers, broken entries and missing videos."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from singularity_vl.cli import main
from singularity_vl.data.annotations import load_caption_corpora, load_mc, load_qa, load_retrieval_eval
from singularity_vl.data.converters.activitynet import build_anet_qa, build_anet_ret
from singularity_vl.data.converters.common import ConvertError
from singularity_vl.data.converters.didemo import build_didemo
from singularity_vl.data.converters.msrvtt import build_msrvtt_mc, build_msrvtt_qa, build_msrvtt_ret
from singularity_vl.data.converters.ssv2 import build_ssv2, normalise_template


def _json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _touch(root: Path, names) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for n in names:
        (root / n).write_bytes(b"")
    return root


# --- SSv2 --------------------------------------------------------------------------------------
TEMPLATES = [
    "Pushing [something] from left to right",
    "Putting [something] on [a flat surface]",
    "Dropping [something]",
]


def _ssv2_fixture(tmp_path: Path, per_template_val: int = 4) -> tuple[Path, Path, Path]:
    labels = _json(tmp_path / "labels.json", {normalise_template(t): str(i) for i, t in enumerate(TEMPLATES)})
    train, val, k = [], [], 0
    for t in TEMPLATES:
        for split, n in ((train, 5), (val, per_template_val)):
            for _ in range(n):
                k += 1
                split.append(
                    {"id": str(1000 + k), "label": f"{t.lower()} number {k}", "template": t, "placeholders": ["x"]}
                )
    return labels, _json(tmp_path / "train.json", train), _json(tmp_path / "val.json", val)


def test_normalise_template():
    assert normalise_template("Putting [something] on [a flat surface]") == "Putting something on a flat surface"


def test_ssv2_counts_ground_truths_and_readers(tmp_path):
    labels, train, val = _ssv2_fixture(tmp_path)
    out = tmp_path / "out"
    summary = build_ssv2(labels, train, val, out, seed=3, per_template=2)
    assert summary.counts == {"templates": 3, "train videos": 15, "validation videos": 12, "test videos": 6}
    tmpl = json.loads((out / "ssv2_ret_template_val_small.json").read_text())
    assert len(tmpl) == 3 and all(len(e["video"]) == 2 for e in tmpl)
    assert {e["caption"] for e in tmpl} == {normalise_template(t) for t in TEMPLATES}
    val_ids = {e["id"]: e for e in json.loads(val.read_text())}
    for e in tmpl:  # every ground-truth video is a validation video of that template
        for v in e["video"]:
            assert normalise_template(val_ids[v.removesuffix(".webm")]["template"]) == e["caption"]
    ev = load_retrieval_eval([out / "ssv2_ret_template_val_small.json", tmp_path, "video"], multi_video_gt=True)
    assert len(ev.texts) == 3 and len(ev.media) == 6 and all(len(g) == 2 for g in ev.text_to_media)
    label = load_retrieval_eval([out / "ssv2_ret_label_val_small.json", tmp_path, "video"])
    assert len(label.texts) == 6 and sorted(label.media) == sorted(ev.media)  # same test videos
    train_samples = load_caption_corpora(
        [[out / "ssv2_ret_template_train.json", tmp_path, "video"]], multi_video_gt=True
    )
    assert len(train_samples) == 15 and len({s.match_key for s in train_samples}) == 3


def test_ssv2_is_deterministic_given_the_seed(tmp_path):
    labels, train, val = _ssv2_fixture(tmp_path)
    build_ssv2(labels, train, val, tmp_path / "a", seed=1, per_template=2)
    build_ssv2(labels, train, val, tmp_path / "b", seed=1, per_template=2)
    name = "ssv2_ret_label_val_small.json"
    assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    picks = set()
    for seed in range(6):
        build_ssv2(labels, train, val, tmp_path / f"s{seed}", seed=seed, per_template=2)
        picks.add((tmp_path / f"s{seed}" / name).read_text())
    assert len(picks) > 1  # the seed does choose the videos


def test_ssv2_broken_entry_names_file_and_key(tmp_path):
    labels, train, val = _ssv2_fixture(tmp_path)
    entries = json.loads(train.read_text())
    del entries[4]["template"]
    train.write_text(json.dumps(entries))
    with pytest.raises(ConvertError, match=r"train.json: entry 4: missing key 'template'"):
        build_ssv2(labels, train, val, tmp_path / "out", per_template=2)
    entries[4]["template"] = "Juggling [something]"
    train.write_text(json.dumps(entries))
    with pytest.raises(ConvertError, match="not in the labels file"):
        build_ssv2(labels, train, val, tmp_path / "out", per_template=2)


def test_ssv2_missing_video_is_an_error_or_skipped(tmp_path):
    labels, train, val = _ssv2_fixture(tmp_path)
    ids = [e["id"] for e in json.loads(train.read_text()) + json.loads(val.read_text())]
    root = _touch(tmp_path / "videos", [f"{i}.webm" for i in ids[1:]])  # the first train video is missing
    with pytest.raises(ConvertError, match=rf"1 video\(s\) not found .*{ids[0]}.webm"):
        build_ssv2(labels, train, val, tmp_path / "out", video_root=root, per_template=2)
    assert not (tmp_path / "out").exists()  # nothing written
    summary = build_ssv2(labels, train, val, tmp_path / "out", video_root=root, per_template=2, skip_missing=True)
    assert summary.counts["train videos"] == 14 and summary.missing_videos == [f"{ids[0]}.webm"]


def test_ssv2_too_few_validation_videos(tmp_path):
    labels, train, val = _ssv2_fixture(tmp_path, per_template_val=1)
    with pytest.raises(ConvertError, match="fewer than 2 validation videos"):
        build_ssv2(labels, train, val, tmp_path / "out", per_template=2)


def test_prepare_ssv2_cli(tmp_path, capsys):
    labels, train, val = _ssv2_fixture(tmp_path)
    args = ["prepare", "ssv2", "--labels", str(labels), "--train", str(train), "--validation", str(val)]
    assert main([*args, "--out", str(tmp_path / "out"), "--per-template", "2", "--video-ext", "mp4"]) == 0
    assert "test videos: 6" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "ssv2_ret_label_train.json").read_text())[0]["video"].endswith(".mp4")
    bad = main([*args, "--out", str(tmp_path / "o2"), "--video-root", str(tmp_path / "nowhere")])
    assert bad == 2 and "video root is not a directory" in capsys.readouterr().err


# --- MSRVTT ------------------------------------------------------------------------------------
def _msrvtt_fixture(tmp_path: Path) -> dict[str, Path]:
    videos = [f"video{i}" for i in range(6)]
    sentences = [
        {"video_id": v, "caption": f"caption {k} of {v}", "sen_id": k * 10 + i}
        for i, v in enumerate(videos)
        for k in range(3)
    ]
    info = _json(tmp_path / "MSRVTT_data.json", {"videos": [{"video_id": v} for v in videos], "sentences": sentences})
    return {
        "info": info,
        "train9k": _csv(tmp_path / "MSRVTT_train.9k.csv", ["video_id"], [[v] for v in videos[:4]]),
        "train7k": _csv(tmp_path / "MSRVTT_train.7k.csv", ["video_id"], [[v] for v in videos[:3]]),
        "test1k": _csv(
            tmp_path / "MSRVTT_JSFUS_test.csv",
            ["key", "vid_key", "video_id", "sentence"],
            [[f"ret{i}", f"msr{i}", v, f"a test sentence for {v}"] for i, v in enumerate(videos[4:])],
        ),
    }


def test_msrvtt_retrieval(tmp_path):
    f = _msrvtt_fixture(tmp_path)
    out = tmp_path / "out"
    build_msrvtt_ret([f["info"]], f["train9k"], f["test1k"], out, train7k=f["train7k"])
    train = json.loads((out / "msrvtt_ret_train9k.json").read_text())
    assert len(train) == 12 and train[0] == {"video": "video0.mp4", "caption": "caption 0 of video0"}
    assert len(json.loads((out / "msrvtt_ret_train7k.json").read_text())) == 9
    ev = load_retrieval_eval([out / "msrvtt_test1k.json", tmp_path, "video"])
    assert ev.texts == ["a test sentence for video4", "a test sentence for video5"]
    assert ev.text_to_media == [[0], [1]]
    samples = load_caption_corpora([[out / "msrvtt_ret_train9k.json", tmp_path, "video"]])
    assert len(samples) == 12


def test_msrvtt_retrieval_errors(tmp_path):
    f = _msrvtt_fixture(tmp_path)
    _csv(f["train9k"], ["video_id"], [["video0"], ["video99"]])
    with pytest.raises(ConvertError, match=r"MSRVTT_train.9k.csv: line 3: video 'video99' has no captions"):
        build_msrvtt_ret([f["info"]], f["train9k"], f["test1k"], tmp_path / "out")
    _csv(f["test1k"], ["key", "video_id"], [["a", "video4"]])
    with pytest.raises(ConvertError, match=r"missing column\(s\) \['sentence'\]"):
        build_msrvtt_ret([f["info"]], f["train7k"], f["test1k"], tmp_path / "out")


def test_msrvtt_qa(tmp_path):
    qa = tmp_path / "qa"
    for split, n in (("train", 5), ("val", 2), ("test", 3)):
        _json(
            qa / f"{split}_qa.json",
            [
                {"id": k, "video_id": k % 3, "question": f"what is {k}?", "answer": "man" if k % 2 else "dog"}
                for k in range(n)
            ],
        )
    root = _touch(tmp_path / "videos", ["video0.mp4", "video1.mp4"])  # video2 missing
    with pytest.raises(ConvertError, match="video2.mp4"):
        build_msrvtt_qa(qa, tmp_path / "out", video_root=root)
    summary = build_msrvtt_qa(qa, tmp_path / "out", video_root=root, skip_missing=True)
    assert summary.counts == {"train questions": 4, "val questions": 2, "test questions": 2}
    items = load_qa([tmp_path / "out" / "msrvtt_qa_train.json", root, "video"])
    assert [it.question_id for it in items] == [0, 1, 3, 4] and items[1].answers == ["man"]
    assert json.loads((tmp_path / "out" / "msrvtt_qa_answer_list.json").read_text()) == ["dog", "man"]


def test_msrvtt_mc(tmp_path):
    header = ["key", "vid_key", "video_id", "a1", "a2", "a3", "a4", "a5", "answer"]
    rows = [
        [f"mc{i}", f"msr{i}", f"video{i}", "o one", "o two", "o three", "o four", "o five", str(i % 5)]
        for i in range(4)
    ]
    path = _csv(tmp_path / "MSRVTT_MC_test.csv", header, rows)
    build_msrvtt_mc(path, tmp_path / "out")
    items = load_mc([tmp_path / "out" / "msrvtt_mc_test.json", tmp_path, "video"])
    assert [it.answer for it in items] == [0, 1, 2, 3] and items[0].options[4] == "o five"
    rows[2][-1] = "7"
    _csv(path, header, rows)
    with pytest.raises(ConvertError, match="line 4: answer '7'"):
        build_msrvtt_mc(path, tmp_path / "out")


# --- DiDeMo, ActivityNet -------------------------------------------------------------------------
def test_didemo_paragraphs_in_time_order(tmp_path):
    d = tmp_path / "didemo"
    for split in ("train", "val", "test"):
        _json(
            d / f"{split}_data.json",
            [
                {
                    "annotation_id": 1,
                    "video": f"{split}_a.mov",
                    "description": "second thing",
                    "times": [[2, 3], [2, 2]],
                },
                {"annotation_id": 2, "video": f"{split}_a.mov", "description": "first  thing", "times": [[0, 1]]},
                {"annotation_id": 3, "video": f"{split}_b.mov", "description": "only thing", "times": [[4, 5]]},
            ],
        )
    build_didemo(d, tmp_path / "out")
    test = json.loads((tmp_path / "out" / "didemo_ret_test.json").read_text())
    assert test[0] == {"video": "test_a.mp4", "caption": ["first thing", "second thing"]}
    ev = load_retrieval_eval([tmp_path / "out" / "didemo_ret_test.json", tmp_path, "video"], paragraph=True)
    assert ev.texts == ["first thing second thing", "only thing"]
    broken = json.loads((d / "val_data.json").read_text())
    broken[2]["times"] = "soon"
    _json(d / "val_data.json", broken)
    with pytest.raises(ConvertError, match=r"val_data.json: entry 2: 'times'"):
        build_didemo(d, tmp_path / "out")


def test_anet_captions(tmp_path):
    d = tmp_path / "anet"
    for split in ("train", "val_1"):
        _json(
            d / f"{split}.json",
            {
                "v_aaa": {"duration": 10, "timestamps": [[5, 9], [0, 4]], "sentences": ["later.", " early."]},
                "v_bbb": {"duration": 8, "timestamps": [[0, 8]], "sentences": ["all of it."]},
            },
        )
    root = _touch(tmp_path / "videos", ["v_aaa.mp4"])
    summary = build_anet_ret(d, tmp_path / "out", video_root=root, skip_missing=True)
    assert summary.counts == {"train videos": 1, "val_1 videos": 1} and summary.missing_videos == ["v_bbb.mp4"]
    ev = load_retrieval_eval([tmp_path / "out" / "anet_ret_val_1.json", root, "video"], paragraph=True)
    assert ev.texts == ["early later"]  # pre_text drops punctuation
    _json(d / "train.json", {"v_aaa": {"timestamps": [[0, 1]], "sentences": ["a", "b"]}})
    with pytest.raises(ConvertError, match=r"train.json: v_aaa: 'sentences' must be strings, one per"):
        build_anet_ret(d, tmp_path / "out2")


def test_anet_qa(tmp_path):
    d = tmp_path / "anetqa"
    for split in ("train", "val", "test"):
        qs = [{"video_name": f"vid{k % 2}", "question_id": f"vid{k % 2}_{k}", "question": f"q {k}?"} for k in range(4)]
        _json(d / f"{split}_q.json", qs)
        _json(
            d / f"{split}_a.json",
            [
                {"question_id": q["question_id"], "answer": "yes" if k < 3 else "no", "type": 3}
                for k, q in enumerate(qs)
            ],
        )
    build_anet_qa(d, tmp_path / "out")
    items = load_qa([tmp_path / "out" / "anet_qa_val.json", tmp_path, "video"])
    assert len(items) == 4 and items[0].media.endswith("v_vid0.mp4") and items[3].answers == ["no"]
    assert json.loads((tmp_path / "out" / "anet_qa_answer_list.json").read_text()) == ["yes", "no"]
    _json(d / "test_a.json", [])
    with pytest.raises(ConvertError, match=r"test_q.json: entry 0: question 'vid0_0' has no answer"):
        build_anet_qa(d, tmp_path / "out")


def test_prepare_help_names_the_source_files(capsys):
    with pytest.raises(SystemExit):
        main(["prepare", "msrvtt-ret", "--help"])
    text = capsys.readouterr().out
    assert "MSRVTT_JSFUS_test.csv" in text and "videodatainfo" in text


# --- a missing video and a broken entry for every converter ----------------------------------------
def test_missing_videos_named_or_skipped_for_every_converter(tmp_path):
    f = _msrvtt_fixture(tmp_path)
    root = _touch(tmp_path / "v", [f"video{i}.mp4" for i in range(6) if i != 4])  # video4 missing
    with pytest.raises(ConvertError, match=r"1 video\(s\) not found .*video4.mp4"):
        build_msrvtt_ret([f["info"]], f["train9k"], f["test1k"], tmp_path / "o1", video_root=root)
    s = build_msrvtt_ret([f["info"]], f["train9k"], f["test1k"], tmp_path / "o1", video_root=root, skip_missing=True)
    assert s.missing_videos == ["video4.mp4"] and s.files[str(tmp_path / "o1" / "msrvtt_test1k.json")] == 1

    header = ["key", "vid_key", "video_id", "a1", "a2", "a3", "a4", "a5", "answer"]
    mc = _csv(tmp_path / "mc.csv", header, [["k", "m", f"video{i}", "a", "b", "c", "d", "e", "0"] for i in (3, 4)])
    with pytest.raises(ConvertError, match="video4.mp4"):
        build_msrvtt_mc(mc, tmp_path / "o2", video_root=root)
    assert build_msrvtt_mc(mc, tmp_path / "o2", video_root=root, skip_missing=True).counts == {"questions": 1}

    d = tmp_path / "didemo"
    for split in ("train", "val", "test"):
        _json(
            d / f"{split}_data.json",
            [{"video": f"video{k}.mov", "description": "x", "times": [[0, 1]]} for k in (3, 4)],
        )
    with pytest.raises(ConvertError, match="video4.mp4"):
        build_didemo(d, tmp_path / "o3", video_root=root)
    assert build_didemo(d, tmp_path / "o3", video_root=root, skip_missing=True).counts["test videos"] == 1

    q = tmp_path / "anetqa"
    for split in ("train", "val", "test"):
        _json(q / f"{split}_q.json", [{"video_name": "zzz", "question_id": "z1", "question": "why?"}])
        _json(q / f"{split}_a.json", [{"question_id": "z1", "answer": "because"}])
    with pytest.raises(ConvertError, match="v_zzz.mp4"):
        build_anet_qa(q, tmp_path / "o4", video_root=root)


def test_msrvtt_qa_broken_entry(tmp_path):
    qa = tmp_path / "qa"
    for split in ("train", "val", "test"):
        _json(qa / f"{split}_qa.json", [{"id": 0, "video_id": 1, "question": "what?", "answer": "cat"}])
    _json(qa / "val_qa.json", [{"id": 0, "video_id": 1, "answer": "cat"}])
    with pytest.raises(ConvertError, match=r"val_qa.json: entry 0: missing key 'question'"):
        build_msrvtt_qa(qa, tmp_path / "out")
    (qa / "test_qa.json").write_text("[{")
    _json(qa / "val_qa.json", [{"id": 0, "video_id": 1, "question": "what?", "answer": "cat"}])
    with pytest.raises(ConvertError, match=r"test_qa.json: invalid JSON at line 1"):
        build_msrvtt_qa(qa, tmp_path / "out")
