"""The JSON API and the web page: results, bounds, errors without stack traces, files only by id
(with range requests), and an end-to-end browser test in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from singularity_vl.search.engine import SearchEngine
from singularity_vl.search.server import serve_in_thread

DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "search.png"


@pytest.fixture(scope="module")
def server(built_index):
    folder, index = built_index
    srv = serve_in_thread(SearchEngine(index))
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


def test_binds_localhost_by_default(server):
    base, _ = server
    assert base.startswith("http://127.0.0.1:")


def test_search_api(server):
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
    info = json.loads(_get(f"{base}/api/info")[2])
    assert info == {"files": 6, "failed": 1, "model": info["model"]}


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
