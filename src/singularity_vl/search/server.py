"""`singularity-vl serve`: a small web page and JSON API over an index (standard library HTTP server;
no internet resources: the page, its script and style are served from here).

API (all GET, JSON answers; errors are `{"error": message}` with a 4xx status, never a stack trace):
  /api/search?q=TEXT[&k=10][&rerank=64][&ensemble=concat]  ranked results (see `SearchEngine.search`)
  /api/info                                               what is indexed
  /thumbnail/ID?frame=I                                   JPEG of sampled frame I of file ID
  /media/ID                                               the file itself (HTTP range requests for seeking)
Files are served only by index id, so nothing outside the indexed set can be reached.

Safety (see docs/SEARCH.md): requests whose Host header is not this server's address, a localhost name
or an `allowed_hosts` entry get 421 (DNS rebinding: a page of another site whose name resolves to
127.0.0.1 cannot read the answers); a fixed pool of worker threads with a bounded queue of waiting
connections, and bounded concurrent searches and thumbnail decodes, answer 503 (with Retry-After) when
full instead of growing without limit; the index is re-opened when an indexer changed it.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import logging
import mimetypes
import queue
import re
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from singularity_vl.search.engine import MAX_K, MAX_QUERY_CHARS, MAX_RERANK, SearchEngine, hits_to_json
from singularity_vl.search.index import generation

log = logging.getLogger(__name__)
PAGE = (Path(__file__).parent / "page.html").read_text(encoding="utf-8")
THUMB_WIDTH = 320
CHUNK = 1 << 16
MAX_RANGE = 8 << 20  # bytes per 206 answer: a slow player cannot hold a worker for a whole file
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
WILDCARD_HOSTS = ("", "0.0.0.0", "::")
BUSY_MESSAGE = "the server is busy; retry in a moment"


@dataclass(frozen=True)
class ServerLimits:
    """Bounds on what the server holds at once; beyond them a request gets 503 with Retry-After."""

    workers: int = 8  # threads answering requests
    queue: int = 32  # accepted connections waiting for a free worker
    searches: int = 4  # searches running or waiting for the model
    decodes: int = 2  # thumbnails being decoded from their videos
    decode_wait: float = 15.0  # seconds a thumbnail request waits for a decode slot (a page asks for many)
    request_timeout: float = 30.0  # seconds a client may take to send its request
    reload_every: float = 2.0  # seconds between checks whether the index changed

    def __post_init__(self) -> None:
        for name in ("workers", "queue", "searches", "decodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"server limit {name} must be >= 1, got {getattr(self, name)}")


class ClientError(ValueError):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def _int_param(params: dict, name: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(name, [str(default)])[0]
    try:
        value = int(raw)
    except ValueError:
        raise ClientError(HTTPStatus.BAD_REQUEST, f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ClientError(HTTPStatus.BAD_REQUEST, f"{name} must be between {lo} and {hi}")
    return value


def _normalize_host(name: str) -> str:
    name = name.strip().lower().rstrip(".")
    return name[1:-1] if name.startswith("[") and name.endswith("]") else name


def host_of(header: str) -> str:
    """The host part of a Host header value, lower case, without port or IPv6 brackets."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    name, sep, port = value.rpartition(":")
    return _normalize_host(name if sep and port.isdigit() and ":" not in name else value)


class HostCheck:
    """Which Host headers the server answers: its own bound address, localhost names, `extra` names
    ("*" answers every Host: no DNS-rebinding protection); bound to a wildcard address, any IP literal."""

    def __init__(self, bound: str, extra: Iterable[str] = ()) -> None:
        bound = _normalize_host(bound)
        self.wildcard = bound in WILDCARD_HOSTS
        self.names = {*LOCAL_HOSTS, *(_normalize_host(e) for e in extra)} | ({bound} if not self.wildcard else set())
        self.any = "*" in self.names

    def allows(self, header: str | None) -> bool:
        if self.any:
            return True
        if not header:
            return False
        host = host_of(header)
        if host in self.names:
            return True
        if self.wildcard:
            with contextlib.suppress(ValueError):
                ipaddress.ip_address(host)
                return True
        return False


