"""Evaluation memory: bytes held per encoded test video, before (concat tokens and per-frame tokens both
kept in fp32) and now (per-frame tokens once, in the storage dtype), and what it does to the scores.

A `base` retrieval model (random weights, seeded) evaluates a few generated videos at 224 px and 32 frames
(ActivityNet's test setting) through the real pipeline (`encode_media`, `rerank`). The earlier storage is
reproduced by keeping `encode_video`'s concat tokens and re-ranking each video from them; fp32 storage must
give the same scores (max |diff| <= 1e-4) and metrics, the bf16 option states its difference.

    python benchmarks/eval_memory.py [--videos 4] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from singularity_vl.data.annotations import load_retrieval_eval
from singularity_vl.data.text import ReleaseTokenizer
from singularity_vl.data.video_writer import moving_square_frames, write_video
from singularity_vl.eval.metrics import retrieval_metrics
from singularity_vl.eval.retrieval import rerank, video_match_scores, with_fusion_self_attention
from singularity_vl.eval.run import EvalConfig, encode_media, encode_text_list
from singularity_vl.models.config import preset
from singularity_vl.models.singularity import create_model

FRAMES = 32
ANET_VAL1_VIDEOS = 4917  # ActivityNet Captions val_1: the release's ActivityNet retrieval test set
GB = 1e9


def _corpus(root: Path, n: int) -> list[str]:
    captions = [f"a square moves across clip {i}" for i in range(n)]
    for i in range(n):
        write_video(root / f"v{i}.mp4", moving_square_frames(40, 120, 160, seed=i), fps=10, gop=10)
    (root / "test.json").write_text(json.dumps([{"video": f"v{i}.mp4", "caption": captions[i]} for i in range(n)]))
    return [str(root / "test.json"), str(root), "video"]


@torch.no_grad()
def _earlier_storage_scores(model, texts, media, cfg, res) -> tuple[torch.Tensor, int]:
    """The earlier layout: `encode_video`'s concat tokens and frame tokens both kept in fp32, each video
    re-ranked from the stored concat tokens. Returns (v2t scores, bytes per video)."""
    from singularity_vl.eval.run import _media_loader

    tokens, per_video = [], 0
    for batch in _media_loader(media, cfg, res, torch.device("cpu")):
        enc = model.encode_video(batch["video"])
        tokens.append(enc.tokens)
        per_video = (enc.tokens[0].numel() + enc.frame_tokens[0].numel()) * 4
    tokens = torch.cat(tokens)
    n_v, n_t = len(tokens), len(texts.feats)
    texts = with_fusion_self_attention(model, texts)
    scores = torch.full((n_v, n_t), -100.0)
    for v in range(n_v):
        idx = torch.arange(n_t)
        scores[v] = video_match_scores(model, texts, tokens[v], idx)
    return scores, per_video


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = create_model(preset("base", "retrieval")).eval()
    res = model.config.vision.image_size
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        spec = _corpus(Path(tmp), args.videos)
        ev = load_retrieval_eval(spec)
        texts = encode_text_list(model, ReleaseTokenizer(), ev.texts, 32)
        k = max(len(ev.texts), len(ev.media))  # every pair re-ranked: every score compared
        results = {}
        for dtype in ("fp32", "bf16"):
            cfg = EvalConfig(
                test_file=spec, num_frames_test=FRAMES, batch_size=2, precision="fp32", eval_store_dtype=dtype
            )
            videos = encode_media(model, ev.media, cfg, res, progress=False)
            s = rerank(model, texts, videos, k_test=k)
            results[dtype] = (s, videos.frame_tokens[0].numel() * videos.frame_tokens.element_size())
        earlier, before = _earlier_storage_scores(model, texts, ev.media, cfg, res)
    ref = retrieval_metrics(earlier, earlier.t(), ev.text_to_media, ev.media_to_text)
    out = {}
    for dtype, (s, per_video) in results.items():
        key = "base_32frames" if dtype == "fp32" else "base_32frames_bf16"
        out[key] = {
            "store_dtype": dtype,
            "bytes_per_video_before": before,
            "bytes_per_video": per_video,
            "ratio": round(before / per_video, 2),
            "max_abs_diff": float((s.v2t_x - earlier).abs().max()),
            "same_metrics": retrieval_metrics(s.v2t_x, s.t2v_x, ev.text_to_media, ev.media_to_text) == ref,
            "anet_val1_gb_before": round(before * ANET_VAL1_VIDEOS / GB, 1),
            "anet_val1_gb": round(per_video * ANET_VAL1_VIDEOS / GB, 1),
        }
    out["setting"] = {
        "videos": args.videos,
        "frames": FRAMES,
        "image_size": res,
        "anet_val1_videos": ANET_VAL1_VIDEOS,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.time() - start, 1),
    }
    head = f"{'storage':<10} {'bytes/video':>14} {'before':>14} {'ratio':>6} {'max|diff|':>10} {'same':>5}"
    print(f"{head} {'ANet val1':>10}")
    for key, r in out.items():
        if key == "setting":
            continue
        print(
            f"{r['store_dtype']:<10} {r['bytes_per_video']:>14,} {r['bytes_per_video_before']:>14,} {r['ratio']:>6}"
            f" {r['max_abs_diff']:>10.2e} {str(r['same_metrics']):>5} {r['anet_val1_gb']:>7.1f} GB"
            f" (was {r['anet_val1_gb_before']:.1f} GB)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
