"""Search latency over an index of N videos (default 10,000): synthetic stored features, real model.

The index (SQLite rows + safetensors shards) is filled with random unit-norm frame features and random
frame tokens of the right shapes, so only the query path is measured: text encoding, dual-encoder
ranking over every file, and (with re-ranking) ITM over the top candidates from their cached tokens.
Reports p50 / p95 per setting; the baseline is the same query without re-ranking, in the same run.

    python benchmarks/search.py [--videos 10000] [--frames 8] [--preset tiny] [--queries 40] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import torch
from safetensors.torch import save_file

from singularity_vl.models.config import preset
from singularity_vl.models.singularity import create_model
from singularity_vl.search.engine import SearchEngine
from singularity_vl.search.index import SHARD_DIR, connect, model_fingerprint

QUERIES = [
    "a person throws a ball",
    "a dog runs across a field",
    "cars driving on a wet road at night",
    "someone cooking pasta in a kitchen",
    "a child rides a bicycle",
    "waves crashing on rocks",
    "a man playing guitar on stage",
    "people dancing at a wedding",
]


def synthetic_index(root: Path, model_dir: Path, model, n: int, frames: int, shard_size: int = 1000) -> Path:
    index = root / "index"
    (index / SHARD_DIR).mkdir(parents=True)
    db = connect(index)
    meta = {"root": str(root), "model": str(model_dir), "model_fingerprint": model_fingerprint(model_dir)}
    db.executemany("INSERT INTO meta VALUES (?, ?)", [*meta.items(), ("num_frames", str(frames))])
    cfg = model.config
    tokens = (cfg.vision.image_size // cfg.vision.patch_size) ** 2 + 1
    gen = torch.Generator().manual_seed(0)
    for start in range(0, n, shard_size):
        shard = f"{uuid.uuid4().hex}.safetensors"
        tensors, rows = {}, []
        for i in range(start, min(n, start + shard_size)):
            key = f"v{i}"
            tensors[f"{key}.feats"] = torch.nn.functional.normalize(
                torch.randn(frames, cfg.embed_dim, generator=gen), dim=-1
            )
            tensors[f"{key}.frame_tokens"] = torch.randn(frames, tokens, cfg.vision.hidden_size, generator=gen).half()
            times = json.dumps([round(t * 0.5, 2) for t in range(frames)])
            rows.append(
                (f"video{i}.mp4", 1, 1, "ok", 4.0, 2.0, json.dumps(list(range(frames))), times, shard, key, 0.0)
            )
        save_file(tensors, str(index / SHARD_DIR / shard))
        db.executemany(
            "INSERT INTO media (path, size, mtime_ns, status, duration, fps, frame_indices, timestamps, shard,"
            " tensor_key, indexed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    db.commit()
    db.close()
    return index


def measure(engine: SearchEngine, rerank: int, queries: int) -> dict:
    engine.search(QUERIES[0], k=10, rerank=rerank)  # warm-up
    times = []
    for q in range(queries):
        start = time.perf_counter()
        engine.search(QUERIES[q % len(QUERIES)] + f" {q}", k=10, rerank=rerank)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {
        "rerank": rerank,
        "p50_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[min(len(times) - 1, int(0.95 * len(times)))], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=10_000)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--preset", default="tiny", choices=["tiny", "base"])
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--rerank", type=int, nargs="+", default=[0, 16, 64])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = create_model(preset(args.preset, "retrieval")).eval()
        model.save_pretrained(root / "model")
        start = time.time()
        index = synthetic_index(root, root / "model", model, args.videos, args.frames)
        built = time.time() - start
        start = time.time()
        engine = SearchEngine(index)
        opened = time.time() - start
        rows = [measure(engine, r, args.queries) for r in args.rerank]
    base = rows[0]["p50_ms"]
    for r in rows:
        r["p50_vs_no_rerank"] = round(r["p50_ms"] / base, 2)
    print(f"search over {args.videos} videos x {args.frames} frames ({args.preset} model, {args.queries} queries)")
    print(f"{'rerank':>7} {'p50 ms':>9} {'p95 ms':>9} {'p50 / no rerank':>16}")
    for r in rows:
        print(f"{r['rerank']:>7} {r['p50_ms']:>9.2f} {r['p95_ms']:>9.2f} {r['p50_vs_no_rerank']:>16.2f}")
    print(f"index written in {built:.1f} s, opened in {opened:.1f} s; load average {os.getloadavg()[0]:.2f}")
    if args.json:
        result = {
            "videos": args.videos,
            "frames": args.frames,
            "preset": args.preset,
            "queries": args.queries,
            "torch_threads": torch.get_num_threads(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "open_seconds": round(opened, 2),
            "results": rows,
        }
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
