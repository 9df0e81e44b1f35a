"""Training that loses nothing and cannot hang: kill -9 at random moments resumes to the same weights,
a checkpoint is never missing, each step is saved once, accumulation is flushed at epoch ends, and
`torchrun` ranks whose batches are unreadable keep taking part in every collective."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from singularity_vl.data.video_writer import moving_square_frames, write_video
from singularity_vl.models.config import tiny_config
from singularity_vl.models.singularity import create_model
from singularity_vl.train import checkpoint as ck
from singularity_vl.train.config import load_train_config
from singularity_vl.train.loop import EpochSampler, Trainer
from singularity_vl.train.optim import create_optimizer


def _corpus(root: Path, n: int, unreadable: set[int] = frozenset()) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        if i in unreadable:
            (root / f"v{i}.mp4").write_bytes(b"not a video " * 20)
        else:
            write_video(root / f"v{i}.mp4", moving_square_frames(6, 32, 32, seed=i), fps=10, gop=3)
        entries.append({"video": f"v{i}.mp4", "caption": f"clip number {i} with a square"})
    (root / "train.json").write_text(json.dumps(entries))
    return root


def _overrides(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "task=retrieval",
        f"train_file=[[{root}/train.json,{root},video]]",
        f"output_dir={out}",
        "model=tiny",
        "image_res=32",
        "batch_size.video=4",
        "num_workers=0",
        "log_every=1",
        "optimizer.lr=5e-4",
        "scheduler.warmup_epochs=0",
        "max_txt_l=10",
        "device=cpu",
        *extra,
    ]


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(ck.list_checkpoints(out)[-1] / "model.safetensors"))


def _train_cmd(root: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "singularity_vl.cli", "train", *_overrides(root, out, *extra)]


def test_kill_9_at_random_moments_resumes_to_the_same_weights(tmp_path):
    root = _corpus(tmp_path / "data", 8)
    extra = ("scheduler.epochs=4", "checkpoint_every=1", "keep_last=1")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_train_cmd(root, full, *extra), env=env, check=True, capture_output=True, timeout=300)
    rng = random.Random(0)
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(
            _train_cmd(root, killed, *extra), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        log = killed / "log.jsonl"
        lines = len(log.read_text().splitlines()) if log.is_file() else 0
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline:  # until this attempt has made progress
            if log.is_file() and len(log.read_text().splitlines()) > lines:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))  # then at a random moment: mid-step, mid-save, mid-epoch-end
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2, "the run finished before it could be killed: make it longer"
    subprocess.run(_train_cmd(root, killed, *extra), env=env, check=True, capture_output=True, timeout=300)
    a, b = _final_weights(full), _final_weights(killed)
    assert ck.list_checkpoints(killed)[-1].name == ck.list_checkpoints(full)[-1].name
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert not list(killed.glob(".tmp_ckpt_*")) and not list(killed.glob(".replaced_*"))


def test_replacing_a_checkpoint_of_the_same_step_never_leaves_none(tmp_path, monkeypatch):
    model = create_model(tiny_config("retrieval"))
    state = {"optimizer": create_optimizer(model).state_dict()}
    ck.save_checkpoint(tmp_path, 5, model, state, {"epoch": 0}, keep_last=1)
    real = os.replace
    calls = []

    def cut_after_moving_the_old_one_aside(src, dst):
        if Path(dst).name.endswith(".tmp") or Path(src).name.endswith(".tmp"):
            return real(src, dst)  # files inside the new checkpoint
        calls.append((Path(src).name, Path(dst).name))
        if Path(src).name.startswith(".tmp_ckpt_"):  # the crash comes before the new one is in place
            raise KeyboardInterrupt("killed")
        return real(src, dst)

    monkeypatch.setattr(ck.os, "replace", cut_after_moving_the_old_one_aside)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(tmp_path, 5, model, state, {"epoch": 1}, keep_last=1)
    monkeypatch.setattr(ck.os, "replace", real)
    assert calls[0][0] == "ckpt_00000005"  # the old one was moved aside first, not deleted
    found = ck.latest_checkpoint(tmp_path)
    assert found is not None and found[0].name == "ckpt_00000005" and found[3]["epoch"] == 0
    ck.save_checkpoint(tmp_path, 5, model, state, {"epoch": 1}, keep_last=1)
    assert ck.latest_checkpoint(tmp_path)[3]["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_00000005"]


def test_each_step_is_saved_once_and_accumulation_is_flushed_at_epoch_ends(tmp_path, monkeypatch):
    root = _corpus(tmp_path / "data", 12)  # batch 4: 3 micro-batches per epoch
    saved = []
    real = ck.save_checkpoint
    monkeypatch.setattr(
        ck, "save_checkpoint", lambda run_dir, step, *a, **k: saved.append(step) or real(run_dir, step, *a, **k)
    )
    cfg = load_train_config(
        None, _overrides(root, tmp_path / "run", "scheduler.epochs=2", "grad_accum=2", "checkpoint_every=1")
    )
    trainer = Trainer(cfg)
    summary = trainer.run()
    # 3 micro-batches, groups of 2: the third is a group of its own, stepped at the epoch end
    assert summary["global_step"] == 4
    assert len(saved) == len(set(saved)) == 4, saved
    assert all(p.grad is None for p in trainer.model.parameters())  # nothing carried over
    steps = [r for r in map(json.loads, (tmp_path / "run" / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4] and [r["epoch"] for r in steps] == [0, 0, 1, 1]


def test_torchrun_with_mostly_unreadable_files_finishes(tmp_path):
    # the files of rank 0's first batch (and one of rank 1's) are readable, the other five are not: at the
    # first step rank 0 has a usable batch and rank 1 does not, and both must still agree on what to do
    n, per_rank, batch = 8, 4, 2
    order = EpochSampler(n, batch, seed=42, rank=0, world=2).indices()
    assert len(order) == per_rank
    rank1 = EpochSampler(n, batch, seed=42, rank=1, world=2).indices()
    readable = {order[0], order[1], rank1[0]}
    root = _corpus(tmp_path / "data", n, unreadable=set(range(n)) - readable)
    out = tmp_path / "ddp"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "singularity_vl.cli",
        "train",
        *_overrides(root, out, "scheduler.epochs=2", f"batch_size.video={batch}"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ck.list_checkpoints(out) and (out / "best" / "model.safetensors").is_file()
    state = torch.load(ck.list_checkpoints(out)[-1] / ck.STATE_NAME, weights_only=True)
    rngs = state["rng_ranks"]  # each rank resumes its own random draws (seeded apart, as the release)
    assert len(rngs) == 2 and not torch.equal(rngs[0]["torch"], rngs[1]["torch"])
    skipped = [
        r["skipped_files"]
        for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())
        if "skipped_files" in r
    ]
    assert skipped == [5, 5]  # every unreadable file of both ranks counted, each epoch


def _eval_scripted(monkeypatch, val_scores: list[float]):
    """`evaluate` replaced by scripted metrics: val's r_mean follows `val_scores` epoch by epoch, test's
    is 100 + the epoch, so which epoch's numbers land where can be read off."""
    from singularity_vl.eval import run

    calls = {"val": 0, "test": 0}

    def fake(model, cfg, out_dir):
        split = "val" if str(out_dir).endswith("_val") else "test"
        epoch = calls[split]
        calls[split] += 1
        value = val_scores[epoch] if split == "val" else 100.0 + epoch
        return {"task": "retrieval", "reranked": {"r_mean": value}, "weights_sum": _weights_sum(model)}

    monkeypatch.setattr(run, "evaluate", fake)


