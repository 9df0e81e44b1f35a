"""Re-ranking split across 2 gloo processes gives the single-process matrices."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from singularity_vl.eval.retrieval import encode_texts, encode_videos, rerank
from singularity_vl.models.config import tiny_config
from singularity_vl.models.singularity import create_model


def _inputs():
    torch.manual_seed(0)
    model = create_model(tiny_config("retrieval")).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 5000, (9, 8), generator=g)
    ids[:, 0] = 101
    texts = encode_texts(model, ids, torch.ones_like(ids))
    videos = encode_videos(model, torch.randn(5, 2, 3, 64, 64, generator=g))
    return model, texts, videos


def _worker(rank: int, world: int, port: int, out_path: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model, texts, videos = _inputs()
        scores = rerank(model, texts, videos, k_test=3)
        if rank == 0:
            torch.save({"v2t_x": scores.v2t_x, "t2v_x": scores.t2v_x}, out_path)
    finally:
        dist.destroy_process_group()


def test_two_ranks_match_one(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "scores.pt"
    mp.spawn(_worker, args=(2, port, str(out)), nprocs=2, join=True)
    model, texts, videos = _inputs()
    single = rerank(model, texts, videos, k_test=3)
    got = torch.load(out, weights_only=True)
    torch.testing.assert_close(got["v2t_x"], single.v2t_x, rtol=0, atol=1e-5)
    torch.testing.assert_close(got["t2v_x"], single.t2v_x, rtol=0, atol=1e-5)
