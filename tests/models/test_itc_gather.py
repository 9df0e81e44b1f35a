"""ITC over the global batch: 2 gloo ranks with half a batch each give the full-batch loss, and gradients flow."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from singularity_vl.models.config import tiny_config
from singularity_vl.models.singularity import create_model


def _setup(n: int = 4):
    torch.manual_seed(0)
    model = create_model(tiny_config("retrieval")).eval()
    g = torch.Generator().manual_seed(2)
    video = torch.randn(n, 1, 3, 64, 64, generator=g)
    ids = torch.randint(1000, 5000, (n, 8), generator=g)
    ids[:, 0] = 101
    return model, video, ids, torch.ones_like(ids), torch.tensor([0, 1, 1, 2, 3][:n])


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model, video, ids, mask, vid = _setup()
        sl = slice(2 * rank, 2 * rank + 2)
        negs = (torch.tensor([1, 0]), torch.tensor([1, 0]))
        o = model(video[sl], ids[sl], mask[sl], vid[sl], itc_gather=True, itm_negatives=negs)
        o.loss_itc.backward()
        grad = model.text_proj.weight.grad.clone()
        losses = [torch.zeros(()) for _ in range(2)]
        dist.all_gather(losses, o.loss_itc.detach())
        dist.all_reduce(grad)
        if rank == 0:
            torch.save({"loss": torch.stack(losses).mean(), "grad": grad / 2}, out)
    finally:
        dist.destroy_process_group()


def test_global_batch_itc_matches_one_process(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "r.pt"
    mp.spawn(_worker, args=(port, str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    model, video, ids, mask, vid = _setup()
    o = model(video, ids, mask, vid, itm_negatives=(torch.tensor([1, 0, 3, 2]), torch.tensor([1, 0, 3, 2])))
    o.loss_itc.backward()
    torch.testing.assert_close(got["loss"], o.loss_itc.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["grad"], model.text_proj.weight.grad, rtol=1e-4, atol=1e-6)
    # without torch.distributed the option is the plain local loss
    model.zero_grad()
    local = model(video, ids, mask, vid, itc_gather=True, itm_negatives=(torch.tensor([1, 0, 3, 2]),) * 2)
    torch.testing.assert_close(local.loss_itc, o.loss_itc)


def _uneven_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model, video, ids, mask, vid = _setup(5)
        sl, negs = (slice(0, 3), torch.tensor([1, 2, 0])) if rank == 0 else (slice(3, 5), torch.tensor([1, 0]))
        o = model(video[sl], ids[sl], mask[sl], vid[sl], itc_gather=True, itm_negatives=(negs, negs))
        n = sl.stop - sl.start
        (o.loss_itc * n / 5).backward()  # the global batch's mean, split by rows
        grad = model.text_proj.weight.grad.clone()
        weighted = o.loss_itc.detach() * n / 5
        dist.all_reduce(weighted)
        dist.all_reduce(grad)
        if rank == 0:
            torch.save({"loss": weighted, "grad": grad}, out)
    finally:
        dist.destroy_process_group()


def test_ranks_with_different_batch_sizes_gather_the_global_batch(tmp_path):
    # a rank whose batch lost unreadable files holds fewer rows: the gather pads and cuts, no crash or hang
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "r.pt"
    mp.spawn(_uneven_worker, args=(port, str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    model, video, ids, mask, vid = _setup(5)
    negs = torch.tensor([1, 2, 0, 4, 3])
    o = model(video, ids, mask, vid, itm_negatives=(negs, negs))
    o.loss_itc.backward()
    torch.testing.assert_close(got["loss"], o.loss_itc.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["grad"], model.text_proj.weight.grad, rtol=1e-4, atol=1e-6)
