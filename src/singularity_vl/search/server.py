"""`singularity-vl serve`: a small web page and JSON API over an index (standard library HTTP server;
no internet resources: the page, its script and style are served from here).

API (all GET, JSON answers; errors are `{"error": message}` with a 4xx status, never a stack trace):
  /api/search?q=TEXT[&k=10][&rerank=64][&ensemble=concat]  ranked results (see `SearchEngine.search`)
  /api/info                                               what is indexed
  /thumbnail/ID?frame=I                                   JPEG of sampled frame I of file ID
  /media/ID                                               the file itself (HTTP range requests for seeking)
Files are served only by index id, so nothing outside the indexed set can be reached.
"""

from __future__ import annotations

import io
import json
import logging
import mimetypes
import re
import threading
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from singularity_vl.search.engine import MAX_K, MAX_QUERY_CHARS, MAX_RERANK, SearchEngine, hits_to_json

log = logging.getLogger(__name__)
PAGE = (Path(__file__).parent / "page.html").read_text(encoding="utf-8")
THUMB_WIDTH = 320
CHUNK = 1 << 16


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


def make_handler(engine: SearchEngine) -> type[BaseHTTPRequestHandler]:
    @lru_cache(maxsize=512)
    def thumbnail(media_id: int, frame: int) -> bytes:
        from PIL import Image

        from singularity_vl.data.video_reader import read_frames

        row = engine.by_id[media_id]
        indices = engine.frame_indices[row]
        idx = indices[min(frame, len(indices) - 1)] if indices else 0
        img = Image.fromarray(read_frames(engine.root / engine.paths[row], [idx])[0])
        img.thumbnail((THUMB_WIDTH, THUMB_WIDTH))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        return buf.getvalue()

    class Handler(BaseHTTPRequestHandler):
        server_version = "singularity-vl"

        def log_message(self, fmt: str, *args) -> None:
            log.info("%s %s", self.address_string(), fmt % args)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            url = urlparse(self.path)
            params = parse_qs(url.query)
            try:
                if url.path in ("/", "/index.html"):
                    self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
                elif url.path == "/api/search":
                    self._search(params)
                elif url.path == "/api/info":
                    info = {"files": len(engine), "failed": engine.num_failed, "model": engine.meta.get("model")}
                    self._json(HTTPStatus.OK, info)
                elif m := re.fullmatch(r"/thumbnail/(\d+)", url.path):
                    media_id = self._known(m.group(1))
                    frame = _int_param(params, "frame", 0, 0, 10_000)
                    self._send(HTTPStatus.OK, thumbnail(media_id, frame), "image/jpeg", cache=True)
                elif m := re.fullmatch(r"/media/(\d+)", url.path):
                    self._media(self._known(m.group(1)))
                else:
                    raise ClientError(HTTPStatus.NOT_FOUND, "not found")
            except ClientError as e:
                self._json(e.status, {"error": str(e)})
            except (BrokenPipeError, ConnectionResetError):
                pass
            except Exception:  # noqa: BLE001 - logged here, a plain message to the client
                log.exception("error serving %s", self.path)
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error (see the server log)"})

        def _known(self, raw: str) -> int:
            media_id = int(raw)
            if engine.path_of(media_id) is None:
                raise ClientError(HTTPStatus.NOT_FOUND, f"no indexed file with id {media_id}")
            return media_id

        def _search(self, params: dict) -> None:
            query = params.get("q", [""])[0]
            if not query.strip():
                raise ClientError(HTTPStatus.BAD_REQUEST, "type what to look for (parameter q)")
            if len(query) > MAX_QUERY_CHARS:
                raise ClientError(HTTPStatus.BAD_REQUEST, f"the query is longer than {MAX_QUERY_CHARS} characters")
            k = _int_param(params, "k", 10, 1, MAX_K)
            rerank = _int_param(params, "rerank", 64, 0, MAX_RERANK)
            ensemble = params.get("ensemble", ["concat"])[0]
            try:
                hits = engine.search(query, k=k, rerank=rerank, ensemble=ensemble)
            except ValueError as e:
                raise ClientError(HTTPStatus.BAD_REQUEST, str(e)) from None
            body = hits_to_json(query, hits)
            for r in body["results"]:
                r["thumbnail"] = f"/thumbnail/{r['id']}?frame={r['frame']}"
                r["media"] = f"/media/{r['id']}"
            self._json(HTTPStatus.OK, body)

        def _media(self, media_id: int) -> None:
            path = engine.path_of(media_id)
            if not path.is_file():
                raise ClientError(HTTPStatus.NOT_FOUND, "the file is no longer there; re-index")
            size = path.stat().st_size
            start, end = 0, size - 1
            rng = self.headers.get("Range")
            status = HTTPStatus.OK
            if rng:
                m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
                if not m or (not m.group(1) and not m.group(2)):
                    raise ClientError(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "bad range")
                if m.group(1):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                else:
                    start = max(0, size - int(m.group(2)))
                if start > end or start >= size:
                    raise ClientError(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "range outside the file")
                status = HTTPStatus.PARTIAL_CONTENT
            self.send_response(status)
            self.send_header("Content-Type", mimetypes.guess_type(path.name)[0] or "application/octet-stream")
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(end - start + 1))
            if status == HTTPStatus.PARTIAL_CONTENT:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            with path.open("rb") as f:
                f.seek(start)
                left = end - start + 1
                while left > 0:
                    data = f.read(min(CHUNK, left))
                    if not data:
                        break
                    self.wfile.write(data)
                    left -= len(data)

        def _json(self, status: HTTPStatus, body: dict) -> None:
            self._send(status, json.dumps(body).encode(), "application/json")

        def _send(self, status: HTTPStatus, data: bytes, ctype: str, cache: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Content-Type-Options", "nosniff")
            if cache:
                self.send_header("Cache-Control", "max-age=3600")
            self.end_headers()
            self.wfile.write(data)

    return Handler


def make_server(engine: SearchEngine, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """The server, bound but not yet serving (port 0 picks a free port: see `server.server_address`)."""
    server = ThreadingHTTPServer((host, port), make_handler(engine))
    server.daemon_threads = True
    return server


def serve_in_thread(engine: SearchEngine, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    server = make_server(engine, host, port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
