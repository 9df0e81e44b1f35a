"""Diagnostics of a demo model: where does the text->video signal get lost?

Usage: python scripts/demo_probe.py MODEL_DIR CORPUS_DIR [--frames 4]

Prints, for a checkpoint of any demo stage (e.g. runs/demo/temporal/final) and its corpus:
- the cosine between the ITC features of the 12 template captions (1.0: the dual encoder cannot tell
  the actions apart from the text side);
- the spread of the fused [CLS] (the ITM head's input) across captions and across videos, and of the
  video tokens the fusion layers see (near 0: collapsed, ITM can only learn its prior);
- the accuracy of a linear probe that classifies the 12 actions from the frozen per-frame patch tokens
  (frames in order, 2x2 pooled): whether the vision features hold the action at all.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from singularity_vl.data.synthetic import ACTIONS, CorpusFiles
from singularity_vl.data.text import ReleaseTokenizer
from singularity_vl.eval.retrieval import EncodedVideos
from singularity_vl.eval.run import EvalConfig, encode_media, encode_text_list
from singularity_vl.models.singularity import SingularityBase


def encode_split(
    model: SingularityBase, files: CorpusFiles, split: str, frames: int
) -> tuple[EncodedVideos, torch.Tensor]:
    """Every video of `split` (test-time frame sampling) and its action index."""
    videos = list(files.videos().values())
    names = [v["name"] for v in videos if v["split"] == split]
    labels = torch.tensor([list(ACTIONS).index(v["action"]) for v in videos if v["split"] == split])
    media = [str(files.video_dir / n) for n in names]
    cfg = EvalConfig(num_frames_test=frames, batch_size=32)
    return encode_media(model, media, cfg, model.config.vision.image_size, progress=True), labels


def probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor) -> float:
    """Test accuracy of an L2-regularised softmax regression on standardised features."""
    train_x, test_x = train_x.clone(), test_x.clone()  # plain tensors (the encoders may return inference ones)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    torch.manual_seed(0)
    w = torch.zeros(train_x.shape[1], len(ACTIONS), requires_grad=True)
    b = torch.zeros(len(ACTIONS), requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=1e-2)
    for _ in range(300):
        loss = F.cross_entropy(train_x @ w + b, train_y) + 1e-3 * (w**2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ((test_x @ w + b).argmax(1) == test_y).float().mean().item()


def grid_features(videos: EncodedVideos) -> torch.Tensor:
    """Per-frame patch tokens pooled to a 2x2 grid, frames kept in order: (N, T * 4 * D)."""
    tokens = videos.frame_tokens[:, :, 1:]
    n, t, l, d = tokens.shape
    side = int(l**0.5)
    grid = tokens.reshape(n * t, side, side, d).permute(0, 3, 1, 2)
    return F.adaptive_avg_pool2d(grid, 2).reshape(n, -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("corpus_dir")
    parser.add_argument("--frames", type=int, default=4)
    args = parser.parse_args()
    torch.set_grad_enabled(False)  # the probe below turns it back on for its own weights
    model = SingularityBase.from_pretrained(args.model_dir).eval()
    files = CorpusFiles(Path(args.corpus_dir))
    captions = list(ACTIONS.values())
    texts = encode_text_list(model, ReleaseTokenizer(), captions, 16)
    cos = texts.feats @ texts.feats.t()
    off = cos[~torch.eye(len(captions), dtype=torch.bool)]
    print(f"template caption ITC features: cosine mean {off.mean():.3f}, min {off.min():.3f}")

    test, test_y = encode_split(model, files, "test", args.frames)
    nv = min(24, len(test_y))
    t_idx = torch.arange(len(captions)).repeat_interleave(nv)
    v_idx = torch.arange(nv).repeat(len(captions))
    fused = model.text_encoder(
        hidden_states=texts.tokens[t_idx],
        attention_mask=texts.mask[t_idx],
        encoder_hidden_states=test.tokens[v_idx],
        mode="fusion",
    )[:, 0].reshape(len(captions), nv, -1)
    print(
        f"fused [CLS] spread: across captions {fused.std(0).mean():.4f}, across videos {fused.std(1).mean():.4f}; "
        f"video tokens across videos {test.tokens.std(0).mean():.4f}"
    )

    train, train_y = encode_split(model, files, "train", args.frames)
    torch.set_grad_enabled(True)
    acc = probe_accuracy(grid_features(train), train_y, grid_features(test), test_y)
    print(
        f"linear probe on frozen patch tokens ({args.frames} ordered frames, 2x2 pooled): {100 * acc:.1f}% "
        f"(chance {100 / len(ACTIONS):.1f}%)"
    )


if __name__ == "__main__":
    main()