class LiveIndex:
    """The engine requests use, re-opened (sharing the model) when an indexer has changed the index;
    an engine replaced is closed once its last request is done, which frees its shards."""

    def __init__(self, engine: SearchEngine, reload_every: float = 2.0) -> None:
        self.reload_every = reload_every
        self._engine = engine
        self._users: dict[int, int] = {id(engine): 0}
        self._retired: dict[int, SearchEngine] = {}
        self._lock = threading.Lock()
        self._reloading = threading.Lock()
        self._checked = time.monotonic()

    @property
    def engine(self) -> SearchEngine:
        return self._engine

    @contextlib.contextmanager
    def use(self) -> Iterator[SearchEngine]:
        self._maybe_reload()
        with self._lock:
            engine = self._engine
            self._users[id(engine)] += 1
        try:
            yield engine
        finally:
            with self._lock:
                self._users[id(engine)] -= 1
                done = id(engine) in self._retired and self._users[id(engine)] == 0
                if done:
                    del self._retired[id(engine)], self._users[id(engine)]
            if done:
                engine.close()

    def _maybe_reload(self) -> None:
        if time.monotonic() - self._checked < self.reload_every or not self._reloading.acquire(blocking=False):
            return
        try:
            self._checked = time.monotonic()
            old = self._engine
            if generation(old.index_dir) == old.generation:
                return
            new = SearchEngine(old.index_dir, previous=old)
            with self._lock:
                self._engine = new
                self._users[id(new)] = 0
                idle = self._users[id(old)] == 0
                if idle:
                    del self._users[id(old)]
                else:
                    self._retired[id(old)] = old
            if idle:
                old.close()
            log.info("the index changed: reloaded (%d files)", len(new))
        except Exception:  # noqa: BLE001 - keep serving what was there
            log.exception("could not reload the index; still serving the previous version")
        finally:
            self._reloading.release()

    def close(self) -> None:
        self._engine.close()
        for engine in self._retired.values():
            engine.close()


def _decode_thumbnail(path: str, frame_index: int) -> bytes:
    from PIL import Image

    from singularity_vl.data.video_reader import read_frames

    img = Image.fromarray(read_frames(path, [frame_index])[0])
    img.thumbnail((THUMB_WIDTH, THUMB_WIDTH))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


class ThumbnailCache:
    """The last `size` thumbnails by (path, mtime, frame number); a miss waits up to `wait` seconds for
    one of `decodes` slots to decode."""

    def __init__(self, decodes: int, wait: float, size: int = 512) -> None:
        self.size = size
        self.wait = wait
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._decodes = threading.BoundedSemaphore(decodes)

    def get(self, path: Path, frame_index: int) -> bytes:
        key = (str(path), path.stat().st_mtime_ns, frame_index)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        with _slot(self._decodes, self.wait):
            data = _decode_thumbnail(str(path), frame_index)
        with self._lock:
            self._items[key] = data
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return data


class _Busy(Exception):
    """A bounded resource is full: answer 503."""


@contextlib.contextmanager
def _slot(sem: threading.Semaphore, wait: float = 0.0) -> Iterator[None]:
    if not (sem.acquire(timeout=wait) if wait > 0 else sem.acquire(blocking=False)):
        raise _Busy
    try:
        yield
    finally:
        sem.release()


