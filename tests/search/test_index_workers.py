"""Decoding in worker processes beside the encoder stores exactly what decoding in the indexing process does."""

from __future__ import annotations

import sqlite3

import pytest
from safetensors.torch import load_file

from singularity_vl.search.index import SHARD_DIR, SearchIndexError, build_index


def _contents(index):
    """path -> (status, error, timestamps, feats, frame tokens) of every indexed file."""
    db = sqlite3.connect(str(index / "index.db"))
    try:
        rows = db.execute("SELECT path, status, error, timestamps, shard, tensor_key FROM media").fetchall()
    finally:
        db.close()
    shards = {}
    out = {}
    for path, status, error, timestamps, shard, key in rows:
        tensors = None
        if shard is not None:
            shards.setdefault(shard, load_file(str(index / SHARD_DIR / shard)))
            tensors = (shards[shard][f"{key}.feats"], shards[shard][f"{key}.frame_tokens"])
        out[path] = (status, error, timestamps, tensors)
    return out


def test_worker_processes_index_what_one_process_does(tmp_path, tiny_model_dir, make_folder, capsys):
    folder = make_folder(tmp_path / "videos")
    one = _contents_of_build(folder, tiny_model_dir, tmp_path / "one", workers=0)
    two = _contents_of_build(folder, tiny_model_dir, tmp_path / "two", workers=2, shard_size=3)
    assert one.keys() == two.keys() and len(one) == 7
    for path, (status, error, timestamps, tensors) in one.items():
        other = two[path]
        assert (status, error, timestamps) == other[:3], path
        if tensors is not None:
            assert other[3][0].equal(tensors[0]) and other[3][1].equal(tensors[1]), path
    assert sum(1 for v in one.values() if v[0] == "error") == 1  # the corrupt file, recorded in both
    with pytest.raises(SearchIndexError, match="workers"):
        build_index(folder, tiny_model_dir, tmp_path / "bad", workers=-1, progress=False)


def _contents_of_build(folder, model_dir, out, **kwargs):
    build_index(folder, model_dir, out, num_frames=4, progress=False, **kwargs)
    return _contents(out)