def _weights_sum(model) -> float:
    return float(sum(p.detach().double().sum() for p in model.parameters()))


@pytest.mark.parametrize("selection", ["val", "last"])
def test_model_selection_keeps_the_best_on_val_or_the_last_and_reports_val_and_test(tmp_path, monkeypatch, selection):
    root = _corpus(tmp_path / "data", 8)
    spec = f"[{root}/train.json,{root},video]"
    _eval_scripted(monkeypatch, [10.0, 30.0, 20.0])
    out = tmp_path / "run"
    cfg = load_train_config(
        None,
        _overrides(
            root, out, "scheduler.epochs=3", f"val_file={spec}", f"test_file={spec}", f"model_selection={selection}"
        ),
    )
    summary = Trainer(cfg).run()
    kept = 1 if selection == "val" else 2
    metrics = json.loads((out / "metrics.json").read_text())
    assert summary["kept_epoch"] == metrics["kept_epoch"] == kept
    assert metrics["val"]["reranked"]["r_mean"] == [10.0, 30.0, 20.0][kept]
    assert metrics["test"]["reranked"]["r_mean"] == 100.0 + kept  # test of the kept epoch, not the best test
    from singularity_vl.models.singularity import SingularityBase

    best = SingularityBase.from_pretrained(out / "best")
    assert _weights_sum(best) == pytest.approx(metrics["val"]["weights_sum"], rel=0, abs=1e-9)
    assert json.loads((out / "best" / "metrics.json").read_text())["kept_epoch"] == kept


def test_model_selection_val_needs_a_val_file(tmp_path):
    with pytest.raises(ValueError, match="val_file"):
        load_train_config(None, _overrides(tmp_path, tmp_path / "run", "model_selection=val"))
