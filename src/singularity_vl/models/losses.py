"""Training objectives of the release: ITC with soft targets, ITM hard negatives, MLM masking, QA loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

ENSEMBLES = ("concat", "mean", "max", "lse")


def same_id_mask(video_ids: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
    """(n, n) float mask: 1 where two samples share a video id (identity when ids are not given)."""
    if video_ids is None:
        return torch.eye(n, device=device)
    video_ids = video_ids.view(-1, 1)
    return (video_ids == video_ids.t()).float()


def itc_loss(sim_v2t: torch.Tensor, video_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Contrastive loss; targets are 1 for every pair sharing a video id, rows normalised to sum 1."""
    targets = same_id_mask(video_ids, sim_v2t.shape[0], sim_v2t.device)
    targets = targets / targets.sum(1, keepdim=True)
    loss_v2t = -(F.log_softmax(sim_v2t, 1) * targets).sum(1).mean()
    loss_t2v = -(F.log_softmax(sim_v2t.t(), 1) * targets).sum(1).mean()
    return (loss_v2t + loss_t2v) / 2


def itc_loss_rows(
    sim_v2t: torch.Tensor, sim_t2v: torch.Tensor, row_ids: torch.Tensor, col_ids: torch.Tensor
) -> torch.Tensor:
    """ITC over the global batch for this rank's rows: `sim_v2t` (B, G) local videos vs all texts,
    `sim_t2v` (B, G) local texts vs all videos; targets from video ids (soft, rows sum to 1)."""
    targets = (row_ids.view(-1, 1) == col_ids.view(1, -1)).float()
    targets = targets / targets.sum(1, keepdim=True)
    loss_v2t = -(F.log_softmax(sim_v2t, 1) * targets).sum(1).mean()
    loss_t2v = -(F.log_softmax(sim_t2v, 1) * targets).sum(1).mean()
    return (loss_v2t + loss_t2v) / 2


class _GatherLayer(torch.autograd.Function):
    """All-gather whose backward sums every rank's gradient for each slice (works on gloo and NCCL)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        import torch.distributed as dist

        out = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        stacked = torch.stack(grads)
        dist.all_reduce(stacked)
        return stacked[dist.get_rank()]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0 across ranks, gradients flowing back to every rank's slice. Ranks may hold
    different numbers of rows (a batch with unreadable files is smaller): each is padded to the largest
    for the collective and cut back after it."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    world = dist.get_world_size()
    size = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes = [int(s) for s in sizes]
    if x.shape[0] < max(sizes):
        x = torch.cat([x, x.new_zeros((max(sizes) - x.shape[0], *x.shape[1:]))])
    if not x.is_floating_point():  # ids: no gradient
        parts = [torch.zeros_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
    else:
        parts = _GatherLayer.apply(x)
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)], 0)


def hard_negative_weights(
    sim_v2t: torch.Tensor, video_ids: torch.Tensor | None = None, hard: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampling weights (t2v, v2t), each (B, B): softmax of the similarity (uniform if not `hard`),
    zero where the pair shares a video id. A row left with no candidate (every sample in the batch
    shares one id) falls back to uniform over the other samples instead of crashing as the release does."""
    n = sim_v2t.shape[0]
    if n < 2:
        raise ValueError("ITM needs a batch of at least 2 samples to draw negatives")
    mask = same_id_mask(video_ids, n, sim_v2t.device).bool()
    with torch.no_grad():
        if hard:
            w_v2t = F.softmax(sim_v2t.float() + 1e-4, dim=1)
            w_t2v = F.softmax(sim_v2t.t().float() + 1e-4, dim=1)
        else:
            w_v2t = torch.ones(n, n, device=sim_v2t.device)
            w_t2v = torch.ones(n, n, device=sim_v2t.device)
        w_v2t = w_v2t.masked_fill(mask, 0)
        w_t2v = w_t2v.masked_fill(mask, 0)
        eye = torch.eye(n, dtype=torch.bool, device=sim_v2t.device)
        for w in (w_v2t, w_t2v):
            empty = w.sum(1) == 0
            if empty.any():
                w[empty] = (~eye[empty]).float()
    return w_t2v, w_v2t


def draw_negatives(
    w_t2v: torch.Tensor, w_v2t: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(negative video for each text, negative text for each video), drawn in the release's order."""
    neg_video = torch.multinomial(w_t2v, 1, generator=generator).view(-1)
    neg_text = torch.multinomial(w_v2t, 1, generator=generator).view(-1)
    return neg_video, neg_text


@dataclass
class MaskDraws:
    """The four random draws of the release's MLM masking (pinned in tests)."""

    mask: torch.Tensor  # bernoulli(mlm_prob)
    replace: torch.Tensor  # bernoulli(0.8)
    random: torch.Tensor  # bernoulli(0.5)
    random_words: torch.Tensor  # randint(vocab)


def draw_mask(
    shape: torch.Size,
    vocab_size: int,
    mlm_prob: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> MaskDraws:
    """Random draws for `mask_tokens`, in the release's order."""

    def bern(p: float) -> torch.Tensor:
        return torch.bernoulli(torch.full(shape, p, device=device), generator=generator).bool()

    mask = bern(mlm_prob)
    replace = bern(0.8)
    random = bern(0.5)
    words = torch.randint(vocab_size, shape, generator=generator, device=device)
    return MaskDraws(mask, replace, random, words)


def mask_tokens(
    input_ids: torch.Tensor,
    draws: MaskDraws,
    pad_token_id: int = 0,
    cls_token_id: int = 101,
    mask_token_id: int = 103,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The release's MLM masking: PAD and CLS never masked; of the masked, 80% -> [MASK], half of the
    rest -> a random word, the rest kept. Returns (masked ids, labels with -100 where not masked)."""
    masked = draws.mask.to(input_ids.device).clone()
    masked &= input_ids != pad_token_id
    masked &= input_ids != cls_token_id
    labels = input_ids.masked_fill(~masked, -100)
    out = input_ids.clone()
    replaced = draws.replace.to(out.device) & masked
    out[replaced] = mask_token_id
    randomised = draws.random.to(out.device) & masked & ~replaced
    out[randomised] = draws.random_words.to(out.device)[randomised]
    return out, labels


def pool_frames(scores: torch.Tensor, strategy: str, dim: int = -1) -> torch.Tensor:
    """Late-fusion pooling of per-frame scores: `mean`, `max` or `lse` (log-sum-exp)."""
    if strategy == "mean":
        return scores.mean(dim)
    if strategy == "max":
        return scores.max(dim).values
    if strategy == "lse":
        return torch.logsumexp(scores, dim)
    raise ValueError(f"frame ensemble must be one of {ENSEMBLES[1:]} here, got {strategy!r}")


def sequence_lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, pad_token_id: int = 0) -> torch.Tensor:
    """Per-sequence summed next-token cross-entropy (N,), pads ignored: the release's decoder loss."""
    labels = input_ids.masked_fill(input_ids == pad_token_id, -100)[:, 1:]
    shifted = logits[:, :-1].float()
    loss = F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), labels.reshape(-1), reduction="none")
    return loss.view(input_ids.shape[0], -1).sum(1)
