"""Multiple choice by ITM score, QA predictions by ranking and by greedy generation."""

from __future__ import annotations

import json

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


def test_qa_answers_compared_as_written(tmp_path):
    """As the release: answers are neither cleaned in the annotation nor in the answer list, so an answer
    with capitals or punctuation can be right (the question alone goes through pre_text)."""
    from singularity_vl.data.annotations import load_qa

    f = tmp_path / "qa.json"
    f.write_text(json.dumps([{"video": "a.mp4", "question": "What's on?", "answer": "T-shirt", "question_id": 1}]))
    (item,) = load_qa([str(f), str(tmp_path), "video"])
    assert item.question == "whats on" and item.answers == ["T-shirt"] and item.all_answers == ["T-shirt"]
    assert make_prediction(1, "T-shirt", item.answers).correct
    assert not make_prediction(1, "t shirt", item.answers).correct  # no normalisation on either side


def test_qa_evaluation_end_to_end_exact_and_vqa(tmp_path):
    """`evaluate` on a tiny QA model with a one-entry answer list (so the prediction is known): exact
    matching against an answer written with punctuation, and VQA accuracy over ten annotators."""
    from singularity_vl.data.video_writer import moving_square_frames, write_video
    from singularity_vl.eval.run import EvalConfig, evaluate

    torch.manual_seed(0)
    for i in range(2):
        write_video(tmp_path / f"v{i}.mp4", moving_square_frames(6, 48, 64, seed=i), fps=10, gop=2)
    qa = [
        {
            "video": "v0.mp4",
            "question": "what?",
            "answer": ["t-shirt"] * 2 + ["shirt"] * 8,
            "question_id": 0,
            "answer_type": "other",
        },
        {"video": "v1.mp4", "question": "what?", "answer": "t-shirt", "question_id": 1, "answer_type": "yes/no"},
    ]
    (tmp_path / "qa.json").write_text(json.dumps(qa))
    (tmp_path / "answers.json").write_text(json.dumps(["t-shirt"]))
    model = create_model(tiny_config("qa")).eval()
    common = dict(
        task="qa",
        test_file=[str(tmp_path / "qa.json"), str(tmp_path), "video"],
        answer_list=str(tmp_path / "answers.json"),
        k_test=1,
        num_frames_test=1,
        max_q_len=8,
        batch_size=2,
    )
    exact = evaluate(model, EvalConfig(**common), tmp_path / "exact")
    assert exact["accuracy"] == 100.0  # both have "t-shirt" among their answers (cleaned, it would be "t shirt")
    vqa = evaluate(model, EvalConfig(**common, qa_metric="vqa"), tmp_path / "vqa")
    # question 0: 2 of 10 annotators -> 0.6 ("-" becomes a space on both sides); question 1: one annotator
    # whose answer has no other annotator to agree with -> 0
    assert vqa["accuracy"] == 30.0
    assert vqa["accuracy_by_answer_type"] == {"other": 60.0, "yes/no": 0.0}  # as the release's VQA evaluation
    preds = json.loads((tmp_path / "vqa" / "predictions.json").read_text())
    assert [p["score"] for p in preds] == pytest.approx([0.6, 0.0])


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("2", ["2"] * 10, 1.0),
        ("2", ["2"] * 3 + ["3"] * 7, 0.9),  # 3 agree: 1 for the 7 others, 2/3 for each of the 3
        ("2", ["2"] * 2 + ["3"] * 8, 0.6),
        ("2", ["2"] + ["3"] * 9, 0.3),
        ("2", ["3"] * 10, 0.0),
        ("Two", ["2"] * 10, 1.0),  # number words become digits in the prediction
        ("the dog.", ["dog"] * 10, 1.0),  # articles and a final period dropped
        ("dont", ["don't"] * 10, 1.0),  # contractions restored
        ("3.5", ["3.5"] * 10, 1.0),  # a period before a digit stays
        ("black and white", ["black/white"] * 3 + ["black and white"] * 7, 1.0),
    ],
)
def test_vqa_accuracy(prediction, answers, expected):
    from singularity_vl.eval.qa import vqa_accuracy

    assert vqa_accuracy(prediction, answers) == pytest.approx(expected)


def test_vqa_punctuation_and_words():
    from singularity_vl.eval.qa import vqa_digits_articles, vqa_punctuation

    assert vqa_punctuation("yes!") == "yes "  # a mark not next to a space becomes a space
    assert vqa_punctuation("yes !") == "yes "  # next to a space: deleted
    assert vqa_punctuation("1,000 (approx)") == "1000 approx"  # a digit,digit group: every mark deleted
    assert vqa_digits_articles("An Apple  and THE one") == "apple and 1"
    assert make_prediction(3, "yes", ["no"], "vqa", ["no", "yes", "yes", "yes"]).score == pytest.approx(0.75)
    with pytest.raises(ValueError, match="qa_metric"):
        make_prediction(3, "yes", ["yes"], "fuzzy")


def test_qa_without_ground_truth_has_no_accuracy():
    """VQA test-dev has no public answers: predictions are written, the accuracy is None, not 0."""
    preds = [make_prediction(1, "yes", [], "vqa", []), make_prediction(2, "2", [], "vqa")]
    assert [p.score for p in preds] == [0.0, 0.0] and qa_accuracy(preds) is None
    assert qa_accuracy([make_prediction(1, "yes", ["yes"]), make_prediction(2, "no", [])]) == 50.0
