"""VQA v2 (Goyal et al. 2017) from its published files: questions `v2_OpenEnded_mscoco_{split}_questions.json`
and annotations `v2_mscoco_{split}_annotations.json` (train2014, val2014), test questions
`v2_OpenEnded_mscoco_test-dev2015_questions.json` (or test2015).

Outputs, in the release's format (`{"image", "question", "answer": [the 10 annotators' answers],
"question_id", "question_type", "answer_type"}`, image paths `train2014/COCO_train2014_<id:012>.jpg`
relative to the COCO image folder): `vqa_train.json`; val2014 split into `vqa_minival.json` and
`vqa_valminusminival.json` by a list of minival question ids (`--minival`: a JSON list of ids, or of
entries with `question_id`, e.g. the release's own vqa_minival.json), or all of it as `vqa_val.json`
without one; `vqa_test.json` (no answers) and `vqa_answer_list.json`, the most frequent majority answers
(`multiple_choice_answer`) of train and val."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from singularity_vl.data.converters.common import (
    ConvertError,
    Summary,
    VideoCheck,
    answer_list,
    field_of,
    read_json,
    write_outputs,
)


def _image_path(subtype: str, image_id: int) -> str:
    return f"{subtype}/COCO_{subtype}_{image_id:012d}.jpg"


def _questions(path: str | Path) -> tuple[str, list[dict[str, Any]]]:
    """(data subtype, e.g. train2014, questions) of a questions file."""
    data = read_json(path, dict)
    questions = data.get("questions")
    if not isinstance(questions, list):
        raise ConvertError(f"{path}: missing list 'questions' (expected a VQA v2 questions file)")
    subtype = data.get("data_subtype")
    if not isinstance(subtype, str) or not subtype:
        raise ConvertError(f"{path}: missing 'data_subtype' (train2014, val2014, test2015, test-dev2015)")
    # test-dev questions point at test2015 images
    return ("test2015" if subtype.startswith("test") else subtype), questions


def _annotations(path: str | Path) -> dict[int, dict[str, Any]]:
    """question id -> {answers, multiple_choice_answer, question_type, answer_type}."""
    data = read_json(path, dict)
    anns = data.get("annotations")
    if not isinstance(anns, list):
        raise ConvertError(f"{path}: missing list 'annotations' (expected a VQA v2 annotations file)")
    out = {}
    for i, a in enumerate(anns):
        where = f"{path}: annotations[{i}]"
        qid = field_of(a, "question_id", where, int)
        answers = field_of(a, "answers", where, list)
        out[qid] = {
            "answer": [field_of(x, "answer", f"{where}: answers[{j}]") for j, x in enumerate(answers)],
            "multiple_choice_answer": field_of(a, "multiple_choice_answer", where),
            "question_type": a.get("question_type", ""),
            "answer_type": a.get("answer_type", ""),
        }
        if not out[qid]["answer"]:
            raise ConvertError(f"{where}: 'answers' is empty")
    return out


def _entries(
    questions_path: str | Path, annotations_path: str | Path | None, check: VideoCheck
) -> list[dict[str, Any]]:
    subtype, questions = _questions(questions_path)
    anns = _annotations(annotations_path) if annotations_path is not None else None
    out = []
    for i, q in enumerate(questions):
        where = f"{questions_path}: questions[{i}]"
        qid = field_of(q, "question_id", where, int)
        entry: dict[str, Any] = {
            "image": _image_path(subtype, field_of(q, "image_id", where, int)),
            "question": " ".join(field_of(q, "question", where).split()),
            "question_id": qid,
        }
        if anns is not None:
            if qid not in anns:
                raise ConvertError(f"{where}: question {qid} has no annotation in {annotations_path}")
            a = anns[qid]
            entry.update(
                answer=a["answer"],
                question_type=a["question_type"],
                answer_type=a["answer_type"],
                multiple_choice_answer=a["multiple_choice_answer"],
            )
        if check.exists(entry["image"]):
            out.append(entry)
    return out


def _minival_ids(path: str | Path) -> set[int]:
    ids = set()
    for i, e in enumerate(read_json(path, list)):
        qid = e if isinstance(e, int) else field_of(e, "question_id", f"{path}: entry {i}", int)
        ids.add(int(qid))
    return ids


def build_vqa(
    train_questions: str | Path,
    train_annotations: str | Path,
    val_questions: str | Path,
    val_annotations: str | Path,
    out: str | Path,
    test_questions: str | Path | None = None,
    minival: str | Path | None = None,
    num_answers: int | None = 3128,
    image_root: str | Path | None = None,
    skip_missing: bool = False,
) -> Summary:
    """Write the VQA v2 files (see the module docstring) under `out`."""
    summary = Summary("vqa", media="image")
    check = VideoCheck(image_root, skip_missing, summary)
    train = _entries(train_questions, train_annotations, check)
    val = _entries(val_questions, val_annotations, check)
    test = _entries(test_questions, None, check) if test_questions is not None else None
    check.finish()
    outputs: dict[str, list] = {"vqa_train.json": train}
    if minival is not None:
        ids = _minival_ids(minival)
        known = {e["question_id"] for e in val}
        unknown = sorted(ids - known)
        if unknown and not skip_missing:
            raise ConvertError(f"{minival}: {len(unknown)} question id(s) are not val2014 questions: {unknown[:5]}")
        outputs["vqa_minival.json"] = [e for e in val if e["question_id"] in ids]
        outputs["vqa_valminusminival.json"] = [e for e in val if e["question_id"] not in ids]
    else:
        outputs["vqa_val.json"] = val
    if test is not None:
        outputs["vqa_test.json"] = test
    majority = [e["multiple_choice_answer"] for e in train + val]
    outputs["vqa_answer_list.json"] = answer_list(majority, num_answers)
    summary.counts = {f"{k[:-5]} questions": len(v) for k, v in outputs.items() if k != "vqa_answer_list.json"}
    summary.counts["answers in the list"] = len(outputs["vqa_answer_list.json"])
    return write_outputs(out, outputs, summary)
