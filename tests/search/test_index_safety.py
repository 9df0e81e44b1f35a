"""One indexer at a time (a second one waits or stops with a clear message), and an indexer killed
with SIGKILL at random moments, then resumed, ends with the index a clean build gives.

The other processes come from the `processes` fork server (see conftest.py); each is a separate process
with its own locks and files."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import threading
import time

import pytest
import torch
from safetensors import safe_open

from singularity_vl.cli import main
from singularity_vl.search.engine import SearchEngine
from singularity_vl.search.index import DB_NAME, SHARD_DIR, IndexBusyError, build_index, connect, index_lock

SETTINGS = {"num_frames": 2, "batch_size": 1, "shard_size": 1, "progress": False}


def _hold_lock(index, locked, release) -> None:
    with index_lock(index):
        locked.set()
        release.wait(120)


def test_second_indexer_stops_or_waits(tmp_path, tiny_model_dir, make_folder, capsys, processes):
    folder = make_folder(tmp_path / "v")
    index = tmp_path / "idx"
    index.mkdir()
    locked, release = processes.Event(), processes.Event()
    holder = processes.Process(target=_hold_lock, args=(index, locked, release))
    holder.start()
    try:
        assert locked.wait(60)
        with pytest.raises(IndexBusyError, match=f"another indexer \\(pid {holder.pid}\\) is updating this index"):
            build_index(folder, tiny_model_dir, index, **SETTINGS)
        assert not (index / DB_NAME).exists()  # stopped before touching anything
        args = ["index", str(folder), "--model", str(tiny_model_dir), "--out", str(index)]
        assert main(args) == 2
        assert f"another indexer (pid {holder.pid})" in capsys.readouterr().err
        t0 = time.monotonic()
        with pytest.raises(IndexBusyError, match="waited 0.3 s"):
            build_index(folder, tiny_model_dir, index, wait=0.3, **SETTINGS)
        assert time.monotonic() - t0 >= 0.3
        threading.Timer(0.5, release.set).start()  # the first indexer finishes while the second waits
        assert main([*args, "--wait", "60"]) == 0
        assert "7 new" in capsys.readouterr().out
    finally:
        release.set()
        holder.join(30)


def test_lock_of_a_killed_indexer_is_free(tmp_path, tiny_model_dir, make_folder, processes):
    folder = make_folder(tmp_path / "v")
    index = tmp_path / "idx"
    index.mkdir()
    locked, release = processes.Event(), processes.Event()
    holder = processes.Process(target=_hold_lock, args=(index, locked, release))
    holder.start()
    assert locked.wait(60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(30)
    assert build_index(folder, tiny_model_dir, index, **SETTINGS).added == 7  # no stale lock to clear by hand


def _index_child(folder, model_dir, index) -> None:
    torch.set_num_threads(1)
    build_index(folder, model_dir, index, **SETTINGS)


def _committed(index) -> int:
    if not (index / DB_NAME).exists():
        return 0
    db = sqlite3.connect(str(index / DB_NAME), timeout=30)
    try:
        return db.execute("SELECT COUNT(*) FROM media").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0
    finally:
        db.close()


def _contents(index) -> tuple[dict, dict]:
    """(meta without the generation token, {path: (id, status, error, timestamps, feats, frame_tokens)})."""
    db = connect(index)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta WHERE key != 'generation'").fetchall())
        rows = db.execute("SELECT path, id, status, error, timestamps, shard, tensor_key FROM media").fetchall()
    finally:
        db.close()
    out = {}
    for path, media_id, status, error, timestamps, shard, key in rows:
        tensors = (None, None)
        if status == "ok":
            with safe_open(str(index / SHARD_DIR / shard), framework="pt") as f:
                tensors = (f.get_tensor(f"{key}.feats"), f.get_tensor(f"{key}.frame_tokens").float())
        out[path] = (media_id, status, error, timestamps, *tensors)
    return meta, out


def test_kill_9_at_random_moments_then_resume_equals_clean_build(tmp_path, tiny_model_dir, make_folder, processes):
    folder = make_folder(tmp_path / "v")
    clean, index = tmp_path / "clean", tmp_path / "idx"
    t0 = time.monotonic()
    build_index(folder, tiny_model_dir, clean, **SETTINGS)
    per_file = (time.monotonic() - t0) / 7
    rng = random.Random(20240607)
    kills = []
    for _ in range(10):
        if len(kills) == 5:
            break
        before = _committed(index)
        child = processes.Process(target=_index_child, args=(folder, tiny_model_dir, index))
        child.start()
        target, deadline = before + rng.randint(0, 1), time.monotonic() + 120
        while child.is_alive() and _committed(index) < target and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 1.5 * per_file))  # in reading, encoding, writing a shard or committing
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
            kills.append(_committed(index))
        child.join(60)
        # what a kill leaves is a consistent index: every row's tensors are there
        if (index / DB_NAME).exists():
            engine = SearchEngine(index)
            if len(engine):
                assert len(engine.search("a red square", k=1, rerank=len(engine))) == 1
            engine.close()
    assert len(kills) >= 3, f"the indexer finished before it could be killed often enough: {kills}"
    assert any(0 < n < 7 for n in kills), kills  # at least one kill in the middle of the work

    left = _committed(index)
    summary = build_index(folder, tiny_model_dir, index, **SETTINGS)
    assert summary.unchanged == left and summary.added == 7 - left
    meta, got = _contents(index)
    clean_meta, want = _contents(clean)
    assert meta == clean_meta and set(got) == set(want)
    for path, (media_id, status, error, timestamps, feats, tokens) in want.items():
        g = got[path]
        assert g[:4] == (media_id, status, error, timestamps), path
        if status == "ok":
            torch.testing.assert_close(g[4], feats, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(g[5], tokens, atol=2e-3, rtol=2e-3)
    db = connect(index)
    used = {r[0] for r in db.execute("SELECT shard FROM media WHERE shard IS NOT NULL")}
    db.close()
    assert set(os.listdir(index / SHARD_DIR)) == used  # no orphan or half-written shard left
    assert not (index / (DB_NAME + "-journal")).exists()
