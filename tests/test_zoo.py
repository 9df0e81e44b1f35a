"""Release checkpoints by name, end to end against a local HTTP server: download with resume, size and
sha256 checks, safe unpacking, conversion, offline use once cached, and the command line."""

from __future__ import annotations

import io
import json
import re
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

import singularity_vl as sv
from singularity_vl import zoo
from singularity_vl.checkpoint.release import ours_to_release
from singularity_vl.cli import main
from singularity_vl.models.config import tiny_config
from singularity_vl.models.singularity import create_model

VOCAB = 4096  # covers the test captions' word pieces; keeps the fake checkpoints ~1 MB


def _fake_release_state(task: str, temporal: bool, seed: int) -> dict[str, torch.Tensor]:
    """Random weights of a tiny model under the release's state-dict names (see tests/checkpoint)."""
    torch.manual_seed(seed)
    cfg = tiny_config(task, temporal)
    cfg.text.vocab_size = VOCAB
    return ours_to_release(create_model(cfg))


def _tarball(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _pth(state: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save({"model": state, "epoch": 9}, buf)
    return buf.getvalue()


class _Server:
    """Serves `files` on 127.0.0.1 with HTTP Range support; `cut` names files whose next response stops
    half-way (the connection closes after the first half of the announced bytes)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                server.requests.append((name, self.headers.get("Range")))
                if name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if m:
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if name in server.cut:
                    server.cut.discard(name)
                    body = body[: len(body) // 2]
                    self.close_connection = True
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def release_states():
    return {
        "singularity_17m": _fake_release_state("retrieval", False, 1),
        "singularity_temporal_17m": _fake_release_state("retrieval", True, 2),
    }


@pytest.fixture
def server(tmp_path, monkeypatch, release_states):
    srv = _Server()
    srv.files["msrvtt_ret.tar.gz"] = _tarball({f"msrvtt_ret/{k}.pth": _pth(v) for k, v in release_states.items()})
    qa = _pth(_fake_release_state("qa", False, 3))
    srv.files["msrvtt_qa.tar.gz"] = _tarball({"msrvtt_qa/singularity_17m.pth": qa})
    monkeypatch.setenv("SINGULARITY_VL_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("SINGULARITY_VL_BASE_URL", srv.url)
    yield srv
    srv.close()


def test_load_by_name_downloads_converts_and_then_works_offline(server, release_states, tmp_path, monkeypatch):
    model, _, _ = sv.load("msrvtt_ret/singularity_temporal_17m", device="cpu", progress=False)
    assert model.task == "retrieval" and model.config.temporal.enable_encoder
    expected = release_states["singularity_temporal_17m"]
    torch.testing.assert_close(model.network.itm_head.weight, expected["itm_head.weight"])
    assert model.embed_text("a dog").shape == (1, model.config.embed_dim)
    converted = tmp_path / "cache" / "models" / "msrvtt_ret"
    assert {p.name for p in converted.iterdir()} == {"singularity_17m", "singularity_temporal_17m", "manifest.json"}
    assert (converted / "singularity_17m" / "model.safetensors").is_file()
    assert len(server.requests) == 1
    # an archive holding one checkpoint loads by the archive's name
    qa, _, _ = sv.load("msrvtt_qa", device="cpu", progress=False)
    assert qa.task == "qa"
    assert len(server.requests) == 2

    monkeypatch.setenv("SINGULARITY_VL_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    again, _, _ = sv.load("msrvtt_ret/singularity_17m", device="cpu", progress=False)
    torch.testing.assert_close(again.network.itm_head.weight, release_states["singularity_17m"]["itm_head.weight"])
    assert len(server.requests) == 2  # served from the cache
    with pytest.raises(zoo.ZooError, match="holds 2 models; name one: msrvtt_ret/singularity_17m"):
        sv.load("msrvtt_ret", device="cpu")
    rows = {r["name"]: r for r in zoo.list_models()}
    assert rows["msrvtt_ret/singularity_17m"]["status"] == "cached"
    assert rows["didemo_ret"]["status"] == "not downloaded"


def test_offline_and_not_cached_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("SINGULARITY_VL_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("SINGULARITY_VL_BASE_URL", "http://127.0.0.1:9")
    with pytest.raises(zoo.ZooError, match="SINGULARITY_VL_BASE_URL") as err:
        sv.load("didemo_ret/singularity_17m", device="cpu", progress=False)
    assert str(tmp_path / "cache" / "archives" / "didemo_ret.tar.gz") in str(err.value)


def test_interrupted_download_resumes(server, tmp_path):
    server.cut.add("msrvtt_ret.tar.gz")
    with pytest.raises(zoo.ZooError, match="run again to resume"):
        zoo.prepare("msrvtt_ret", progress=False)
    part = tmp_path / "cache" / "archives" / "msrvtt_ret.tar.gz.part"
    total = len(server.files["msrvtt_ret.tar.gz"])
    assert 0 < part.stat().st_size < total
    have = part.stat().st_size
    models = zoo.prepare("msrvtt_ret", progress=False)
    assert sorted(models) == ["msrvtt_ret/singularity_17m", "msrvtt_ret/singularity_temporal_17m"]
    assert server.requests[-1] == ("msrvtt_ret.tar.gz", f"bytes={have}-")
    assert (tmp_path / "cache" / "archives" / "msrvtt_ret.tar.gz").read_bytes() == server.files["msrvtt_ret.tar.gz"]


def test_a_partial_file_longer_than_the_archive_is_reported(server, tmp_path):
    part = tmp_path / "cache" / "archives" / "msrvtt_ret.tar.gz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * (len(server.files["msrvtt_ret.tar.gz"]) + 10))
    with pytest.raises(zoo.ZooError, match="delete this file and run again"):
        zoo.prepare("msrvtt_ret", progress=False)


def test_a_member_escaping_the_cache_is_refused(server, tmp_path):
    payload = _pth(_fake_release_state("retrieval", False, 4))
    server.files["didemo_ret.tar.gz"] = _tarball({"didemo_ret/ok.pth": payload, "../../escaped.pth": payload})
    with pytest.raises(zoo.ZooError, match=r"refused to unpack member '\.\./\.\./escaped\.pth'"):
        zoo.prepare("didemo_ret", progress=False)
    assert not any(tmp_path.rglob("escaped.pth"))
    assert not (tmp_path / "cache" / "models" / "didemo_ret").exists()
    # a link pointing out of the cache is refused too
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        link = tarfile.TarInfo("didemo_ret/link.pth")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    server.files["didemo_ret.tar.gz"] = buf.getvalue()
    (tmp_path / "cache" / "archives" / "didemo_ret.tar.gz").unlink()
    with pytest.raises(zoo.ZooError, match="refused to unpack member 'didemo_ret/link.pth'"):
        zoo.prepare("didemo_ret", progress=False)
    # an absolute member name is unpacked inside the cache, never at its absolute path
    server.files["didemo_ret.tar.gz"] = _tarball({"/abs_escape_check/escaped.pth": payload})
    (tmp_path / "cache" / "archives" / "didemo_ret.tar.gz").unlink()
    models = zoo.prepare("didemo_ret", progress=False)
    assert list(models) == ["didemo_ret/abs_escape_check/escaped"]
    assert models["didemo_ret/abs_escape_check/escaped"].is_relative_to(tmp_path / "cache")
    assert not Path("/abs_escape_check").exists()


def test_recorded_size_and_sha256_are_checked(server, tmp_path, monkeypatch):
    real = zoo.ARCHIVES["msrvtt_ret"]
    size = len(server.files["msrvtt_ret.tar.gz"])
    monkeypatch.setitem(zoo.ARCHIVES, "msrvtt_ret", zoo.Archive(real.name, real.task, "", size=size + 1))
    with pytest.raises(zoo.ZooError, match=f"announces {size} bytes, expected {size + 1}"):
        zoo.prepare("msrvtt_ret", progress=False)
    monkeypatch.setitem(zoo.ARCHIVES, "msrvtt_ret", zoo.Archive(real.name, real.task, "", size, sha256="0" * 64))
    with pytest.raises(zoo.ZooError, match="sha256 .* does not match"):
        zoo.prepare("msrvtt_ret", progress=False)
    assert not list((tmp_path / "cache" / "archives").glob("*.tar.gz*"))  # the bad file is gone


def test_concurrent_loads_download_once(server):
    results: list[dict] = []
    threads = [threading.Thread(target=lambda: results.append(zoo.prepare("msrvtt_ret", progress=False))) for _ in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1]
    assert [name for name, _ in server.requests] == ["msrvtt_ret.tar.gz"]


def test_cli_download_and_models(server, capsys):
    assert main(["download", "msrvtt_ret", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "msrvtt_ret/singularity_temporal_17m" in out
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"msrvtt_ret/singularity_17m\s+retrieval\s+cached", out)
    assert re.search(r"vqa\s+qa\s+not downloaded", out)
    assert main(["info", "msrvtt_ret/singularity_17m"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["task"] == "retrieval"
    assert main(["download", "nope"]) == 2
    assert "not a release archive" in capsys.readouterr().err


def test_fake_checkpoints_use_the_release_names(ref_dir, release_states):
    """The fake archive's key names are the release's (layer numbers aside: the fake is tiny)."""
    official = json.loads((ref_dir / "official_state_dict_keys.json").read_text())
    template = re.compile(r"\.\d+\.")
    for variant, state in (("retrieval", "singularity_17m"), ("retrieval_temporal", "singularity_temporal_17m")):
        names = {template.sub(".N.", k) for k, _, _ in official[variant]}
        assert {template.sub(".N.", k) for k in release_states[state]} == names