def make_handler(live: LiveIndex, hosts: HostCheck, limits: ServerLimits) -> type[BaseHTTPRequestHandler]:
    searches = threading.BoundedSemaphore(limits.searches)
    thumbnails = ThumbnailCache(limits.decodes, limits.decode_wait)

    class Handler(BaseHTTPRequestHandler):
        server_version = "singularity-vl"
        timeout = limits.request_timeout

        def log_message(self, fmt: str, *args) -> None:
            log.info("%s %s", self.address_string(), fmt % args)

        def __getattr__(self, name: str):
            if name.startswith("do_"):  # every method but GET: 405, not http.server's 501
                return self._not_allowed
            raise AttributeError(name)

        def _not_allowed(self) -> None:
            self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{self.command} is not supported; use GET"})

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            try:
                if not self.headers.get("Host"):
                    raise ClientError(HTTPStatus.BAD_REQUEST, "the request has no Host header")
                if not hosts.allows(self.headers.get("Host")):
                    raise ClientError(
                        HTTPStatus.MISDIRECTED_REQUEST,
                        f"this server does not answer for host {self.headers.get('Host')!r}"
                        " (start it with --allowed-host NAME to allow a name)",
                    )
                with live.use() as engine:
                    self._route(engine)
            except ClientError as e:
                self._json(e.status, {"error": str(e)})
            except _Busy:
                self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": BUSY_MESSAGE}, retry_after=1)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                self.close_connection = True
            except Exception:  # noqa: BLE001 - logged here, a plain message to the client
                log.exception("error serving %s", self.path)
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error (see the server log)"})

        def _route(self, engine: SearchEngine) -> None:
            url = urlparse(self.path)
            params = parse_qs(url.query)
            if url.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
            elif url.path == "/api/search":
                self._search(engine, params)
            elif url.path == "/api/info":
                info = {"files": len(engine), "failed": engine.num_failed, "model": engine.meta.get("model")}
                self._json(HTTPStatus.OK, info)
            elif m := re.fullmatch(r"/thumbnail/(\d{1,18})", url.path):
                self._thumbnail(engine, self._known(engine, m.group(1)), _int_param(params, "frame", 0, 0, 10_000))
            elif m := re.fullmatch(r"/media/(\d{1,18})", url.path):
                self._media(engine, self._known(engine, m.group(1)))
            else:
                raise ClientError(HTTPStatus.NOT_FOUND, "not found")

        def _known(self, engine: SearchEngine, raw: str) -> int:
            media_id = int(raw)
            if engine.path_of(media_id) is None:
                raise ClientError(HTTPStatus.NOT_FOUND, f"no indexed file with id {media_id}")
            return media_id

        def _existing(self, engine: SearchEngine, media_id: int) -> Path:
            path = engine.path_of(media_id)
            if not path.is_file():
                raise ClientError(HTTPStatus.NOT_FOUND, "the file is no longer there; re-index")
            return path

        def _search(self, engine: SearchEngine, params: dict) -> None:
            query = params.get("q", [""])[0]
            if not query.strip():
                raise ClientError(HTTPStatus.BAD_REQUEST, "type what to look for (parameter q)")
            if len(query) > MAX_QUERY_CHARS:
                raise ClientError(HTTPStatus.BAD_REQUEST, f"the query is longer than {MAX_QUERY_CHARS} characters")
            k = _int_param(params, "k", 10, 1, MAX_K)
            rerank = _int_param(params, "rerank", 64, 0, MAX_RERANK)
            ensemble = params.get("ensemble", ["concat"])[0]
            with _slot(searches):
                try:
                    hits = engine.search(query, k=k, rerank=rerank, ensemble=ensemble)
                except ValueError as e:
                    raise ClientError(HTTPStatus.BAD_REQUEST, str(e)) from None
            body = hits_to_json(query, hits)
            for r in body["results"]:
                r["thumbnail"] = f"/thumbnail/{r['id']}?frame={r['frame']}"
                r["media"] = f"/media/{r['id']}"
            self._json(HTTPStatus.OK, body)

        def _thumbnail(self, engine: SearchEngine, media_id: int, frame: int) -> None:
            from singularity_vl.data.video_reader import VideoReadError

            path = self._existing(engine, media_id)
            indices = engine.frame_indices[engine.by_id[media_id]]
            try:
                data = thumbnails.get(path, indices[min(frame, len(indices) - 1)] if indices else 0)
            except VideoReadError as e:
                raise ClientError(HTTPStatus.NOT_FOUND, f"cannot read that frame ({e.reason}); re-index") from None
            self._send(HTTPStatus.OK, data, "image/jpeg", cache=True)

        def _media(self, engine: SearchEngine, media_id: int) -> None:
            path = self._existing(engine, media_id)
            size = path.stat().st_size
            start, end = 0, size - 1
            rng = self.headers.get("Range")
            status = HTTPStatus.OK
            if rng:
                m = re.fullmatch(r"bytes=(\d{0,18})-(\d{0,18})", rng.strip())
                if not m or (not m.group(1) and not m.group(2)):
                    raise ClientError(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "bad range")
                if m.group(1):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                else:
                    start = max(0, size - int(m.group(2)))
                if start > end or start >= size:
                    raise ClientError(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "range outside the file")
                end = min(end, start + MAX_RANGE - 1)  # players ask again from where it stops
                status = HTTPStatus.PARTIAL_CONTENT
            with path.open("rb") as f:
                f.seek(start)
                self.send_response(status)
                self.send_header("Content-Type", mimetypes.guess_type(path.name)[0] or "application/octet-stream")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(end - start + 1))
                if status == HTTPStatus.PARTIAL_CONTENT:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.end_headers()
                left = end - start + 1
                while left > 0:
                    data = f.read(min(CHUNK, left))
                    if not data:
                        break
                    self.wfile.write(data)
                    left -= len(data)

        def _json(self, status: HTTPStatus, body: dict, retry_after: int | None = None) -> None:
            self._send(status, json.dumps(body).encode(), "application/json", retry_after=retry_after)

        def _send(
            self, status: HTTPStatus, data: bytes, ctype: str, cache: bool = False, retry_after: int | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Content-Type-Options", "nosniff")
            if cache:
                self.send_header("Cache-Control", "max-age=3600")
            if retry_after is not None:
                self.send_header("Retry-After", str(retry_after))
            self.end_headers()
            self.wfile.write(data)

    return Handler


class PooledHTTPServer(HTTPServer):
    """An HTTP server with a fixed pool of worker threads and a bounded queue of accepted connections;
    a connection that finds the queue full is answered 503 by one small rejecting thread (which reads
    the request first, so the client sees the answer rather than a reset)."""

    request_queue_size = 128  # the listen backlog: connections the kernel holds before we accept them

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], limits: ServerLimits) -> None:
        self.limits = limits
        self._pending: queue.Queue = queue.Queue(maxsize=limits.queue)
        self._rejects: queue.Queue = queue.Queue(maxsize=64)
        super().__init__(address, handler)
        self._threads = [
            threading.Thread(target=self._work, name=f"http-worker-{i}", daemon=True) for i in range(limits.workers)
        ]
        self._threads.append(threading.Thread(target=self._reject_loop, name="http-reject", daemon=True))
        for t in self._threads:
            t.start()

    def process_request(self, request, client_address) -> None:  # the accept thread: never blocks
        try:
            self._pending.put_nowait((request, client_address))
        except queue.Full:
            try:
                self._rejects.put_nowait(request)
            except queue.Full:
                self.shutdown_request(request)

    def _work(self) -> None:
        while (item := self._pending.get()) is not None:
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:  # noqa: BLE001 - one connection's failure must not end the worker
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    def _reject_loop(self) -> None:
        body = json.dumps({"error": BUSY_MESSAGE}).encode()
        answer = (
            "HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode() + body
        while (request := self._rejects.get()) is not None:
            try:
                request.settimeout(1.0)
                seen, deadline = b"", time.monotonic() + 1.0
                while b"\r\n\r\n" not in seen and len(seen) < 65536 and time.monotonic() < deadline:
                    data = request.recv(4096)
                    if not data:
                        break
                    seen += data
                request.sendall(answer)
            except OSError:
                pass
            finally:
                self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        for _ in range(self.limits.workers):
            self._pending.put(None)
        self._rejects.put(None)
        for t in self._threads:
            t.join(timeout=5)


def make_server(
    engine: SearchEngine,
    host: str = "127.0.0.1",
    port: int = 8000,
    allowed_hosts: Iterable[str] = (),
    limits: ServerLimits | None = None,
) -> PooledHTTPServer:
    """The server, bound but not yet serving (port 0 picks a free port: see `server.server_address`).
    `allowed_hosts`: further names the Host header may carry (e.g. this machine's DNS name)."""
    limits = limits or ServerLimits()
    live = LiveIndex(engine, limits.reload_every)
    server_class = PooledHTTPServer
    if ":" in host:
        server_class = type("PooledHTTPServer6", (PooledHTTPServer,), {"address_family": socket.AF_INET6})
    server = server_class((host, port), make_handler(live, HostCheck(host, allowed_hosts), limits), limits)
    server.live = live
    return server


def serve_in_thread(
    engine: SearchEngine,
    host: str = "127.0.0.1",
    port: int = 0,
    allowed_hosts: Iterable[str] = (),
    limits: ServerLimits | None = None,
) -> PooledHTTPServer:
    """`make_server`, serving from a daemon thread (for tests and notebooks); stop it with
    `server.shutdown(); server.server_close()`."""
    server = make_server(engine, host, port, allowed_hosts, limits)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
