"""Retrieval evaluation with the release's scores: dual-encoder similarities, then the top `k_test`
candidates of every video and every text re-scored by the ITM "match" logit, -100 elsewhere.

`rerank_release_procedure` follows the release literally (one fusion pass per selected pair and
direction); it is the reference the faster paths are tested against."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from singularity_vl.models.losses import ENSEMBLES, pool_frames
from singularity_vl.models.singularity import SingularityRetrieval

NEG_SCORE = -100.0


@dataclass
class EncodedTexts:
    tokens: torch.Tensor  # (Nt, Lt, H) text-mode output
    mask: torch.Tensor  # (Nt, Lt)
    feats: torch.Tensor  # (Nt, e) normalised ITC features


@dataclass
class EncodedVideos:
    tokens: torch.Tensor  # (Nv, T*L, D) concat fusion inputs
    frame_tokens: torch.Tensor  # (Nv, T, L, D) per-frame tokens (late fusion)
    feats: torch.Tensor  # (Nv, T, e) normalised per-frame ITC features


@dataclass
class RetrievalScores:
    """Score matrices; `*_emb` are dual-encoder cosine similarities, `*_x` the re-ranked ITM scores."""

    v2t_emb: torch.Tensor  # (Nv, Nt)
    t2v_emb: torch.Tensor  # (Nt, Nv)
    v2t_x: torch.Tensor  # (Nv, Nt)
    t2v_x: torch.Tensor  # (Nt, Nv)


@torch.no_grad()
def encode_texts(model: SingularityRetrieval, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> EncodedTexts:
    tokens, cls = model.encode_text(input_ids, attention_mask)
    return EncodedTexts(tokens, attention_mask, model.text_features(cls))


@torch.no_grad()
def encode_videos(model: SingularityRetrieval, video: torch.Tensor) -> EncodedVideos:
    enc = model.encode_video(video)
    return EncodedVideos(enc.tokens, enc.frame_tokens, model.video_features(enc.pooled))


@torch.no_grad()
def pair_match_scores(
    model: SingularityRetrieval,
    texts: EncodedTexts,
    videos: EncodedVideos,
    text_idx: torch.Tensor,
    video_idx: torch.Tensor,
    ensemble: str = "concat",
) -> torch.Tensor:
    """ITM match logit (class 1) of each (text_idx[i], video_idx[i]) pair; late fusion pools per frame."""
    t_tokens, t_mask = texts.tokens[text_idx], texts.mask[text_idx]
    if ensemble == "concat":
        return model.match_logits(t_tokens, t_mask, videos.tokens[video_idx])[:, 1]
    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")
    frames = videos.frame_tokens[video_idx]  # (N, T, L, D)
    per_frame = torch.stack(
        [model.match_logits(t_tokens, t_mask, frames[:, f])[:, 1] for f in range(frames.shape[1])], -1
    )
    return pool_frames(per_frame, ensemble)


@torch.no_grad()
def rerank_release_procedure(
    model: SingularityRetrieval,
    texts: EncodedTexts,
    videos: EncodedVideos,
    k_test: int = 128,
    ensemble: str = "concat",
) -> RetrievalScores:
    """The release's `evaluation`: each direction's top-k pairs scored separately, one video at a time."""
    v2t_emb = model.similarity(videos.feats, texts.feats)  # (Nv, Nt), no temperature
    t2v_emb = v2t_emb.t()
    n_v, n_t = v2t_emb.shape
    v2t_x = torch.full((n_v, n_t), NEG_SCORE)
    for v in range(n_v):
        top = v2t_emb[v].topk(min(k_test, n_t)).indices
        v2t_x[v, top] = pair_match_scores(model, texts, videos, top, torch.full_like(top, v), ensemble).float()
    t2v_x = torch.full((n_t, n_v), NEG_SCORE)
    for t in range(n_t):
        top = t2v_emb[t].topk(min(k_test, n_v)).indices
        t2v_x[t, top] = pair_match_scores(model, texts, videos, torch.full_like(top, t), top, ensemble).float()
    return RetrievalScores(v2t_emb, t2v_emb.contiguous(), v2t_x, t2v_x)
