"""QA evaluation: answer-list ranking (the release's protocol) or greedy generation, with per-question
predictions for a JSON file."""

from __future__ import annotations

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


def qa_accuracy(predictions: list[QAPrediction]) -> float:
    """Percent of questions whose predicted answer is among the ground-truth answers."""
    if not predictions:
        return 0.0
    return round(100.0 * sum(p.correct for p in predictions) / len(predictions), 2)


def predictions_to_json(predictions: list[QAPrediction]) -> list[dict[str, Any]]:
    return [asdict(p) for p in predictions]


def make_prediction(question_id: Any, prediction: str, answers: list[str]) -> QAPrediction:
    return QAPrediction(question_id, prediction, list(answers), prediction in answers)
