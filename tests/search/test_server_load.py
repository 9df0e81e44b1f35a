"""The server under load and while the index changes: 60 concurrent clients with good and bad requests
get complete answers and never a 500; with small limits the bounds hold and the overflow gets 503;
a re-index while serving keeps the shards the server reads, and the server picks up the new index."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from singularity_vl.search.engine import SearchEngine
from singularity_vl.search.index import SHARD_DIR, build_index, connect
from singularity_vl.search.server import ServerLimits, serve_in_thread

CLIENTS = 60


def _get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _raw(port: int, request: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


def _requests(port: int, media_id: int) -> list[tuple[str, object, set[int]]]:
    """(name, callable returning a status, statuses that are correct for it)."""
    base = f"http://127.0.0.1:{port}"
    return [
        ("search", lambda: _get(f"{base}/api/search?q=a+red+square&k=3&rerank=6"), {200}),
        ("search-plain", lambda: _get(f"{base}/api/search?q=cars&rerank=0"), {200}),
        ("info", lambda: _get(f"{base}/api/info"), {200}),
        ("page", lambda: _get(f"{base}/"), {200}),
        ("thumbnail", lambda: _get(f"{base}/thumbnail/{media_id}?frame=1"), {200}),
        ("media-range", lambda: _get(f"{base}/media/{media_id}", {"Range": "bytes=0-99"}), {206}),
        ("bad-k", lambda: _get(f"{base}/api/search?q=cat&k=zero"), {400}),
        ("bad-ensemble", lambda: _get(f"{base}/api/search?q=cat&ensemble=median"), {400}),
        ("empty-query", lambda: _get(f"{base}/api/search?q=%20"), {400}),
        ("unknown-id", lambda: _get(f"{base}/media/999999"), {404}),
        ("huge-id", lambda: _get(f"{base}/thumbnail/{'9' * 40}"), {404}),
        ("traversal", lambda: _get(f"{base}/media/..%2f..%2fetc%2fpasswd"), {404}),
        ("bad-range", lambda: _get(f"{base}/media/{media_id}", {"Range": "bytes=99999999-"}), {416}),
        ("rebinding", lambda: _get(f"{base}/media/{media_id}", {"Host": "evil.example"}), {421}),
        ("post", lambda: (_raw(port, b"POST /api/info HTTP/1.0\r\nHost: localhost\r\n\r\n"), {}, b""), {405}),
        ("garbage", lambda: (_raw(port, b"GET /a b HTTP/1.0\r\n\r\n"), {}, b""), {400}),
    ]


def _hammer(port: int, media_id: int, rounds: int) -> list[tuple[str, int, dict, bytes, set[int]]]:
    """CLIENTS threads, started together, each sending `rounds` requests cycling through every kind."""
    kinds = _requests(port, media_id)
    start = threading.Barrier(CLIENTS)

    def client(i: int) -> list:
        start.wait()
        out = []
        for r in range(rounds):
            name, call, ok = kinds[(i + r * 7) % len(kinds)]
            status, headers, body = call()
            out.append((name, status, headers, body, ok))
        return out

    with ThreadPoolExecutor(CLIENTS) as pool:
        return [answer for answers in pool.map(client, range(CLIENTS)) for answer in answers]


def test_sixty_clients_get_no_server_errors(built_index):
    """With a queue that holds every client (limits sized for this load), every request gets its
    correct 2xx/4xx answer: no 500, no 503, no dropped connection."""
    _, index = built_index
    engine = SearchEngine(index)
    limits = ServerLimits(workers=8, queue=CLIENTS, searches=CLIENTS, decodes=CLIENTS)
    srv = serve_in_thread(engine, limits=limits)
    try:
        answers = _hammer(srv.server_address[1], engine.ids[0], rounds=3)
    finally:
        srv.shutdown()
        srv.server_close()
    wrong = [(name, status, body[:200]) for name, status, _, body, ok in answers if status not in ok]
    assert not wrong
    assert len(answers) == CLIENTS * 3 and {a[0] for a in answers} == {k[0] for k in _requests(1, 1)}


def _counting(fn, peak: Counter, name: str, lock: threading.Lock):
    """`fn`, slowed down a little, recording in peak[name] how many calls ran at once."""
    running = Counter()

    def wrapper(*args, **kwargs):
        with lock:
            running[name] += 1
            peak[name] = max(peak[name], running[name])
        try:
            time.sleep(0.05)
            return fn(*args, **kwargs)
        finally:
            with lock:
                running[name] -= 1

    return wrapper


def test_full_server_answers_503_and_stays_bounded(built_index, monkeypatch):
    """Small limits and slow searches and decodes: the bounds hold (one search and one decode at a time,
    a fixed set of worker threads), the overflow gets 503 with Retry-After, and every other answer is
    still correct."""
    import singularity_vl.search.server as srv_module

    _, index = built_index
    engine = SearchEngine(index)
    peak, lock = Counter(), threading.Lock()
    engine.search = _counting(engine.search, peak, "search", lock)
    monkeypatch.setattr(srv_module, "_decode_thumbnail", _counting(srv_module._decode_thumbnail, peak, "decode", lock))

    def server_side_threads() -> int:
        return sum(not t.name.startswith("ThreadPoolExecutor") for t in threading.enumerate())

    most, done = [0], threading.Event()

    def watch() -> None:
        while not done.wait(0.002):
            most[0] = max(most[0], server_side_threads())

    watcher = threading.Thread(target=watch)
    watcher.start()
    before = server_side_threads()
    limits = ServerLimits(workers=2, queue=2, searches=1, decodes=1)
    srv = serve_in_thread(engine, limits=limits)
    try:
        answers = _hammer(srv.server_address[1], engine.ids[0], rounds=2)
    finally:
        done.set()
        watcher.join()
        srv.shutdown()
        srv.server_close()
    server_threads = most[0] - before
    statuses = Counter(status for _, status, *_ in answers)
    assert statuses[503] > 0 and peak["search"] == 1 and peak["decode"] <= 1
    assert server_threads <= limits.workers + 2  # workers, the rejecting thread, serve_forever
    for name, status, headers, body, ok in answers:
        if status == 503:
            if name not in ("post", "garbage"):
                assert headers["Retry-After"] == "1" and "busy" in json.loads(body)["error"]
        else:
            assert status in ok, (name, status, body[:200])
    assert not any(500 <= s < 600 and s != 503 for s in statuses)


@pytest.mark.parametrize("decode_wait", [30.0, 0.01])
def test_thumbnail_decodes_are_bounded(built_index, monkeypatch, decode_wait):
    """Eight thumbnails asked at once (as the page does) with one decode slot: decodes run one at a time;
    requests wait for the slot (all answered 200) or, past `decode_wait`, get 503 with Retry-After."""
    import singularity_vl.search.server as srv_module

    _, index = built_index
    engine = SearchEngine(index)
    peak, lock = Counter(), threading.Lock()
    monkeypatch.setattr(srv_module, "_decode_thumbnail", _counting(srv_module._decode_thumbnail, peak, "decode", lock))
    limits = ServerLimits(workers=8, queue=16, decodes=1, decode_wait=decode_wait)
    srv = serve_in_thread(engine, limits=limits)
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    urls = [f"{base}/thumbnail/{i}?frame={f}" for i in engine.ids[:4] for f in (0, 1)]
    try:
        with ThreadPoolExecutor(len(urls)) as pool:
            answers = list(pool.map(_get, urls))
    finally:
        srv.shutdown()
        srv.server_close()
    statuses = Counter(status for status, _, _ in answers)
    assert peak["decode"] == 1
    if decode_wait > 1:
        assert statuses == {200: 8}
    else:
        assert statuses[503] > 0 and statuses[200] > 0 and set(statuses) == {200, 503}
        assert all(h["Retry-After"] == "1" for status, h, _ in answers if status == 503)


def test_reindex_while_serving_keeps_shards_and_reloads(tmp_path, tiny_model_dir, make_folder):
    """A re-index while a server is open must not delete shards the server still reads; the server then
    reloads the changed index, after which the superseded shards go at the next index run."""
    folder = make_folder(tmp_path / "v")
    index = tmp_path / "idx"
    build_index(folder, tiny_model_dir, index, num_frames=2, shard_size=1, progress=False)
    engine = SearchEngine(index)
    srv = serve_in_thread(engine, limits=ServerLimits(reload_every=3600))
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        old_shards = set(os.listdir(index / SHARD_DIR))
        (folder / "red.png").unlink()
        (folder / "clips" / "square.mp4").write_bytes((folder / "bikes.mp4").read_bytes())
        summary = build_index(folder, tiny_model_dir, index, num_frames=2, shard_size=1, progress=False)
        assert (summary.updated, summary.removed) == (1, 1)
        db = connect(index)
        in_db = {r[0] for r in db.execute("SELECT shard FROM media WHERE shard IS NOT NULL")}
        db.close()
        assert old_shards - in_db and old_shards <= set(os.listdir(index / SHARD_DIR))  # kept for the server
        status, _, body = _get(f"{base}/api/search?q=a+red+square&k=6&rerank=6")  # reads every old shard
        assert status == 200 and {h["path"] for h in json.loads(body)["results"]} >= {"red.png", "clips/square.mp4"}

        srv.live.reload_every = 0.0
        info = json.loads(_get(f"{base}/api/info")[2])
        assert info["files"] == 5 and srv.live.engine is not engine
        status, _, body = _get(f"{base}/api/search?q=a+red+square&k=5&rerank=5")
        assert status == 200 and "red.png" not in {h["path"] for h in json.loads(body)["results"]}
        build_index(folder, tiny_model_dir, index, num_frames=2, shard_size=1, progress=False)  # nothing changed
        assert set(os.listdir(index / SHARD_DIR)) == in_db  # the old engine was closed: its shards are gone
    finally:
        srv.shutdown()
        srv.server_close()
        srv.live.close()
    assert not list((index / "readers").glob("*.json"))


def _open_and_hold(index, opened) -> None:
    engine = SearchEngine(index)
    opened.set()
    time.sleep(600)
    engine.close()


@pytest.mark.parametrize("crash", [True, False])
def test_reader_registration_ends_with_its_engine(tmp_path, tiny_model_dir, make_folder, crash, processes):
    """A reader's registration ends with its engine (closed, or its process killed), so it cannot pin
    shards forever."""
    folder = make_folder(tmp_path / "v")
    index = tmp_path / "idx"
    build_index(folder, tiny_model_dir, index, num_frames=2, shard_size=1, progress=False)
    if crash:  # another process opens an engine and is killed holding it
        opened = processes.Event()
        reader = processes.Process(target=_open_and_hold, args=(index, opened))
        reader.start()
        assert opened.wait(120)
        os.kill(reader.pid, signal.SIGKILL)
        reader.join(30)
    else:
        SearchEngine(index).close()
    assert len(list((index / "readers").glob("*.json"))) == (1 if crash else 0)
    (folder / "clips" / "square.mp4").write_bytes((folder / "bikes.mp4").read_bytes())
    build_index(folder, tiny_model_dir, index, num_frames=2, shard_size=1, progress=False)
    db = connect(index)
    in_db = {r[0] for r in db.execute("SELECT shard FROM media WHERE shard IS NOT NULL")}
    db.close()
    assert set(os.listdir(index / SHARD_DIR)) == in_db and not list((index / "readers").glob("*.json"))
