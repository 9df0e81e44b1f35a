"""The release's retrieval metrics (`tasks/retrieval_utils.py:itm_eval`), ties broken the same way."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def _ranks(scores: np.ndarray, ground_truth: Sequence[int | Sequence[int]]) -> np.ndarray:
    """Rank (0 = top) of the best-ranked ground truth of each row; order as `np.argsort(score)[::-1]`."""
    ranks = np.zeros(scores.shape[0])
    for row, score in enumerate(scores):
        order = np.argsort(score)[::-1]
        gts = ground_truth[row]
        gts = [gts] if isinstance(gts, int) else list(gts)
        ranks[row] = min(np.where(order == g)[0][0] for g in gts)
    return ranks


def retrieval_metrics(
    scores_v2t: torch.Tensor | np.ndarray,
    scores_t2v: torch.Tensor | np.ndarray,
    text_to_video: Sequence[int | Sequence[int]],
    video_to_text: Sequence[int | Sequence[int]],
) -> dict[str, float]:
    """`txt_r1/5/10` (video->text), `img_r1/5/10` (text->video), their means and `r_mean`, in percent,
    rounded to 2 decimals as the release reports them. Several ground truths: the best rank counts."""
    s_v2t = scores_v2t.detach().cpu().numpy() if isinstance(scores_v2t, torch.Tensor) else scores_v2t
    s_t2v = scores_t2v.detach().cpu().numpy() if isinstance(scores_t2v, torch.Tensor) else scores_t2v
    ranks_v = _ranks(s_v2t, video_to_text)
    ranks_t = _ranks(s_t2v, text_to_video)

    def recall(ranks: np.ndarray, k: int) -> float:
        return 100.0 * len(np.where(ranks < k)[0]) / len(ranks)

    tr = [recall(ranks_v, k) for k in (1, 5, 10)]
    ir = [recall(ranks_t, k) for k in (1, 5, 10)]
    out = {
        "txt_r1": tr[0],
        "txt_r5": tr[1],
        "txt_r10": tr[2],
        "txt_r_mean": sum(tr) / 3,
        "img_r1": ir[0],
        "img_r5": ir[1],
        "img_r10": ir[2],
        "img_r_mean": sum(ir) / 3,
    }
    out["r_mean"] = (out["txt_r_mean"] + out["img_r_mean"]) / 2
    return {k: round(v, 2) for k, v in out.items()}
