"""QA evaluation: answer-list ranking (the release's protocol) or greedy generation, with per-question
predictions for a JSON file."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

import torch

from singularity_vl.models.singularity import SingularityQA


@dataclass
class QAPrediction:
    question_id: Any
    prediction: str
    answers: list[str]  # ground truth
    correct: bool
    score: float = 0.0  # 1/0 for exact matching; the VQA accuracy (0, 1/3, 2/3, 1 and averages) for VQA
    answer_type: str = ""  # VQA: "yes/no", "number" or "other" (the annotation's), for the per-type accuracy


@torch.no_grad()
def greedy_answers(
    model: SingularityQA,
    video: torch.Tensor,
    question_ids: torch.Tensor,
    question_mask: torch.Tensor,
    max_len: int = 5,
) -> torch.Tensor:
    """Open-ended answers decoded greedily from `[CLS]` until `[SEP]` or `max_len` tokens: ids (B, <=max_len)."""
    t = model.config.text
    states = model.encode_question(model.encode_video(video).tokens, question_ids, question_mask)
    ids = torch.full((states.shape[0], 1), t.cls_token_id, dtype=torch.long, device=states.device)
    done = torch.zeros(states.shape[0], dtype=torch.bool, device=states.device)
    for _ in range(max_len - 1):
        logits = model.text_decoder(ids, None, states, question_mask)[:, -1]
        nxt = logits.argmax(-1).masked_fill(done, t.pad_token_id)
        ids = torch.cat([ids, nxt[:, None]], 1)
        done |= nxt == t.sep_token_id
        if bool(done.all()):
            break
    return ids


def decode_answer(tokenizer, ids: list[int]) -> str:
    """Token ids -> answer text, stopping at [SEP] and dropping special tokens."""
    out = []
    for i in ids:
        if i == tokenizer.sep_token_id:
            break
        if i in (tokenizer.cls_token_id, tokenizer.pad_token_id):
            continue
        out.append(i)
    return tokenizer.tok.decode(out).strip()


def qa_accuracy(predictions: list[QAPrediction]) -> float | None:
    """Mean score in percent, two decimals: with exact matching the percent of questions answered right,
    with `qa_metric=vqa` the VQA accuracy. None when no question has a ground truth (e.g. VQA test-dev,
    scored by the evaluation server)."""
    if not predictions or not any(p.answers for p in predictions):
        return None if predictions else 0.0
    return round(100.0 * sum(p.score for p in predictions) / len(predictions), 2)


def qa_metrics(predictions: list[QAPrediction]) -> dict[str, Any]:
    """{"accuracy"} and, when the annotations give answer types (VQA), {"accuracy_by_answer_type"} as the
    release's VQA evaluation reports it."""
    out: dict[str, Any] = {"accuracy": qa_accuracy(predictions)}
    types = sorted({p.answer_type for p in predictions if p.answer_type})
    if types:
        out["accuracy_by_answer_type"] = {t: qa_accuracy([p for p in predictions if p.answer_type == t]) for t in types}
    return out


def predictions_to_json(predictions: list[QAPrediction]) -> list[dict[str, Any]]:
    return [asdict(p) for p in predictions]


def make_prediction(
    question_id: Any,
    prediction: str,
    answers: list[str],
    metric: str = "exact",
    all_answers: list[str] | None = None,
    answer_type: str = "",
) -> QAPrediction:
    """Score one answer as the release does. `exact` (MSRVTT-QA, ActivityNet-QA): right when the predicted
    string (an answer-list entry, as written there) equals a ground-truth answer as written in the
    annotation; no normalisation on either side. `vqa`: the VQA accuracy against `all_answers` (the ten
    annotators' answers, repeats kept; `answers` when not given)."""
    if metric not in ("exact", "vqa"):
        raise ValueError(f"qa_metric must be exact or vqa, got {metric!r}")
    if metric == "vqa" and answers:
        score = vqa_accuracy(prediction, all_answers if all_answers else answers)
    else:
        score = float(prediction in answers)  # no ground truth (a test split): 0
    return QAPrediction(question_id, prediction, list(answers), score >= 1.0, score, answer_type)


# --- VQA accuracy (the official VQA v2 evaluation, as the release's tasks/vqa_utils.py runs it) -----------

# Contracted forms the official evaluation restores when an answer leaves out one of their apostrophes.
_CONTRACTIONS = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't "
    "he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've might've "
    "mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't "
    "shouldn't've somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's "
    "something'd something'd've something'll that's there'd there'd've there're there's they'd they'd've "
    "they'll they're they've 'twas wasn't we'd've we've weren't what'll what're what's what've when's "
    "where'd where's where've who'd who'd've who'll who's who've why'll why're why's won't would've wouldn't "
    "wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've"
).split()


def _contraction_map() -> dict[str, str]:
    """Each contracted form keyed by its spellings with exactly one apostrophe left out (the official
    table; its capitalised entries, e.g. "Im", never match a lower-cased word and are left out), plus the
    table's one reversed entry."""
    out = {"somebody'd": "somebodyd"}
    for word in _CONTRACTIONS:
        for i, ch in enumerate(word):
            if ch == "'":
                out[word[:i] + word[i + 1 :]] = word
    return out


_CONTRACTION_MAP = _contraction_map()
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
_ARTICLES = {"a", "an", "the"}
_VQA_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # the official pattern: drops every '.' not followed by a digit


def vqa_punctuation(text: str) -> str:
    """The official punctuation step: a mark next to a space (or any mark, when the text has a digit,digit
    group) is deleted, otherwise it becomes a space; periods not followed by a digit are deleted."""
    out = text
    for mark in _VQA_PUNCT:
        if (mark + " " in text or " " + mark in text) or _DIGIT_COMMA_DIGIT.search(text) is not None:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out)


def vqa_digits_articles(text: str) -> str:
    """The official word step: lower-case, number words to digits, articles dropped, contractions restored."""
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTION_MAP.get(w, w) for w in words if w not in _ARTICLES)


def vqa_accuracy(prediction: str, gt_answers: list[str]) -> float:
    """The VQA accuracy of one prediction: for each of the n annotators, min(#other annotators giving the
    predicted answer / 3, 1), averaged over the n (so 3 or more of 10 agreeing gives 1). The prediction is
    normalised (punctuation, digits, articles); ground truths get the punctuation step only, and only when
    they disagree, as in the official evaluation."""
    if not gt_answers:
        raise ValueError("VQA accuracy needs the annotators' answers (none given)")
    pred = prediction.replace("\n", " ").replace("\t", " ").strip()
    pred = vqa_digits_articles(vqa_punctuation(pred))
    gts = [vqa_punctuation(a) for a in gt_answers] if len(set(gt_answers)) > 1 else list(gt_answers)
    accs = []
    for i in range(len(gts)):
        others = gts[:i] + gts[i + 1 :]
        accs.append(min(1.0, sum(a == pred for a in others) / 3))
    return sum(accs) / len(accs)
