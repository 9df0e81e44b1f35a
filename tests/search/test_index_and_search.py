"""Indexing (incremental, corrupt files, interruption) and searching (re-ranking from cached tokens)."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest
import torch

from singularity_vl.cli import main
from singularity_vl.data.transforms import EvalTransform
from singularity_vl.data.video_reader import read_clip
from singularity_vl.search.engine import SearchEngine
from singularity_vl.search.index import SHARD_DIR, SearchIndexError, build_index


def _rows(index):
    db = sqlite3.connect(str(index / "index.db"))
    try:
        return {r[0]: r[1:] for r in db.execute("SELECT path, status, error, duration, timestamps, shard FROM media")}
    finally:
        db.close()


def test_index_records_every_file_and_the_corrupt_one(built_index):
    folder, index = built_index
    rows = _rows(index)
    assert set(rows) == {
        "broken.mp4",
        "carphone_distorted.mp4",
        "carphone_pristine.mp4",
        "bikes.mp4",
        "red.png",
        "clips/square.mp4",
        "clips/square2.webm",
    }
    status, error, *_ = rows["broken.mp4"]
    assert status == "error" and error
    status, _, duration, timestamps, shard = rows["clips/square.mp4"]
    assert status == "ok" and duration == pytest.approx(2.0) and len(json.loads(timestamps)) == 4
    assert (index / SHARD_DIR / shard).is_file()


def test_incremental_reindex(tmp_path, tiny_model_dir, make_folder):
    folder = make_folder(tmp_path / "v")
    index = tmp_path / "idx"
    first = build_index(folder, tiny_model_dir, index, num_frames=2, progress=False)
    assert (first.added, len(first.failed)) == (7, 1)
    again = build_index(folder, tiny_model_dir, index, num_frames=2, progress=False)
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, 7)
    shards_before = set(os.listdir(index / SHARD_DIR))
    (folder / "red.png").unlink()
    (folder / "clips" / "square.mp4").write_bytes((folder / "bikes.mp4").read_bytes())  # changed content
    third = build_index(folder, tiny_model_dir, index, num_frames=2, progress=False)
    assert (third.added, third.updated, third.removed, third.unchanged) == (0, 1, 1, 5)
    rows = _rows(index)
    assert "red.png" not in rows and rows["clips/square.mp4"][2] == pytest.approx(10.0)  # now bikes' duration
    used = {r[4] for r in rows.values() if r[4]}
    assert set(os.listdir(index / SHARD_DIR)) == used and used - shards_before  # old shard rows dropped
    with pytest.raises(SearchIndexError, match="built differently"):
        build_index(folder, tiny_model_dir, index, num_frames=3, progress=False)
    assert build_index(folder, tiny_model_dir, index, num_frames=3, rebuild=True, progress=False).added == 6


def test_interrupted_run_resumes(tmp_path, tiny_model_dir, monkeypatch, make_folder):
    import singularity_vl.search.index as ix

    folder = make_folder(tmp_path / "v")
    index = tmp_path / "idx"
    calls = {"n": 0}
    real = ix._encode

    def dying(model, clips):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(model, clips)

    monkeypatch.setattr(ix, "_encode", dying)
    with pytest.raises(KeyboardInterrupt):
        build_index(folder, tiny_model_dir, index, num_frames=2, batch_size=1, shard_size=2, progress=False)
    done = _rows(index)
    assert 0 < len(done) < 7  # the first shard's files are committed, nothing half-written
    monkeypatch.setattr(ix, "_encode", real)
    summary = build_index(folder, tiny_model_dir, index, num_frames=2, progress=False)
    assert summary.unchanged == len(done) and summary.added == 7 - len(done)
    assert len(SearchEngine(index)) == 6


def test_search_reranks_with_cached_tokens(built_index, tiny_model_dir):
    folder, index = built_index
    engine = SearchEngine(index)
    assert len(engine) == 6
    hits = engine.search("a red square moves", k=6, rerank=6)
    assert len(hits) == 6 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # the score equals the model's ITM on the freshly read video (cached tokens are fp16)
    model, top = engine.model, hits[0]
    clip = read_clip(folder / top.path, 4, "middle")
    video = EvalTransform(model.config.vision.image_size)(clip.frames)[None]
    enc = engine.tokenizer(["a red square moves"], 32)
    with torch.no_grad():
        tokens, _ = model.encode_text(enc["input_ids"], enc["attention_mask"])
        expected = model.match_logits(tokens, enc["attention_mask"], model.encode_video(video).tokens)[0, 1]
    assert top.score == pytest.approx(float(expected), abs=2e-2)
    assert 0 <= top.time <= top.duration
    plain = engine.search("a red square moves", k=3, rerank=0)
    assert [h.score for h in plain] == [h.itc_score for h in plain]
    for ens in ("mean", "max", "lse"):
        assert len(engine.search("bikes", k=2, rerank=4, ensemble=ens)) == 2
    for bad, msg in (({"query": " "}, "empty"), ({"query": "x" * 201}, "longer"), ({"k": 0}, "k must")):
        with pytest.raises(ValueError, match=msg):
            engine.search(**{"query": "q", **bad})


def test_cli_index_and_search(tmp_path, tiny_model_dir, capsys, make_folder):
    folder = make_folder(tmp_path / "v")
    assert (
        main(["index", str(folder), "--model", str(tiny_model_dir), "--out", str(tmp_path / "i"), "--num-frames", "2"])
        == 0
    )
    assert "7 new" in capsys.readouterr().out
    assert main(["search", str(tmp_path / "i"), "cars on a road", "-k", "3", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["query"] == "cars on a road" and len(body["results"]) == 3
    assert {"path", "score", "time", "duration"} <= set(body["results"][0])
    assert main(["search", str(tmp_path / "nowhere"), "x"]) == 2
    assert "no index.db" in capsys.readouterr().err


def test_rerank_reads_candidates_in_bounded_chunks(built_index, monkeypatch):
    """Re-ranking never holds more than RERANK_CHUNK candidates' frame tokens, and chunking does not
    change the results (same files, order and scores as all candidates at once)."""
    import singularity_vl.search.engine as eng

    _, index = built_index
    engine = SearchEngine(index)
    loaded = []
    real_load = engine._load

    def spy(kind, rows):
        if kind == "frame_tokens":
            loaded.append(len(rows))
        return real_load(kind, rows)

    monkeypatch.setattr(engine, "_load", spy)
    for ensemble in ("concat", "max"):
        monkeypatch.setattr(eng, "RERANK_CHUNK", 256)
        whole = engine.search("a red square moves", k=6, rerank=6, ensemble=ensemble)
        assert loaded == [6]
        loaded.clear()
        monkeypatch.setattr(eng, "RERANK_CHUNK", 4)
        chunked = engine.search("a red square moves", k=6, rerank=6, ensemble=ensemble)
        assert loaded == [4, 2]
        loaded.clear()
        assert [(h.id, h.frame) for h in chunked] == [(h.id, h.frame) for h in whole]
        assert [h.score for h in chunked] == pytest.approx([h.score for h in whole], abs=1e-4)
