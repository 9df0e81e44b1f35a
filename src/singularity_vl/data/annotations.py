"""Readers for every annotation format of the release (JSON lists), with errors naming the file, the
entry index and what is wrong."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from singularity_vl.data.text import pre_text


class AnnotationError(ValueError):
    """A malformed annotation file or entry."""


@dataclass(frozen=True)
class CorpusSpec:
    """One dataset: the release's `[annotation file, media root, "image" | "video"]`."""

    annotation: Path
    media_root: Path
    media_type: str = "image"

    @classmethod
    def parse(cls, spec: Sequence[str] | CorpusSpec) -> CorpusSpec:
        if isinstance(spec, CorpusSpec):
            return spec
        if isinstance(spec, (str, Path)) or not 2 <= len(spec) <= 3:
            raise AnnotationError(f"dataset spec {spec!r}: expected [annotation.json, media_root, 'image'|'video']")
        media_type = spec[2] if len(spec) == 3 else "image"
        if media_type not in ("image", "video"):
            raise AnnotationError(f"dataset spec {spec!r}: media type must be 'image' or 'video'")
        return cls(Path(spec[0]), Path(spec[1]), media_type)


@dataclass
class MediaEntry:
    """One annotation entry with absolute media path(s) and its index in its file."""

    media: str | list[str]
    media_type: str
    source: str  # "file.json: entry N", for messages
    fields: dict[str, Any] = field(default_factory=dict)


def type_names(kind: type | tuple[type, ...]) -> str:
    """'list', or 'list or dict', for messages."""
    return kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)


