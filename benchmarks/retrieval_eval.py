"""Retrieval re-ranking: the release's procedure against our fast path, same run, same features
(random weights, fp32, `concat`), timing only the re-ranking stage both share the encoded inputs of.

Cases: `tiny` 512 videos x 512 texts, k_test 128, 4 frames; `base` 32 x 32, k_test 16, 4 and 12 frames.

    python benchmarks/retrieval_eval.py [--cases ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from singularity_vl.eval.retrieval import encode_texts, encode_videos, rerank, rerank_release_procedure
from singularity_vl.models.config import preset
from singularity_vl.models.singularity import create_model

CASES = {
    "tiny_k128_4frames": dict(size="tiny", n=512, k=128, frames=4),
    "base_k16_4frames": dict(size="base", n=32, k=16, frames=4),
    "base_k16_12frames": dict(size="base", n=32, k=16, frames=12),
}


@torch.no_grad()
def run_case(size: str, n: int, k: int, frames: int) -> dict:
    torch.manual_seed(0)
    model = create_model(preset(size, "retrieval")).eval()
    res = model.config.vision.image_size
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (n, 32), generator=gen)
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    mask[::2, 16:] = 0
    ids[mask == 0] = 0
    texts = encode_texts(model, ids, mask)
    chunks = [encode_videos(model, torch.randn(8, frames, 3, res, res, generator=gen)) for _ in range(n // 8)]
    videos = type(chunks[0])(torch.cat([c.frame_tokens for c in chunks]), torch.cat([c.feats for c in chunks]))
    start = time.perf_counter()
    ref = rerank_release_procedure(model, texts, videos, k_test=k)
    t_ref = time.perf_counter() - start
    start = time.perf_counter()
    fast = rerank(model, texts, videos, k_test=k)
    t_fast = time.perf_counter() - start
    diff = max((fast.v2t_x - ref.v2t_x).abs().max().item(), (fast.t2v_x - ref.t2v_x).abs().max().item())
    return {
        "release_s": round(t_ref, 3),
        "fast_s": round(t_fast, 3),
        "speedup": round(t_ref / t_fast, 2),
        "max_abs_diff": diff,
        "videos": n,
        "texts": n,
        "k_test": k,
        "frames": frames,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    out: dict = {
        "env": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "loadavg_1m_before": round(os.getloadavg()[0], 2),
        }
    }
    print(f"{'case':20} {'release (s)':>12} {'fast (s)':>9} {'speedup':>8} {'max |diff|':>11}")
    for name in args.cases:
        r = run_case(**CASES[name])
        out[name] = r
        print(f"{name:20} {r['release_s']:>12.2f} {r['fast_s']:>9.2f} {r['speedup']:>7.2f}x {r['max_abs_diff']:>11.2e}")
    out["env"]["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    print(f"load average {out['env']['loadavg_1m_before']} -> {out['env']['loadavg_1m_after']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
