"""Retrieval evaluation with the release's scores: dual-encoder similarities, then the top `k_test`
candidates of every video and every text re-scored by the ITM "match" logit, -100 elsewhere.

`rerank_release_procedure` follows the release literally (one fusion pass per selected pair and
direction); it is the reference the faster paths are tested against."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from singularity_vl.devices import model_device
from singularity_vl.distributed import all_reduce_, my_share
from singularity_vl.models.losses import ENSEMBLES, pool_frames
from singularity_vl.models.singularity import SingularityRetrieval

NEG_SCORE = -100.0


@dataclass
class EncodedTexts:
    tokens: torch.Tensor  # (Nt, Lt, H) text-mode output
    mask: torch.Tensor  # (Nt, Lt)
    feats: torch.Tensor  # (Nt, e) normalised ITC features
    # (Nt, Lt, H) the first fusion layer's self-attention output: it reads the text alone, so re-ranking
    # computes it once per text (`with_fusion_self_attention`) instead of once per (text, video) pair
    self_attended: torch.Tensor | None = None

    def match_inputs(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """(tokens, mask, self_attended flag) of texts `idx` for `match_logits`."""
        if self.self_attended is not None:
            return self.self_attended[idx], self.mask[idx], True
        return self.tokens[idx], self.mask[idx], False


@torch.no_grad()
def with_fusion_self_attention(model: SingularityRetrieval, texts: EncodedTexts) -> EncodedTexts:
    """`texts` with `self_attended` filled (same match logits, less work per re-ranked pair)."""
    if texts.self_attended is not None:
        return texts
    attended = model.text_encoder.first_self_attention(texts.tokens, texts.mask)
    return EncodedTexts(texts.tokens, texts.mask, texts.feats, attended)


@dataclass
class EncodedVideos:
    """Encoded videos, each stored once: per-frame tokens in a storage dtype, on the compute device or
    offloaded to the CPU (`eval_offload`), and every video's ITC features. The concat fusion inputs are
    re-derived from a video's frame tokens when it is re-ranked (`fusion_tokens`), so they are never
    held for all videos at once. Under torch.distributed a rank may hold only its share of the frame
    tokens (`held`: the video index of each row), while `feats` always covers every video."""

    frame_tokens: torch.Tensor  # (n_held, T, L, D) per-frame tokens after the vision layer norm
    feats: torch.Tensor  # (Nv, T, e) normalised per-frame ITC features, float32, on the compute device
    held: torch.Tensor | None = None  # (n_held,) video index of each frame_tokens row; None: row v is video v

    def __post_init__(self) -> None:
        self._row = None
        if self.held is not None:
            self._row = torch.full((len(self.feats),), -1, dtype=torch.long)
            self._row[self.held] = torch.arange(len(self.held))

    def __len__(self) -> int:
        return len(self.feats)

    def frames(self, v: int, device: torch.device | str | None = None) -> torch.Tensor:
        """(T, L, D) frame tokens of video `v` as float32 on `device` (default: the features' device)."""
        row = v if self._row is None else int(self._row[v])
        if row < 0:
            raise IndexError(f"video {v} is held by another rank")
        device = self.feats.device if device is None else device
        return self.frame_tokens[row].to(device=device, dtype=torch.float32, non_blocking=True)

    def fusion_tokens(self, model: SingularityRetrieval, v: int) -> torch.Tensor:
        """(T*L, D) concat fusion inputs of video `v` (temporal embeddings / encoder applied)."""
        return model.fuse_frames(self.frames(v, model_device(model))[None])[0]


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
def encode_videos(
    model: SingularityRetrieval,
    video: torch.Tensor,
    store_dtype: torch.dtype = torch.float32,
    store_device: torch.device | str | None = None,
) -> EncodedVideos:
    """Frames (B, T, 3, H, W) through the vision side; frame tokens kept in `store_dtype` on
    `store_device` (default: the model's device), features in float32 on the model's device."""
    enc = model.encode_video(video.to(model_device(model), non_blocking=True))
    store_device = model_device(model) if store_device is None else store_device
    feats = model.video_features(enc.pooled).float()
    return EncodedVideos(enc.frame_tokens.to(device=store_device, dtype=store_dtype), feats)


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
        v_tokens = torch.stack([videos.fusion_tokens(model, int(v)) for v in video_idx])
        return model.match_logits(t_tokens, t_mask, v_tokens, cls_only=False)[:, 1]
    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")
    frames = torch.stack([videos.frames(int(v)) for v in video_idx])  # (N, T, L, D)
    per_frame = torch.stack(
        [model.match_logits(t_tokens, t_mask, frames[:, f], cls_only=False)[:, 1] for f in range(frames.shape[1])],
        -1,
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
    v2t_emb = model.similarity(videos.feats, texts.feats).cpu()  # (Nv, Nt), no temperature
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


def candidate_pairs(v2t_emb: torch.Tensor, k_test: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k texts of every video and top-k videos of every text, as masks (Nv, Nt) for each direction,
    and their union: each distinct (video, text) pair is scored once even when both directions pick it."""
    n_v, n_t = v2t_emb.shape
    in_v2t = torch.zeros(n_v, n_t, dtype=torch.bool)
    in_v2t.scatter_(1, v2t_emb.topk(min(k_test, n_t), dim=1).indices, True)
    in_t2v = torch.zeros(n_t, n_v, dtype=torch.bool)
    in_t2v.scatter_(1, v2t_emb.t().topk(min(k_test, n_v), dim=1).indices, True)
    return in_v2t, in_t2v.t().contiguous(), in_v2t | in_t2v.t()


@torch.no_grad()
def video_match_scores(
    model: SingularityRetrieval,
    texts: EncodedTexts,
    video_tokens: torch.Tensor,
    text_idx: torch.Tensor,
    text_chunk: int = 256,
) -> torch.Tensor:
    """Match logits of one video's tokens (N, D) against texts `text_idx`: the video's cross-attention
    keys/values are projected once per fusion layer and shared by every text."""
    kvs = model.cross_kvs(video_tokens[None])  # per layer (1, nh, N, hd)
    text_idx = text_idx.to(texts.mask.device)
    out = []
    for start in range(0, len(text_idx), text_chunk):
        tokens, mask, attended = texts.match_inputs(text_idx[start : start + text_chunk])
        out.append(model.match_logits(tokens, mask, cross_kvs=kvs, self_attended=attended)[:, 1].float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def frame_match_scores(
    model: SingularityRetrieval,
    texts: EncodedTexts,
    frame_tokens: torch.Tensor,
    text_idx: torch.Tensor,
    text_chunk: int = 256,
) -> torch.Tensor:
    """Match logits (n_texts, T) of each frame (T, L, D) of one video on its own, all frames in one
    batch (the same numbers as one `video_match_scores` call per frame, a few times faster)."""
    t = frame_tokens.shape[0]
    kvs = model.cross_kvs(frame_tokens)  # per layer (T, nh, L, hd)
    text_idx = text_idx.to(texts.mask.device)
    out = torch.zeros(len(text_idx), t)
    step = max(1, text_chunk // t)
    for start in range(0, len(text_idx), step):
        idx = text_idx[start : start + step]
        m = len(idx)
        tokens, mask, attended = texts.match_inputs(idx)
        # frame-major rows: the m rows of frame f share its keys/values (no copy of them)
        logits = model.match_logits(tokens.repeat(t, 1, 1), mask.repeat(t, 1), cross_kvs=kvs, self_attended=attended)
        out[start : start + m] = logits[:, 1].float().view(t, m).t().cpu()
    return out


@torch.no_grad()
def video_ensemble_scores(
    model: SingularityRetrieval,
    texts: EncodedTexts,
    videos: EncodedVideos,
    v: int,
    text_idx: torch.Tensor,
    ensembles: tuple[str, ...] = ("concat",),
    text_chunk: int = 256,
) -> dict[str, torch.Tensor]:
    """Match scores of video `v` against texts `text_idx` for each ensemble; the per-frame scores of the
    late-fusion ensembles are computed once and pooled by each."""
    out = {}
    frames = videos.frames(v, model_device(model))  # streamed to the device one video at a time
    if "concat" in ensembles:
        fused = model.fuse_frames(frames[None])[0]
        out["concat"] = video_match_scores(model, texts, fused, text_idx, text_chunk)
    late = [e for e in ensembles if e != "concat"]
    if late:
        per_frame = frame_match_scores(model, texts, frames, text_idx, text_chunk)
        out.update({e: pool_frames(per_frame, e) for e in late})
    return out


def video_scores(
    model: SingularityRetrieval,
    texts: EncodedTexts,
    videos: EncodedVideos,
    v: int,
    text_idx: torch.Tensor,
    ensemble: str = "concat",
    text_chunk: int = 256,
) -> torch.Tensor:
    """Match scores of video `v` against texts `text_idx`; late fusion scores each frame and pools."""
    return video_ensemble_scores(model, texts, videos, v, text_idx, (ensemble,), text_chunk)[ensemble]


def rerank(
    model: SingularityRetrieval,
    texts: EncodedTexts,
    videos: EncodedVideos,
    k_test: int = 128,
    ensemble: str = "concat",
    text_chunk: int = 256,
    progress: bool = False,
) -> RetrievalScores:
    """Same matrices as `rerank_release_procedure`, faster: each video's keys/values computed once per
    fusion layer and shared by all its candidate texts (one attention call for all of them), each
    distinct pair scored once, texts batched in chunks. Under torch.distributed, videos are split across
    ranks and the matrices combined."""
    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")
    return rerank_ensembles(model, texts, videos, k_test, (ensemble,), text_chunk, progress)[ensemble]


@torch.no_grad()
def rerank_ensembles(
    model: SingularityRetrieval,
    texts: EncodedTexts,
    videos: EncodedVideos,
    k_test: int = 128,
    ensembles: tuple[str, ...] = ENSEMBLES,
    text_chunk: int = 256,
    progress: bool = False,
) -> dict[str, RetrievalScores]:
    """`rerank` for several frame ensembles at once: the per-frame match scores are computed once and
    pooled by each late-fusion strategy (same numbers as one `rerank` call per ensemble)."""
    from tqdm import tqdm

    bad = [e for e in ensembles if e not in ENSEMBLES]
    if bad:
        raise ValueError(f"ensembles must be among {ENSEMBLES}, got {bad}")
    v2t_emb = model.similarity(videos.feats, texts.feats).float().cpu()
    n_v, n_t = v2t_emb.shape
    in_v2t, in_t2v, union = candidate_pairs(v2t_emb, k_test)
    texts = with_fusion_self_attention(model, texts)
    scores = {e: torch.zeros(n_v, n_t) for e in ensembles}
    desc = f"re-ranking ({', '.join(ensembles)})"
    for v in tqdm(my_share(n_v), desc=desc, disable=not progress, unit="video"):
        text_idx = union[v].nonzero().view(-1)
        for e, sc in video_ensemble_scores(model, texts, videos, v, text_idx, ensembles, text_chunk).items():
            scores[e][v, text_idx] = sc
    for sc in scores.values():
        all_reduce_(sc)  # every pair was scored by exactly one rank, zeros elsewhere
    neg = torch.full((n_v, n_t), NEG_SCORE)
    return {
        e: RetrievalScores(
            v2t_emb,
            v2t_emb.t().contiguous(),
            torch.where(in_v2t, sc, neg),
            torch.where(in_t2v, sc, neg).t().contiguous(),
        )
        for e, sc in scores.items()
    }
