"""Training steps per second (ITC+ITM+MLM, 1 frame, AdamW step included), same model, same run:

- `fp32_eager`: the plain path: fp32, explicit softmax(QK^T) attention, the release's loss procedure
  (every ITM pair re-projects its video through the fusion layers' key/value weights; full MLM logits)
  and the release's optimizer (`torch.optim.AdamW`, which on CPU updates one tensor at a time);
- `default`: ours: SDPA attention, mixed precision `auto` (bf16 autocast where the CPU runs bf16 natively,
  i.e. AMX or AVX512-BF16, for models from `CPU_BF16_MIN_WIDTH` wide: `base`, not `tiny`; fp32 elsewhere,
  where PyTorch's bf16 GEMM is ~100x slower or too small to pay for the casts), shared video
  keys/values and MLM logits only at masked positions (same numbers; see tests), and the trainer's
  optimizer (`create_optimizer`: the same AdamW update in PyTorch's fused kernel);
- `bf16` (optional, `--with-bf16`): the default path with bf16 autocast forced.

    python benchmarks/train_step.py [--sizes tiny base] [--steps 5] [--with-bf16] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from singularity_vl.models.config import preset
from singularity_vl.models.precision import autocast, cpu_has_native_bf16, model_width, resolve_precision
from singularity_vl.models.singularity import create_model
from singularity_vl.train.optim import create_optimizer, param_groups

BATCH = {"tiny": 16, "base": 8}
PATHS = {
    "fp32_eager": dict(attn="eager", precision="fp32", fast_losses=False, fused_adamw=False),
    "default": dict(attn="sdpa", precision="auto", fast_losses=True, fused_adamw=True),
    "bf16": dict(attn="sdpa", precision="bf16", fast_losses=True, fused_adamw=True),
}


def _batch(cfg, batch: int, gen: torch.Generator):
    res = cfg.vision.image_size
    video = torch.randn(batch, 1, 3, res, res, generator=gen)
    ids = torch.randint(1000, 20000, (batch, 32), generator=gen)
    ids[:, 0] = cfg.text.cls_token_id
    mask = torch.ones_like(ids)
    mask[::2, 20:] = 0  # some padding, as in real captions
    ids[mask == 0] = 0
    return video, ids, mask


def build_step(size: str, path: str) -> Callable[[], None]:
    """A closure running one training step (forward, backward, AdamW) of a fresh model on one path."""
    spec = PATHS[path]
    torch.manual_seed(0)
    cfg = preset(size, "pretrain")
    cfg.attn_implementation = spec["attn"]
    cfg.fast_losses = spec["fast_losses"]
    model = create_model(cfg).train()
    if spec["fused_adamw"]:
        opt = create_optimizer(model, lr=1e-5)
    else:
        opt = torch.optim.AdamW(param_groups(model, 1e-5, 0.02), lr=1e-5, foreach=False)
    gen = torch.Generator().manual_seed(0)
    video, ids, mask = _batch(cfg, BATCH[size], gen)

    def step() -> None:
        with autocast(spec["precision"], "cpu", width=model_width(model)):
            out = model(video, ids, mask, torch.arange(len(ids)), generator=gen)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    return step


def time_steps(size: str, paths: list[str], steps: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each timed training step of each path. The paths take turns step by step, so a change in
    the machine's speed during the run (this VM's drifts by 20-40%) hits all of them alike."""
    runners = {p: build_step(size, p) for p in paths}
    for run in runners.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {p: [] for p in paths}
    for _ in range(steps):
        for p, run in runners.items():
            start = time.perf_counter()
            run()
            times[p].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"], choices=["tiny", "base"])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per path (median reported)")
    parser.add_argument("--with-bf16", action="store_true", help="also time forced bf16 autocast")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    paths = ["fp32_eager", "default"] + (["bf16"] if args.with_bf16 else [])
    env = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_native_bf16(),
        "default_precision": {s: resolve_precision("auto", "cpu", model_width(preset(s))) for s in args.sizes},
        "loadavg_1m_before": round(os.getloadavg()[0], 2),
    }
    print(
        f"CPU {env['cpu_capability']}, native bf16: {env['native_bf16']} -> default precision "
        f"{env['default_precision']}; torch {env['torch']}, {env['threads']} threads"
    )
    header = f"{'size':6} {'batch':>5} " + " ".join(f"{p + ' s/step':>17}" for p in paths) + f" {'speedup':>8}"
    print(header)
    results: dict[str, dict] = {}
    for size in args.sizes:
        raw = time_steps(size, paths, args.steps)
        secs = {p: statistics.median(t) for p, t in raw.items()}
        row: dict = {"batch": BATCH[size], "steps_timed": args.steps, "statistic": "median, paths interleaved"}
        for p, s in secs.items():
            row[f"{p}_s_per_step"] = round(s, 4)
            row[f"{p}_steps_per_s"] = round(1 / s, 4)
            row[f"{p}_s_each_step"] = [round(t, 4) for t in raw[p]]
        row["speedup"] = round(secs["fp32_eager"] / secs["default"], 3)
        if "bf16" in secs:
            row["bf16_speedup"] = round(secs["fp32_eager"] / secs["bf16"], 3)
        results[size] = row
        print(
            f"{size:6} {BATCH[size]:>5} " + " ".join(f"{secs[p]:>17.3f}" for p in paths) + f" {row['speedup']:>7.2f}x"
        )
    env["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    print(f"load average (1 min) before {env['loadavg_1m_before']}, after {env['loadavg_1m_after']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**results, "env": env}, f, indent=2)


if __name__ == "__main__":
    main()
