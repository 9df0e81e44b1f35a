"""The smallest end-to-end run: a tiny pre-training model learns to match random "videos" to captions
on CPU, then is saved, reloaded and checked: a 30-second check that an installation works."""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from singularity_vl.models.config import tiny_config
from singularity_vl.models.singularity import SingularityBase, create_model


def run_smoke(out: Path, steps: int = 30, seed: int = 0) -> bool:
    """Train ITC+ITM+MLM on 8 fixed (video, caption) pairs; True when the loss fell and reload is exact."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg = tiny_config(task="pretrain")
    model = create_model(cfg)
    b, res = 8, cfg.vision.image_size
    video = torch.randn(b, 1, 3, res, res, generator=gen)
    input_ids = torch.randint(1000, 3000, (b, 10), generator=gen)
    input_ids[:, 0] = cfg.text.cls_token_id
    mask = torch.ones_like(input_ids)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    first = last = None
    for _ in tqdm(range(steps), desc="smoke training", unit="step"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_ = model(video, input_ids, mask, torch.arange(b), generator=gen)
        opt.zero_grad()
        out_.loss.backward()
        opt.step()
        first = out_.loss.item() if first is None else first
        last = out_.loss.item()
    model.eval()
    model.save_pretrained(out)
    again = SingularityBase.from_pretrained(out).eval()
    with torch.no_grad():
        a = model.encode_video(video).tokens
        c = again.encode_video(video).tokens
    exact = torch.equal(a, c)
    print(f"loss {first:.3f} -> {last:.3f} over {steps} steps; saved to {out}; reload exact: {exact}")
    return last < first and exact
