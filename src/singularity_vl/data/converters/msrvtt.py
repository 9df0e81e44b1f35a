"""MSRVTT retrieval (train 9k / 7k, test 1k-A), MSRVTT-QA and MSRVTT-MC from their published files.

Retrieval captions come from MSR-VTT's `train_val_videodatainfo.json` / `test_videodatainfo.json` (or
their merge `MSRVTT_data.json`); the splits from `MSRVTT_train.9k.csv`, `MSRVTT_train.7k.csv` and
`MSRVTT_JSFUS_test.csv` (the 1k-A test, one caption per video). QA: `train_qa.json`, `val_qa.json`,
`test_qa.json` of Xu et al. (2017). Multiple choice: JSFusion's `MSRVTT_MC_test.csv`."""

from __future__ import annotations

from pathlib import Path

from singularity_vl.data.converters.common import (
    ConvertError,
    Summary,
    VideoCheck,
    answer_list,
    field_of,
    read_csv,
    read_json,
    video_file,
    write_outputs,
)


def _captions(datainfo: list[str | Path]) -> dict[str, list[str]]:
    """video id -> its captions (sentence order) from one or more `*videodatainfo.json` files."""
    caps: dict[str, list[tuple[int, str]]] = {}
    for path in datainfo:
        data = read_json(path, dict)
        sentences = data.get("sentences")
        if not isinstance(sentences, list):
            raise ConvertError(f"{path}: missing list 'sentences' (expected MSR-VTT videodatainfo JSON)")
        for i, s in enumerate(sentences):
            where = f"{path}: sentences[{i}]"
            vid = field_of(s, "video_id", where)
            cap = field_of(s, "caption", where)
            sen_id = s.get("sen_id", i)
            caps.setdefault(vid, []).append((int(sen_id) if str(sen_id).isdigit() else i, " ".join(cap.split())))
    return {v: [c for _, c in sorted(items)] for v, items in caps.items()}


def build_msrvtt_ret(
    datainfo: list[str | Path],
    train9k: str | Path,
    test1k: str | Path,
    out: str | Path,
    train7k: str | Path | None = None,
    video_root: str | Path | None = None,
    video_ext: str = ".mp4",
    skip_missing: bool = False,
) -> Summary:
    """msrvtt_ret_train9k.json (and _train7k): one entry per (video, caption); msrvtt_test1k.json: the
    1k-A test's one caption per video."""
    summary = Summary("msrvtt-ret")
    check = VideoCheck(video_root, skip_missing, summary)
    captions = _captions(datainfo)
    outputs: dict[str, list[dict]] = {}
    splits = {"msrvtt_ret_train9k.json": train9k}
    if train7k is not None:
        splits["msrvtt_ret_train7k.json"] = train7k
    for name, csv_path in splits.items():
        entries = []
        for i, row in enumerate(read_csv(csv_path, ("video_id",))):
            vid = row["video_id"].strip()
            if vid not in captions:
                raise ConvertError(f"{csv_path}: line {i + 2}: video {vid!r} has no captions in the videodatainfo")
            if check.exists(video_file(vid, video_ext)):
                entries += [{"video": video_file(vid, video_ext), "caption": c} for c in captions[vid]]
        outputs[name] = entries
    test = []
    for row in read_csv(test1k, ("video_id", "sentence")):
        vid = row["video_id"].strip()
        if check.exists(video_file(vid, video_ext)):
            test.append({"video": video_file(vid, video_ext), "caption": " ".join(row["sentence"].split())})
    outputs["msrvtt_test1k.json"] = test
    check.finish()
    summary.counts = {f"{k} videos": len({e["video"] for e in v}) for k, v in outputs.items()}
    return write_outputs(out, outputs, summary)


def build_msrvtt_qa(
    qa_dir: str | Path,
    out: str | Path,
    video_root: str | Path | None = None,
    video_ext: str = ".mp4",
    num_answers: int | None = 1500,
    skip_missing: bool = False,
) -> Summary:
    """msrvtt_qa_{train,val,test}.json and msrvtt_qa_answer_list.json (the most frequent train answers)."""
    summary = Summary("msrvtt-qa")
    check = VideoCheck(video_root, skip_missing, summary)
    outputs: dict[str, list] = {}
    for split in ("train", "val", "test"):
        path = Path(qa_dir) / f"{split}_qa.json"
        items = []
        for i, e in enumerate(read_json(path, list)):
            where = f"{path}: entry {i}"
            vid = field_of(e, "video_id", where, (int, str))
            name = video_file(vid if str(vid).startswith("video") else f"video{vid}", video_ext)
            item = {
                "video": name,
                "question": field_of(e, "question", where),
                "answer": field_of(e, "answer", where),
                "question_id": e.get("id", i),
            }
            if check.exists(name):
                items.append(item)
        outputs[f"msrvtt_qa_{split}.json"] = items
    check.finish()
    outputs["msrvtt_qa_answer_list.json"] = answer_list(
        [e["answer"] for e in outputs["msrvtt_qa_train.json"]], num_answers
    )
    summary.counts = {f"{s} questions": len(outputs[f"msrvtt_qa_{s}.json"]) for s in ("train", "val", "test")}
    return write_outputs(out, outputs, summary)


def build_msrvtt_mc(
    mc_csv: str | Path,
    out: str | Path,
    video_root: str | Path | None = None,
    video_ext: str = ".mp4",
    skip_missing: bool = False,
) -> Summary:
    """msrvtt_mc_test.json: `{"video", "caption": [5 options], "answer": index}`; the CSV's `answer` is
    the 0-based index of the right option (or its text)."""
    summary = Summary("msrvtt-mc")
    check = VideoCheck(video_root, skip_missing, summary)
    options_cols = ("a1", "a2", "a3", "a4", "a5")
    items = []
    for i, row in enumerate(read_csv(mc_csv, ("video_id", *options_cols, "answer"))):
        options = [" ".join(row[c].split()) for c in options_cols]
        raw = row["answer"].strip()
        if raw.isdigit() and int(raw) < len(options):
            answer = int(raw)
        elif " ".join(raw.split()) in options:
            answer = options.index(" ".join(raw.split()))
        else:
            raise ConvertError(f"{mc_csv}: line {i + 2}: answer {raw!r} is neither an option index 0-4 nor an option")
        name = video_file(row["video_id"].strip(), video_ext)
        if check.exists(name):
            items.append({"video": name, "caption": options, "answer": answer})
    check.finish()
    summary.counts = {"questions": len(items)}
    return write_outputs(out, {"msrvtt_mc_test.json": items}, summary)