def read_json(
    path: str | Path, kind: type | tuple[type, ...] = (list, dict), error: type[ValueError] = AnnotationError
) -> Any:
    """The parsed JSON file `path`, which must be a `kind`; failures raise `error` naming the file (and
    the line and column of a syntax error)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise error(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from e
    if not isinstance(data, kind):
        raise error(f"{path}: expected a JSON {type_names(kind)}, got {type(data).__name__}")
    return data


def load_json_list(path: str | Path) -> list[Any]:
    return read_json(path, list)


def _join(root: Path, rel: Any, where: str, key: str) -> str:
    if not isinstance(rel, str) or not rel:
        raise AnnotationError(f"{where}: {key!r} must be a non-empty string path, got {rel!r}")
    full = os.path.normpath(os.path.join(root, rel))
    root_n = os.path.normpath(root)
    if os.path.isabs(rel) or not (full == root_n or full.startswith(root_n + os.sep)):
        raise AnnotationError(f"{where}: path {rel!r} is outside the media root {root}")
    return full


def load_corpus(spec: Sequence[str] | CorpusSpec, required: Sequence[str] = ()) -> list[MediaEntry]:
    """Entries of one `[annotation, root, type]` dataset. The media key is `video` for video corpora
    (`image` also accepted: the release's README uses it); the path may be a list."""
    spec = CorpusSpec.parse(spec)
    out = []
    for i, entry in enumerate(load_json_list(spec.annotation)):
        where = f"{spec.annotation}: entry {i}"
        if not isinstance(entry, dict):
            raise AnnotationError(f"{where}: expected an object, got {type(entry).__name__}")
        keys = ("video", "image") if spec.media_type == "video" else ("image", "video")
        key = next((k for k in keys if k in entry), None)
        if key is None:
            raise AnnotationError(f"{where}: missing key {keys[0]!r}")
        raw = entry[key]
        if isinstance(raw, list):
            if not raw:
                raise AnnotationError(f"{where}: {key!r} is an empty list")
            media: str | list[str] = [_join(spec.media_root, r, where, key) for r in raw]
        else:
            media = _join(spec.media_root, raw, where, key)
        for req in required:
            if req not in entry:
                raise AnnotationError(f"{where}: missing key {req!r}")
        out.append(MediaEntry(media, spec.media_type, where, entry))
    return out


def _captions(entry: MediaEntry) -> list[str]:
    cap = entry.fields.get("caption")
    if isinstance(cap, str):
        return [cap]
    if isinstance(cap, list) and cap and all(isinstance(c, str) for c in cap):
        return cap
    raise AnnotationError(f"{entry.source}: 'caption' must be a string or a non-empty list of strings, got {cap!r}")


@dataclass
class CaptionSample:
    media: str | list[str]
    media_type: str
    captions: list[str]  # cleaned
    match_key: str  # samples sharing it are positives for each other (ITC targets, never ITM negatives)
    # the key is the caption (multi_video_gt): a caption rewritten by the flip's left/right swap changes it
    keyed_by_caption: bool = False


def load_caption_corpora(
    specs: Sequence[Sequence[str] | CorpusSpec],
    max_words: int | None = None,
    multi_video_gt: bool = False,
    paragraph: bool = False,
) -> list[CaptionSample]:
    """Pre-training / retrieval training pairs from several corpora. The match key is `media_key` (the
    caption itself when one caption has several videos, as SSv2-template)."""
    samples = []
    for spec in specs:
        for entry in load_corpus(spec, required=("caption",)):
            caps = [pre_text(c, max_words) for c in _captions(entry)]
            if paragraph:  # DiDeMo / ActivityNet: a video's captions joined into one paragraph
                caps = [" ".join(caps)]
            key = entry.fields["caption"] if multi_video_gt else media_key(entry.media)
            samples.append(CaptionSample(entry.media, entry.media_type, caps, str(key), multi_video_gt))
    return samples


def media_key(media: str | list[str]) -> str:
    """Which file a sample shows: its path under the media root, kept whole (with the root), so that
    entries naming the same file match and `a/clip.mp4` and `b/clip.mp4` (or the same name in two
    corpora) do not. (The release keyed on the file name alone, making such files each other's positives.)
    A list of frame images is keyed by its first frame."""
    return os.path.normpath(media if isinstance(media, str) else media[0])


@dataclass
class RetrievalEvalSet:
    """Texts and media of a retrieval test set with ground truths in both directions."""

    texts: list[str]
    media: list[str | list[str]]
    media_type: str
    text_to_media: list[list[int]]
    media_to_text: list[list[int]]


def load_retrieval_eval(
    spec: Sequence[str] | CorpusSpec,
    multi_video_gt: bool = False,
    paragraph: bool = False,
    max_words: int | None = None,
) -> RetrievalEvalSet:
    """Single or multiple ground truths per text or per video (SSv2: `multi_video_gt`, an entry's `video`
    is a list); `paragraph` (DiDeMo, ActivityNet) joins a video's captions into one query."""
    entries = load_corpus(spec, required=("caption",))
    texts: list[str] = []
    media: list[str | list[str]] = []
    t2m: list[list[int]] = []
    m2t: list[list[int]] = []
    for entry in entries:
        caps = [pre_text(c, max_words) for c in _captions(entry)]
        if paragraph:
            caps = [" ".join(caps)]
        if multi_video_gt:
            videos = entry.media if isinstance(entry.media, list) else [entry.media]
            if len(caps) != 1:
                raise AnnotationError(f"{entry.source}: multi-video ground truth needs one caption per entry")
            t = len(texts)
            texts.append(caps[0])
            t2m.append([])
            for v in videos:
                t2m[t].append(len(media))
                m2t.append([t])
                media.append(v)
        else:
            m = len(media)
            media.append(entry.media)
            m2t.append([])
            for c in caps:
                m2t[m].append(len(texts))
                t2m.append([m])
                texts.append(c)
    return RetrievalEvalSet(texts, media, CorpusSpec.parse(spec).media_type, t2m, m2t)


@dataclass
class MCItem:
    media: str
    options: list[str]
    answer: int


def load_mc(spec: Sequence[str] | CorpusSpec, max_words: int | None = None) -> list[MCItem]:
    """MSRVTT-MC: `{"video", "caption": [5 options], "answer": int}`."""
    items = []
    for entry in load_corpus(spec, required=("caption", "answer")):
        options = _captions(entry)
        ans = entry.fields["answer"]
        if not isinstance(ans, int) or not 0 <= ans < len(options):
            raise AnnotationError(
                f"{entry.source}: 'answer' must be an option index in [0, {len(options)}), got {ans!r}"
            )
        items.append(MCItem(str(entry.media), [pre_text(o, max_words) for o in options], ans))
    return items


@dataclass
class QAItem:
    media: str
    question: str
    answers: list[str]  # distinct answers
    weights: list[float]  # fraction of annotators giving each
    question_id: Any
    all_answers: list[str] = field(default_factory=list)  # every annotator's answer, repeats kept (VQA accuracy)
    answer_type: str = ""  # VQA: the annotation's answer_type (yes/no, number, other)


def answer_weights(answers: list[str]) -> tuple[list[str], list[float]]:
    """Distinct answers and their frequency among annotators (the release's `get_answer_weights`)."""
    if len(answers) == 1:
        return answers, [1.0]
    weights: dict[str, float] = {}
    for a in answers:
        weights[a] = weights.get(a, 0.0) + 1 / len(answers)
    return list(weights), list(weights.values())


def load_qa(spec: Sequence[str] | CorpusSpec, max_words: int | None = None) -> list[QAItem]:
    """QA: `{"video" (or "image"), "question", "answer": str or [str], "question_id"}`. The question is
    cleaned with `pre_text`; answers are kept as written, as the release does (training targets and the
    answer list alike), so a prediction from the answer list is compared with them string for string."""
    items = []
    for entry in load_corpus(spec, required=("question",)):
        q = entry.fields["question"]
        if not isinstance(q, str):
            raise AnnotationError(f"{entry.source}: 'question' must be a string")
        raw = entry.fields.get("answer", [])
        raw = [raw] if isinstance(raw, str) else raw
        if not isinstance(raw, list) or not all(isinstance(a, str) for a in raw):
            raise AnnotationError(f"{entry.source}: 'answer' must be a string or a list of strings")
        answers, weights = answer_weights(list(raw)) if raw else ([], [])
        qid = entry.fields.get("question_id", entry.source)
        atype = entry.fields.get("answer_type", "")
        atype = atype if isinstance(atype, str) else ""
        items.append(QAItem(str(entry.media), pre_text(q, max_words), answers, weights, qid, list(raw), atype))
    return items


def load_answer_list(path: str | Path) -> list[str]:
    """The QA answer list: a JSON list of strings."""
    data = load_json_list(path)
    bad = next((i for i, a in enumerate(data) if not isinstance(a, str)), None)
    if bad is not None:
        raise AnnotationError(f"{path}: entry {bad}: answers must be strings")
    return data
