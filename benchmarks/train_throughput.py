"""Training throughput (samples/s) of the pre-training step (ITC+ITM+MLM, 1 frame, AdamW) by precision:
`auto` (our default: bf16 where the hardware runs it natively, else fp32) against plain fp32, same run.
On a CUDA device also `base` at batch 32. `--with-bf16` forces bf16 autocast on CPU too (very slow on CPUs
without AMX / AVX512-BF16).

    python benchmarks/train_throughput.py [--sizes tiny base] [--steps 3] [--with-bf16] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from singularity_vl.models.config import preset
from singularity_vl.models.precision import autocast, cpu_has_native_bf16, model_width, resolve_precision
from singularity_vl.models.singularity import create_model


def samples_per_s(size: str, precision: str, batch: int, steps: int, device: torch.device) -> float:
    torch.manual_seed(0)
    model = create_model(preset(size, "pretrain")).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    scaler = torch.amp.GradScaler("cuda") if resolve_precision(precision, device) == "fp16" else None
    res = model.config.vision.image_size
    video = torch.randn(batch, 1, 3, res, res, device=device)
    ids = torch.randint(1000, 20000, (batch, 32), device=device)
    ids[:, 0] = 101
    mask = torch.ones_like(ids)
    times = []
    for i in range(steps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast(precision, device, width=model_width(model)):
            loss = model(video, ids, mask).loss
        opt.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return batch / (sum(times) / len(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"], choices=["tiny", "base"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--with-bf16", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    cpu = torch.device("cpu")
    out: dict = {
        "env": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": cpu_has_native_bf16(),
            "auto_precision_cpu": {s: resolve_precision("auto", cpu, model_width(preset(s))) for s in args.sizes},
            "loadavg_1m_before": round(os.getloadavg()[0], 2),
        }
    }
    batches = {"tiny": 16, "base": 8}
    print(f"{'device':8} {'size':5} {'batch':>5} {'precision':>10} {'samples/s':>10}")
    runs = [
        (cpu, s, p, batches[s]) for s in args.sizes for p in ["fp32", "auto"] + (["bf16"] if args.with_bf16 else [])
    ]
    if torch.cuda.is_available():
        gpu = torch.device("cuda")
        out["env"]["gpu"] = torch.cuda.get_device_name()
        runs += [(gpu, "base", p, 32) for p in ("fp32", "auto")]
    for device, size, prec, batch in runs:
        if (
            device.type == "cpu"
            and prec == "auto"
            and resolve_precision("auto", cpu, model_width(preset(size))) == "fp32"
        ):
            key = f"{device.type}_{size}_auto"
            out[key] = {**out[f"{device.type}_{size}_fp32"], "precision": "auto=fp32"}
            print(f"{device.type:8} {size:5} {batch:>5} {'auto=fp32':>10} {out[key]['samples_per_s']:>10.2f}")
            continue
        sps = samples_per_s(size, prec, batch, args.steps, device)
        out[f"{device.type}_{size}_{prec}"] = {"batch": batch, "precision": prec, "samples_per_s": round(sps, 3)}
        print(f"{device.type:8} {size:5} {batch:>5} {prec:>10} {sps:>10.2f}")
    out["env"]["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
