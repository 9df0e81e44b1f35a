"""ActivityNet Captions paragraph retrieval (train, val_1) and ActivityNet-QA from their published files."""

from __future__ import annotations

from pathlib import Path

from singularity_vl.data.converters.common import (
    ConvertError,
    Summary,
    VideoCheck,
    answer_list,
    field_of,
    read_json,
    video_file,
    write_outputs,
)


def _video_name(video_id: str, ext: str) -> str:
    """ActivityNet files are named `v_<YouTube id>`; ActivityNet-QA's `video_name` omits the `v_`."""
    return video_file(video_id if video_id.startswith("v_") else "v_" + video_id, ext)


def build_anet_ret(
    data_dir: str | Path,
    out: str | Path,
    video_root: str | Path | None = None,
    video_ext: str = ".mp4",
    skip_missing: bool = False,
) -> Summary:
    """anet_ret_train.json and anet_ret_val_1.json: `{"video", "caption": [sentences by start time]}`,
    from ActivityNet Captions' `train.json` and `val_1.json`."""
    summary = Summary("anet-ret")
    check = VideoCheck(video_root, skip_missing, summary)
    outputs = {}
    for split in ("train", "val_1"):
        path = Path(data_dir) / f"{split}.json"
        entries = []
        for vid, e in read_json(path, dict).items():
            where = f"{path}: {vid}"
            sentences = field_of(e, "sentences", where, list)
            stamps = field_of(e, "timestamps", where, list)
            if len(stamps) != len(sentences) or not all(isinstance(s, str) for s in sentences):
                raise ConvertError(f"{where}: 'sentences' must be strings, one per 'timestamps' segment")
            order = sorted(range(len(sentences)), key=lambda k: (float(stamps[k][0]), k))
            name = _video_name(vid, video_ext)
            if check.exists(name):
                entries.append({"video": name, "caption": [" ".join(sentences[k].split()) for k in order]})
        outputs[f"anet_ret_{split}.json"] = entries
        summary.counts[f"{split} videos"] = len(entries)
    check.finish()
    return write_outputs(out, outputs, summary)


def build_anet_qa(
    data_dir: str | Path,
    out: str | Path,
    video_root: str | Path | None = None,
    video_ext: str = ".mp4",
    num_answers: int | None = 1500,
    skip_missing: bool = False,
) -> Summary:
    """anet_qa_{train,val,test}.json and anet_qa_answer_list.json from ActivityNet-QA's
    `{split}_q.json` (questions) and `{split}_a.json` (answers), joined on `question_id`."""
    summary = Summary("anet-qa")
    check = VideoCheck(video_root, skip_missing, summary)
    outputs: dict[str, list] = {}
    for split in ("train", "val", "test"):
        q_path, a_path = Path(data_dir) / f"{split}_q.json", Path(data_dir) / f"{split}_a.json"
        answers = {}
        for i, a in enumerate(read_json(a_path, list)):
            where = f"{a_path}: entry {i}"
            answers[str(field_of(a, "question_id", where, (str, int)))] = field_of(a, "answer", where)
        items = []
        for i, q in enumerate(read_json(q_path, list)):
            where = f"{q_path}: entry {i}"
            qid = str(field_of(q, "question_id", where, (str, int)))
            if qid not in answers:
                raise ConvertError(f"{where}: question {qid!r} has no answer in {a_path}")
            name = _video_name(field_of(q, "video_name", where), video_ext)
            if check.exists(name):
                items.append(
                    {
                        "video": name,
                        "question": field_of(q, "question", where),
                        "answer": answers[qid],
                        "question_id": qid,
                    }
                )
        outputs[f"anet_qa_{split}.json"] = items
        summary.counts[f"{split} questions"] = len(items)
    check.finish()
    outputs["anet_qa_answer_list.json"] = answer_list([e["answer"] for e in outputs["anet_qa_train.json"]], num_answers)
    return write_outputs(out, outputs, summary)
