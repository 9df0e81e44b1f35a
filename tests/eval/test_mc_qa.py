"""Multiple choice by ITM score, QA predictions by ranking and by greedy generation."""

from __future__ import annotations

import pytest
import torch

from singularity_vl.data.text import ReleaseTokenizer
from singularity_vl.eval.mc import mc_accuracy, mc_scores
from singularity_vl.eval.qa import decode_answer, greedy_answers, make_prediction, qa_accuracy
from singularity_vl.eval.retrieval import encode_texts, encode_videos, pair_match_scores
from singularity_vl.models.config import tiny_config
from singularity_vl.models.singularity import create_model


@pytest.fixture(scope="module")
def tokenizer():
    return ReleaseTokenizer()


@pytest.mark.parametrize("ensemble", ["concat", "mean", "max", "lse"])
def test_mc_scores_match_pairwise_scoring(tokenizer, ensemble):
    torch.manual_seed(0)
    model = create_model(tiny_config("retrieval")).eval()
    videos = encode_videos(model, torch.randn(3, 2, 3, 64, 64))
    options = [f"a {w} thing moves" for w in ("red", "blue", "green", "small", "big")] * 3
    enc = tokenizer(options, 10)
    texts = encode_texts(model, enc["input_ids"], enc["attention_mask"])
    scores = mc_scores(model, videos, texts, 5, ensemble)
    assert scores.shape == (3, 5)
    pairs_v = torch.arange(3).repeat_interleave(5)
    expected = pair_match_scores(model, texts, videos, torch.arange(15), pairs_v, ensemble).view(3, 5)
    torch.testing.assert_close(scores, expected.float(), rtol=0, atol=1e-4)
    best = scores.argmax(1)
    assert mc_accuracy(scores, best) == 100.0
    assert mc_accuracy(scores, (best + 1) % 5) == 0.0
    with pytest.raises(ValueError, match="option texts"):
        mc_scores(model, videos, encode_texts(model, enc["input_ids"][:4], enc["attention_mask"][:4]))


def test_qa_greedy_and_predictions(tokenizer):
    torch.manual_seed(0)
    model = create_model(tiny_config("qa")).eval()
    q = tokenizer(["what is moving", "what colour is it"], 8)
    ids = greedy_answers(model, torch.randn(2, 1, 3, 64, 64), q["input_ids"], q["attention_mask"], max_len=4)
    assert ids.shape[0] == 2 and 2 <= ids.shape[1] <= 4 and (ids[:, 0] == 101).all()
    assert decode_answer(tokenizer, [101, tokenizer.tok.convert_tokens_to_ids("dog"), 102, 0]) == "dog"
    preds = [make_prediction(1, "dog", ["dog", "puppy"]), make_prediction(2, "cat", ["dog"])]
    assert [p.correct for p in preds] == [True, False] and qa_accuracy(preds) == 50.0
