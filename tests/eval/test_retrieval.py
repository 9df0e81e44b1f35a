"""The fast re-ranking path gives the release procedure's matrices; metrics with several ground truths."""

from __future__ import annotations

import pytest
import torch

from singularity_vl.eval.metrics import retrieval_metrics
from singularity_vl.eval.retrieval import (
    NEG_SCORE,
    candidate_pairs,
    encode_texts,
    encode_videos,
    rerank,
    rerank_release_procedure,
)
from singularity_vl.models.config import tiny_config
from singularity_vl.models.singularity import create_model


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    cfg = tiny_config("retrieval", temporal=True)
    model = create_model(cfg).eval()
    g = torch.Generator().manual_seed(0)
    video = torch.randn(7, 3, 3, 64, 64, generator=g)
    ids = torch.randint(1000, 5000, (11, 9), generator=g)
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    mask[::3, 6:] = 0
    ids[mask == 0] = 0
    return model, encode_texts(model, ids, mask), encode_videos(model, video)


@pytest.mark.parametrize("ensemble", ["concat", "mean", "max", "lse"])
@pytest.mark.parametrize("k_test", [1, 3, 20])
def test_fast_path_equals_release_procedure(setup, ensemble, k_test):
    model, texts, videos = setup
    ref = rerank_release_procedure(model, texts, videos, k_test=k_test, ensemble=ensemble)
    fast = rerank(model, texts, videos, k_test=k_test, ensemble=ensemble, text_chunk=4)
    for name in ("v2t_emb", "t2v_emb", "v2t_x", "t2v_x"):
        torch.testing.assert_close(getattr(fast, name), getattr(ref, name), rtol=0, atol=1e-4)
    assert ((fast.v2t_x != NEG_SCORE).sum(1) == min(k_test, 11)).all()


def test_eager_attention_fast_path(setup):
    model, texts, videos = setup
    ref = rerank_release_procedure(model, texts, videos, k_test=3)
    model.set_attn_implementation("eager")
    try:
        fast = rerank(model, texts, videos, k_test=3)
    finally:
        model.set_attn_implementation("sdpa")
    torch.testing.assert_close(fast.v2t_x, ref.v2t_x, rtol=0, atol=1e-4)


def test_each_pair_scored_once():
    sim = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.7]])
    in_v2t, in_t2v, union = candidate_pairs(sim, 1)
    assert in_v2t.tolist() == [[True, False, False], [False, True, False]]
    assert in_t2v.tolist() == [[True, False, False], [False, True, True]]
    assert union.sum() == 3  # (0,0) and (1,1) chosen by both directions, scored once


def test_metrics_several_ground_truths():
    # 2 videos, 3 texts; video 0 has texts 0 and 1
    v2t = torch.tensor([[0.1, 0.9, 0.95], [0.0, 0.2, 0.8]])
    m = retrieval_metrics(v2t, v2t.t(), text_to_video=[0, 0, 1], video_to_text=[[0, 1], [2]])
    assert m["txt_r1"] == 50.0  # video 0 ranks text 2 first (wrong), its best ground truth second
    assert m["txt_r5"] == 100.0
    assert m["img_r1"] == pytest.approx(66.67)  # text 2 prefers video 0 (0.95 > 0.8)
    assert set(m) == {
        "txt_r1",
        "txt_r5",
        "txt_r10",
        "txt_r_mean",
        "img_r1",
        "img_r5",
        "img_r10",
        "img_r_mean",
        "r_mean",
    }


def test_all_ensembles_at_once_equal_one_rerank_each(setup):
    from singularity_vl.eval.retrieval import rerank_ensembles

    model, texts, videos = setup
    together = rerank_ensembles(model, texts, videos, k_test=3)
    assert set(together) == {"concat", "mean", "max", "lse"}
    for ensemble, scores in together.items():
        alone = rerank(model, texts, videos, k_test=3, ensemble=ensemble)
        for name in ("v2t_emb", "t2v_x", "v2t_x"):
            torch.testing.assert_close(getattr(scores, name), getattr(alone, name), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="ensembles must be among"):
        rerank_ensembles(model, texts, videos, ensembles=("median",))
