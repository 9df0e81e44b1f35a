"""The JSON API and the web page: results, bounds, errors without stack traces, files only by id
(with range requests), the Host check, and an end-to-end browser test in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from singularity_vl.cli import main
from singularity_vl.search.engine import SearchEngine
from singularity_vl.search.server import HostCheck, PooledHTTPServer, serve_in_thread

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "search.png"


@pytest.fixture(scope="module")
def server(built_index):
    folder, index = built_index
    srv = serve_in_thread(SearchEngine(index), allowed_hosts=["search.lan"])
    host, port = srv.server_address[:2]
    yield f"http://{host}:{port}", folder
    srv.shutdown()
    srv.server_close()


def _get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_serve_binds_localhost_by_default(built_index, monkeypatch, capsys):
    """`singularity-vl serve` without --host listens on 127.0.0.1 only (the socket itself is checked)."""
    _, index = built_index
    bound = {}

    def instead_of_serving(self, poll_interval=0.5):
        bound["address"] = self.socket.getsockname()[:2]

    monkeypatch.setattr(PooledHTTPServer, "serve_forever", instead_of_serving)
    assert main(["serve", str(index), "--port", "0"]) == 0
    host, port = bound["address"]
    assert host == "127.0.0.1" and port > 0
    assert f"on http://127.0.0.1:{port}/" in capsys.readouterr().out


def test_serve_allowed_host_option(built_index, monkeypatch):
    """`serve --allowed-host NAME` answers requests for NAME (and still refuses other names)."""
    import threading

    _, index = built_index
    real_serve, got = PooledHTTPServer.serve_forever, {}

    def serve_briefly(self, poll_interval=0.5):
        thread = threading.Thread(target=real_serve, args=(self, 0.05))
        thread.start()
        url = f"http://127.0.0.1:{self.server_address[1]}/api/info"
        got["named"] = _get(url, {"Host": "Media-Box.lan:8000"})[0]
        got["other"] = _get(url, {"Host": "evil.example"})[0]
        self.shutdown()
        thread.join()

    monkeypatch.setattr(PooledHTTPServer, "serve_forever", serve_briefly)
    assert main(["serve", str(index), "--port", "0", "--allowed-host", "media-box.lan", "--workers", "2"]) == 0
    assert got == {"named": 200, "other": 421}


def _raw(base: str, request: bytes) -> bytes:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(request)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST", "[::1]:{port}", "search.lan"])
def test_local_and_allowed_hosts_are_answered(server, host):
    base, _ = server
    port = base.rsplit(":", 1)[1]
    status, _, body = _get(f"{base}/api/info", {"Host": host.format(port=port)})
    assert status == 200 and json.loads(body)["files"] == 6


@pytest.mark.parametrize("path", ["/api/info", "/media/1", "/thumbnail/1", "/api/search?q=cars", "/"])
@pytest.mark.parametrize("host", ["evil.example:{port}", "evil.example", "127.0.0.1.evil.example", "10.0.0.5"])
def test_other_hosts_are_refused(server, path, host):
    """DNS rebinding: a page of evil.example whose name resolves to 127.0.0.1 reaches this server with
    Host: evil.example; it gets 421 and no content."""
    base, folder = server
    port = base.rsplit(":", 1)[1]
    status, headers, body = _get(base + path, {"Host": host.format(port=port)})
    assert status == 421 and headers["Content-Type"] == "application/json"
    assert "does not answer for host" in json.loads(body)["error"]


def test_request_without_host_is_refused(server):
    base, _ = server
    answer = _raw(base, b"GET /api/info HTTP/1.0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 400") and b"no Host header" in answer


def test_other_methods_get_405(server):
    base, _ = server
    port = base.rsplit(":", 1)[1]
    for method in (b"POST", b"PUT", b"DELETE", b"BREW"):
        answer = _raw(base, method + b" /api/info HTTP/1.0\r\nHost: 127.0.0.1:" + port.encode() + b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.0 405"), answer[:80]


def test_host_check_rules():
    local = HostCheck("127.0.0.1")
    assert local.allows("127.0.0.1:8000") and local.allows("[::1]:8000") and local.allows("localhost.")
    assert not local.allows("192.168.1.5:8000") and not local.allows("") and not local.allows("localhost:80:80")
    named = HostCheck("192.168.1.5", ["Search.Lan"])
    assert named.allows("192.168.1.5:8000") and named.allows("search.lan:8000") and not named.allows("evil.example")
    wildcard = HostCheck("0.0.0.0")  # every address of the machine: IP literals are not a rebinding vector
    assert (
        wildcard.allows("192.168.1.5:8000") and wildcard.allows("[fe80::1]:80") and not wildcard.allows("evil.example")
    )
    assert HostCheck("127.0.0.1", ["*"]).allows("anything.example")


def test_search_api(server, tiny_model_dir):
    base, folder = server
    status, headers, body = _get(f"{base}/api/search?q=a+red+square&k=3&rerank=5")
    assert status == 200 and headers["Content-Type"] == "application/json"
    data = json.loads(body)
    assert data["query"] == "a red square" and len(data["results"]) == 3
    hit = data["results"][0]
    status, headers, img = _get(base + hit["thumbnail"])
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and img[:2] == b"\xff\xd8"
    status, headers, video = _get(base + hit["media"])
    assert status == 200 and video == (folder / hit["path"]).read_bytes()
    status, headers, part = _get(base + hit["media"], {"Range": "bytes=10-19"})
    assert status == 206 and part == video[10:20] and headers["Content-Range"] == f"bytes 10-19/{len(video)}"
    status, headers, part = _get(base + hit["media"], {"Range": "bytes=-5"})
    assert status == 206 and part == video[-5:]
    info = json.loads(_get(f"{base}/api/info")[2])
    assert info == {"files": 6, "failed": 1, "model": str(tiny_model_dir.resolve())}


@pytest.mark.parametrize(
    "path, status, message",
    [
        ("/api/search?q=", 400, "type what to look for"),
        ("/api/search?q=" + "x" * 201, 400, "longer than 200"),
        ("/api/search?q=cat&k=500", 400, "k must be between 1 and 50"),
        ("/api/search?q=cat&k=ten", 400, "k must be an integer"),
        ("/api/search?q=cat&rerank=9999", 400, "rerank must be between 0 and 256"),
        ("/api/search?q=cat&ensemble=median", 400, "ensemble must be one of"),
        ("/media/9999", 404, "no indexed file with id 9999"),
        ("/media/../../etc/passwd", 404, "not found"),
        ("/media/%2e%2e%2fetc%2fpasswd", 404, "not found"),
        ("/thumbnail/1?frame=-1", 400, "frame must be"),
        ("/nothing", 404, "not found"),
    ],
)
def test_bad_requests_get_clear_errors(server, path, status, message):
    base, _ = server
    got, headers, body = _get(base + path)
    assert got == status and headers["Content-Type"] == "application/json"
    error = json.loads(body)["error"]
    assert message in error and "Traceback" not in error


def test_page_has_no_external_resources(server):
    base, _ = server
    status, _, body = _get(base + "/")
    page = body.decode()
    assert status == 200 and '<form id="search"' in page
    assert "http://" not in page and "https://" not in page


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def test_browser_search_shows_results_with_thumbnails(server, tmp_path):
    """Type a query in headless Chromium and see result cards whose thumbnails loaded."""
    found = _chromium()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Debian's chromium and chromium-driver (installed by .ci/run)")
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser, driver_path = found
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        base, _ = server
        driver.get(base + "/")
        box = driver.find_element(By.ID, "q")
        box.send_keys("cars driving on a road")
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        WebDriverWait(driver, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .hit")) >= 3)
        WebDriverWait(driver, 60).until(
            lambda d: all(
                d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
                for img in d.find_elements(By.CSS_SELECTOR, "#results .hit img")
            )
        )
        cards = driver.find_elements(By.CSS_SELECTOR, "#results .hit")
        assert "score" in cards[0].text and "at " in cards[0].text
        assert "result(s)" in driver.find_element(By.ID, "status").text
        cards[0].click()  # plays the video from the best frame
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "player").is_displayed())
        # an error is shown on the page, not as a stack trace
        box.clear()
        box.send_keys("x" * 10)
        driver.execute_script("const k = document.getElementById('k'); k.removeAttribute('max'); k.value = '500';")
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "error").is_displayed())
        assert "k must be between 1 and 50" in driver.find_element(By.ID, "error").text
        driver.execute_script("document.getElementById('k').value = '12'")
        box.clear()
        box.send_keys("cars driving on a road")
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        WebDriverWait(driver, 60).until(lambda d: not d.find_element(By.ID, "error").is_displayed())
        WebDriverWait(driver, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .hit img")) >= 3)
        shot = tmp_path / "search.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("SL_UPDATE_SCREENSHOT"):
            shutil.copy(shot, DOCS_SCREENSHOT)
    finally:
        driver.quit()


def test_open_ended_ranges_come_in_bounded_pieces(server, monkeypatch):
    """A player asking for `bytes=N-` gets at most MAX_RANGE bytes per answer (so a slow player cannot hold
    a worker for a whole file) and reassembles the file by asking again from where each piece ends."""
    import singularity_vl.search.server as srv

    base, folder = server
    monkeypatch.setattr(srv, "MAX_RANGE", 100_000)
    hits = json.loads(_get(f"{base}/api/search?q=cars&k=6&rerank=0")[2])["results"]
    path = next(h["media"] for h in hits if h["path"] == "bikes.mp4")
    status, _, whole = _get(base + path)
    assert status == 200 and len(whole) > 300_000
    got = b""
    while len(got) < len(whole):
        status, headers, part = _get(base + path, {"Range": f"bytes={len(got)}-"})
        end = min(len(got) + 99_999, len(whole) - 1)
        assert status == 206 and headers["Content-Range"] == f"bytes {len(got)}-{end}/{len(whole)}"
        got += part
    assert got == whole
