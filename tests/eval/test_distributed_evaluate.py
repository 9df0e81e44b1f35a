"""`evaluate` under torch.distributed (2 gloo processes): each rank encodes and scores its share, the
metrics equal a single process's, only rank 0 writes, and an unreadable video stops every rank alike."""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from singularity_vl.data.video_writer import moving_square_frames, write_video
from singularity_vl.eval.run import EvalConfig, EvalDataError, evaluate
from singularity_vl.models.config import tiny_config
from singularity_vl.models.singularity import create_model


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("disteval")
    for i in range(5):
        write_video(root / f"v{i}.mp4", moving_square_frames(8, 32, 32, seed=i), fps=10, gop=4)
    (root / "broken.mp4").write_bytes(b"not a video" * 10)
    (root / "ret.json").write_text(
        json.dumps([{"video": f"v{i}.mp4", "caption": [f"square {i} moves", f"clip {i}"]} for i in range(5)])
    )
    (root / "ret_broken.json").write_text(
        json.dumps([{"video": v, "caption": f"caption {v}"} for v in ("v0.mp4", "broken.mp4", "v2.mp4")])
    )
    (root / "mc.json").write_text(
        json.dumps(
            [{"video": f"v{i}.mp4", "caption": [f"option {j}" for j in range(4)], "answer": i % 4} for i in range(5)]
        )
    )
    (root / "qa.json").write_text(
        json.dumps(
            [{"video": f"v{i}.mp4", "question": "what moves?", "answer": "square", "question_id": i} for i in range(5)]
        )
    )
    (root / "answers.json").write_text(json.dumps(["square", "circle", "red"]))
    for task in ("retrieval", "qa"):
        torch.manual_seed(0)
        create_model(tiny_config(task)).save_pretrained(root / f"model_{task}")
    return root


def _configs(root) -> dict[str, EvalConfig]:
    common = dict(num_frames_test=2, batch_size=2, num_workers=0)
    return {
        "retrieval": EvalConfig(
            task="retrieval", test_file=[f"{root}/ret.json", str(root), "video"], k_test=3, **common
        ),
        "mc": EvalConfig(task="mc", test_file=[f"{root}/mc.json", str(root), "video"], **common),
        "qa": EvalConfig(
            task="qa",
            test_file=[f"{root}/qa.json", str(root), "video"],
            answer_list=f"{root}/answers.json",
            k_test=2,
            **common,
        ),
        "broken": EvalConfig(task="retrieval", test_file=[f"{root}/ret_broken.json", str(root), "video"], **common),
    }


def _run(root, name: str, out) -> dict | str:
    from singularity_vl.models.singularity import SingularityBase

    model = SingularityBase.from_pretrained(root / ("model_qa" if name == "qa" else "model_retrieval"))
    try:
        return evaluate(model, _configs(root)[name], out)
    except EvalDataError as e:
        return f"EvalDataError: {e}"


def _worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from pathlib import Path

        results = {name: _run(Path(root), name, Path(out) / f"{name}_rank{rank}") for name in _configs(root)}
        (Path(out) / f"results_rank{rank}.json").write_text(json.dumps(results))
    finally:
        dist.destroy_process_group()


def test_two_ranks_match_one_and_only_rank_0_writes(tmp_path, data):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.start_processes(
        _worker, args=(2, port, str(data), str(tmp_path)), nprocs=2, join=False, start_method="spawn"
    )
    deadline = time.time() + 300
    while not ctx.join(timeout=5):  # a rank stuck in a collective would hang here: fail instead
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("distributed evaluation did not finish (a rank is waiting in a collective)")
    ranks = [json.loads((tmp_path / f"results_rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # every rank returns the same metrics
    for name in ("retrieval", "mc", "qa"):
        single = _run(data, name, tmp_path / f"{name}_single")
        assert ranks[0][name] == single, name
        assert (tmp_path / f"{name}_rank0" / "metrics.json").is_file()
        assert not (tmp_path / f"{name}_rank1").exists()  # one writer
        written = (tmp_path / f"{name}_rank0").iterdir()
        for f in written:
            assert f.read_text() == (tmp_path / f"{name}_single" / f.name).read_text(), f.name
    # the unreadable video is in one rank's share; both ranks stop with the same error, none hangs
    assert all(r["broken"].startswith("EvalDataError: 1 test video") for r in ranks)


def test_evaluate_command_under_torchrun_splits_the_work(tmp_path, data):
    import subprocess
    import sys
    from pathlib import Path

    args = ["evaluate", "--checkpoint", str(data / "model_retrieval"), "--device", "cpu", "--num-frames", "2"]
    args += [f"test_file=[{data}/ret.json,{data},video]", "k_test=3", "batch_size=2", "num_workers=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "singularity_vl.cli"]
    proc = subprocess.run(
        [*cmd, *args, "--out", str(tmp_path / "ddp")], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('"reranked"') == 1  # one rank reports (and writes); each did its share
    single = subprocess.run(
        [sys.executable, "-m", "singularity_vl.cli", *args, "--out", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    for name in ("metrics.json", "ranks.json"):
        assert (tmp_path / "ddp" / name).read_text() == (tmp_path / "one" / name).read_text(), name
