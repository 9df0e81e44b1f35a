"""MSRVTT-MC: pick, for each video, the candidate caption with the highest ITM match score."""

from __future__ import annotations

import torch

from singularity_vl.distributed import all_reduce_, my_share
from singularity_vl.eval.retrieval import EncodedTexts, EncodedVideos, video_scores
from singularity_vl.models.losses import ENSEMBLES
from singularity_vl.models.singularity import SingularityRetrieval


@torch.no_grad()
def mc_scores(
    model: SingularityRetrieval,
    videos: EncodedVideos,
    options: EncodedTexts,
    num_options: int = 5,
    ensemble: str = "concat",
) -> torch.Tensor:
    """(Nv, num_options) match scores; `options` holds video i's candidates at rows i*num_options + j."""
    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")
    n_v = len(videos)
    if options.tokens.shape[0] != n_v * num_options:
        raise ValueError(f"expected {n_v * num_options} option texts for {n_v} videos, got {options.tokens.shape[0]}")
    out = torch.zeros(n_v, num_options)
    for v in my_share(n_v):  # under torch.distributed each rank scores its share of the videos
        idx = torch.arange(v * num_options, (v + 1) * num_options)
        out[v] = video_scores(model, options, videos, v, idx, ensemble)
    return all_reduce_(out)


def mc_accuracy(scores: torch.Tensor, answers: torch.Tensor | list[int]) -> float:
    """Percent of videos whose best-scored option is the answer."""
    answers = torch.as_tensor(answers)
    return round(100.0 * (scores.argmax(1) == answers).float().mean().item(), 2)
